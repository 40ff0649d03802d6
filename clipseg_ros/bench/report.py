"""Ratios between rows and the reports: console table, ``bench.md``, ``latency_vs_size.png``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .catalogue import BACKEND_CHOICES, RAW, REFERENCE_SIZE


def _vs_lraspp(ok: dict, sizes: list[str], models, label: str | None) -> dict:
    """The best CPU/GPU backend row of ``models`` (a key or several: the deployed rows at each
    precision) over LRASPP PyTorch at the first size where both ran."""
    models = (models,) if isinstance(models, str) else tuple(models)
    for size in sizes:
        lr = ok.get(("lraspp-mbv3", "torch", size))
        best_rows = [ok[k] for k in ok if k[0] in models and k[2] == size and k[1] in BACKEND_CHOICES]
        if lr and best_rows:
            best = min(best_rows, key=lambda r: r["median_ms"])
            out = {"size": size, "status": "ok", "default": label or best["label"],
                   "default_backend": best["backend"], "default_precision": best.get("precision"),
                   "default_ms": best["median_ms"],
                   "lraspp_torch_ms": lr["median_ms"], "ratio": round(best["median_ms"] / lr["median_ms"], 4)}
            if size != REFERENCE_SIZE:
                out["note"] = f"{REFERENCE_SIZE} not measured; compared at {size}"
            return out
    return {"size": REFERENCE_SIZE, "status": "not measured",
            "note": f"needs {' or '.join(models)} and lraspp-mbv3 (torch) at a common size"}


def compute_ratios(rows: list[dict], overhead: dict | None, default_spec_label: str) -> dict:
    ok = {(r["model"], r["backend"], r["size"]): r for r in rows if r["status"] == "ok" and r.get("median_ms")}
    twins = []
    for r in rows:
        if r["variant"] != "guided" or r["status"] != "ok":
            continue
        base = ok.get((r["twin"], r["backend"], r["size"]))
        if not base:
            continue
        ratio = r["median_ms"] / base["median_ms"]
        n = min(len(r.get("samples_ms", [])), len(base.get("samples_ms", [])))
        paired = None
        if n:   # interleaved rows: iteration i of both ran back to back
            paired = float(np.median(np.asarray(r["samples_ms"][:n]) / np.asarray(base["samples_ms"][:n])))
        twins.append({"family": r["family"], "backend": r["backend"], "size": r["size"],
                      "guided": r["model"], "baseline": r["twin"],
                      "guided_ms": r["median_ms"], "baseline_ms": base["median_ms"],
                      "ratio": round(ratio, 4), "paired_ratio": round(paired, 4) if paired else None,
                      "overhead_pct": round(100 * (ratio - 1), 2)})
        r["ratio_vs_twin"] = round(ratio, 4)

    # The default model on its best backend (torch / onnxruntime) vs LRASPP PyTorch, at 480x360
    # when measured, else at the first size where both ran (noted): at the frame size ("default")
    # and as the node runs it, at its own input size ("default-native").
    sizes = list(dict.fromkeys([REFERENCE_SIZE] + [r["size"] for r in rows]))
    cmp = _vs_lraspp(ok, sizes, "default", default_spec_label)
    deployed = _vs_lraspp(ok, sizes, ("default-native", "default-native-bf16", "default-native-int8"), None)
    # every row against LRASPP PyTorch at its size (a column in bench.md)
    for r in rows:
        ref = ok.get(("lraspp-mbv3", "torch", r["size"]))
        if r["status"] == "ok" and ref:
            r["ratio_vs_lraspp_torch"] = round(r["median_ms"] / ref["median_ms"], 4)

    node_pct = overhead.get("percent_of_inference") if overhead else None
    return {"twins": twins, "default_vs_lraspp": cmp, "deployed_default_vs_lraspp": deployed,
            "node_overhead_percent": node_pct}


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    head = ["model", "variant", "backend", "size", "median ms", "p90 ms", "fps", "x twin", "x lraspp", "note"]
    lines = [head]
    for r in rows:
        lines.append([r["label"] if r["model"].startswith("default") else r["model"], r["variant"], r["backend"],
                      r["size"], _fmt(r.get("median_ms")), _fmt(r.get("p90_ms")), _fmt(r.get("fps")),
                      _fmt(r.get("ratio_vs_twin"), 3), _fmt(r.get("ratio_vs_lraspp_torch"), 2),
                      r["status"] if r["status"] != "ok" else (r.get("note") or "")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head) - 1)]
    out = []
    for i, line in enumerate(lines):
        cells = [str(c).rjust(widths[j]) if 4 <= j <= 8 else str(c).ljust(widths[j])
                 for j, c in enumerate(line[:-1])]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_overhead(ov: dict) -> str:
    if not ov:
        return ""
    lines = [f"node per-frame work besides inference at {ov['size']}, isolated (median / p90 ms):"]
    for st in ov["steps"]:
        lines.append(f"  {st['step']:<58} {_fmt(st['median_ms'], 3):>8} {_fmt(st['p90_ms'], 3):>8}")
    for enc, v in ov["isolated_totals_ms"].items():
        pct = ", ".join(f"{p[enc]:.1f}% of {b}" for b, p in ov["isolated_percent_of_inference"].items())
        lines.append(f"  isolated total, {enc:<10} {v:8.3f} ms ({pct or 'no inference measured'})")
    lines.append(f"in the pipeline (rgb8 input; {ov['included_in_totals']}):")
    for backend, pl in ov["pipeline"].items():
        st = pl["steps"]
        parts = ", ".join(f"{n} {m['median_ms']:.2f}" for n, m in st.items() if n != "inference")
        lines.append(f"  {backend}: inference {st['inference']['median_ms']:.2f} ms; overhead "
                     f"{pl['overhead_ms']:.2f} ms = {pl['percent_of_inference']:.1f}% of inference")
        lines.append(f"    ({parts})")
    for backend, inf in ov["inference"].items():
        if inf.get("status") != "ok":
            lines.append(f"  {backend}: {inf.get('note')}")
    for n in ov["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def write_markdown(path: Path, result: dict) -> None:
    m, s = result["machine"], result["settings"]
    L = ["# clipseg-bench results", ""]
    L.append(f"- date: {m['date']}; CPU: {m['cpu_model']} ({m['logical_cores']} logical cores, "
             f"{m['usable_cores']} usable); GPU: {m.get('gpu') or 'none'}")
    L.append(f"- torch {m['versions'].get('torch')}, onnxruntime {m['versions'].get('onnxruntime')}, "
             f"numpy {m['versions'].get('numpy')}, opencv {m['versions'].get('opencv')}; threads {s['threads']}; "
             f"load average at start {m.get('loadavg_start')}, end {m.get('loadavg_end')}")
    L.append(f"- device {s['device']} ({s['precision']}), batch 1, warm-up {s['warmup']}, "
             f"iterations {s['iters']}, interleaved {s['interleave']} (blocks of {s['block']}, "
             f"settle {s['settle_ms']:.0f} ms)")
    dm = result["default_model"]
    L.append(f"- default model: {dm['label']} — `{dm['path']}`")
    L += ["", "## Latency", "",
          "| model | variant | backend | size | median ms | p90 ms | FPS | × twin baseline | × LRASPP torch | note |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        note = r.get("note") or ""
        if r["status"] != "ok":
            note = f"{r['status']}: {note}"
        L.append(f"| {r['label'] if r['model'] == 'default' else r['model']} | {r['variant']} | {r['backend']} | "
                 f"{r['size']} | {_fmt(r.get('median_ms'))} | {_fmt(r.get('p90_ms'))} | {_fmt(r.get('fps'))} | "
                 f"{_fmt(r.get('ratio_vs_twin'), 3)} | {_fmt(r.get('ratio_vs_lraspp_torch'), 2)} | "
                 f"{note.replace('|', '/')} |")
    ratios = result["ratios"]
    L += ["", "## Guided / baseline twins", "",
          "| family | backend | size | guided ms | baseline ms | ratio | paired ratio |",
          "|---|---|---|---:|---:|---:|---:|"]
    for t in ratios["twins"]:
        L.append(f"| {t['family']} | {t['backend']} | {t['size']} | {_fmt(t['guided_ms'])} | "
                 f"{_fmt(t['baseline_ms'])} | {t['ratio']:.3f} | {_fmt(t['paired_ratio'], 3)} |")
    c = ratios["default_vs_lraspp"]
    L += ["", f"## Default model vs LRASPP-MobileNetV3 (PyTorch) at {c['size']}", ""]
    for what, c in (("at the frame size", c), ("as deployed (its own input size, frame resized)",
                                              ratios.get("deployed_default_vs_lraspp") or {"status": "-"})):
        if c["status"] == "ok":
            L.append(f"- {what}: {c['default']} on {c['default_backend']} ({c.get('default_precision')}): "
                 f"{c['default_ms']:.1f} ms; "
                     f"LRASPP PyTorch: {c['lraspp_torch_ms']:.1f} ms; ratio **{c['ratio']:.3f}**"
                     + (f" ({c['note']})" if c.get("note") else ""))
        else:
            L.append(f"- {what}: not measured ({c.get('note')})")
    ov = result.get("overhead")
    L += ["", "## Node per-frame overhead (besides inference)", ""]
    if ov:
        L += [f"Frame {ov['size']}, default model input {ov['model_input']} (height, width).", "",
              "| step | median ms | p90 ms |", "|---|---:|---:|"]
        for st in ov["steps"]:
            L.append(f"| {st['step']} | {_fmt(st['median_ms'], 3)} | {_fmt(st['p90_ms'], 3)} |")
        for b, inf in ov["inference"].items():
            if inf.get("status") == "ok":
                L.append(f"| *inference ({b})* | {_fmt(inf['median_ms'], 3)} | {_fmt(inf['p90_ms'], 3)} |")
        pct = ov["isolated_percent_of_inference"]
        L += ["", f"Isolated totals ({ov['included_in_totals']}):", "",
              "| input | overhead ms |" + "".join(f" % of {b} inference |" for b in pct),
              "|---|---:|" + "---:|" * len(pct)]
        for k, v in ov["isolated_totals_ms"].items():
            L.append(f"| {k} | {v:.3f} |" + "".join(f" {p[k]:.1f}% |" for p in pct.values()))
        if ov["pipeline"]:
            names = [n for n in next(iter(ov["pipeline"].values()))["steps"]]
            L += ["", "In the pipeline (rgb8 input, steps run frame after frame as in the node; median ms):", "",
                  "| backend | " + " | ".join(names) + " | overhead | % of inference |",
                  "|---|" + "---:|" * (len(names) + 2)]
            for b, pl in ov["pipeline"].items():
                L.append(f"| {b} | " + " | ".join(_fmt(pl["steps"][n]["median_ms"], 3) for n in names)
                         + f" | {pl['overhead_ms']:.3f} | **{pl['percent_of_inference']:.1f}%** |")
        for n in ov["notes"]:
            L.append(f"\n_note: {n}_")
    else:
        L.append("not measured (--no-overhead)")
    mem = result["memory"]
    L += ["", "## Node process memory", ""]
    if mem.get("status") == "ok":
        L.append(f"peak RSS (VmHWM) **{mem['peak_rss_mb']} MB**, RSS at end {mem['rss_end_mb']} MB; "
                 f"{mem['frames']} frames of {mem['frame']} in {result['settings']['node_seconds']} s "
                 f"({mem['fps']} FPS closed loop, round trip median {_fmt(mem['roundtrip']['median_ms'])} ms); "
                 f"startup {mem['startup_s']} s" + (f"; the node ran {mem['configured']}" if mem.get("configured")
                                                     else ""))
    else:
        L.append(f"{mem.get('status')}: {mem.get('note')}")
    L.append("")
    path.write_text("\n".join(L))


def write_plot(path: Path, rows: list[dict]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    series: dict[tuple, list] = {}
    ticks: dict[int, str] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("median_ms"):
            name = r["label"] if r["model"].startswith("default") else r["model"]
            series.setdefault((name, r["backend"]), []).append((r["pixels"], r["median_ms"]))
            ticks[r["pixels"]] = r["size"]
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    models = sorted({k[0] for k in series})
    cmap = plt.get_cmap("tab10")
    styles = {"torch": "-", "onnxruntime": "--", RAW: ":"}
    markers = {"torch": "o", "onnxruntime": "s", RAW: "^"}
    for (model, backend), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=styles.get(backend, "-"),
                marker=markers.get(backend, "o"), color=cmap(models.index(model) % 10),
                label=f"{model} / {backend}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{ticks[k]}\n{k / 1e6:.2f} MP" for k in sorted(ticks)], fontsize=8)
    ax.set_xlabel("input pixels (width x height)")
    ax.set_ylabel("median latency, ms (log)")
    ax.set_title("clipseg-bench: median latency vs input size (batch 1)")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
