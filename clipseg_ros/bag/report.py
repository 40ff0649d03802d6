"""Results of a bag evaluation: ``results.json``, ``results.md`` and PNG plots.

Files written into the results folder:

* ``results.json`` – every figure plus the exact configuration (arguments, model provenance,
  bag, machine: CPU, threads, library versions);
* ``results.md`` – the same as Markdown tables (also printed to the terminal);
* ``per_class_iou.png``, ``confusion.png`` – when the bag has ground truth;
* ``latency_hist.png``, ``latency_timeline.png`` – per-frame latency;
* ``contact_sheet.png`` – input / prediction overlay / ground truth for up to ~8 frames.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_files import atomic_write_text
from ..machine import portable_paths

__all__ = ["SampleCollector", "model_info", "write_results",
           "markdown", "sample_positions"]


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------

def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_info(path, meta, *, backend: str, device: str, precision: str, threads: int | None,
               description: str, input_size=None) -> dict:
    """Model provenance (file, sha256, architecture, classes, training provenance) and how it ran.
    ``network_input_size`` is the [height, width] the network saw: ``input_size`` when one was asked
    for, else the file's own."""
    seen = list(input_size) if input_size else meta.input_size
    return {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "arch": meta.arch,
            "class_names": list(meta.class_names), "num_classes": len(meta.class_names),
            "input_size": meta.input_size, "network_input_size": seen, "provenance": meta.provenance,
            "backend": backend, "device": device, "precision": precision, "threads": threads,
            "description": description}


def trained_splits(provenance: dict | None) -> list[str]:
    """The splits a model file's provenance says it trained on (``"train+val"`` -> train, val)."""
    return [x for x in str((provenance or {}).get("train_split") or "").split("+") if x]


def training_overlap(model: dict, bag: dict) -> str | None:
    """A warning when the bag's frames come from a split the model was trained on (e.g. the
    shipped model, trained on CamVid train+val, replayed on the CamVid val sample bag): its mIoU
    then measures memorisation, not accuracy.  From the model's provenance (dataset, train split)
    and the bag's ``clipseg.source`` record (``<dataset>:<split> ...``, written by ``make-bag``)."""
    prov = (model or {}).get("provenance") or {}
    source = str((bag or {}).get("source") or "")
    layout = source.split(" ", 1)[0]
    dataset, sep, split = layout.partition(":")
    if not sep or not prov.get("dataset") or dataset != prov.get("dataset"):
        return None
    trained = trained_splits(prov)
    if split not in trained:
        return None
    return (f"the model was trained on {dataset} {'+'.join(trained)} and this bag's frames come from "
            f"{dataset} {split}: its mIoU here is not an estimate of accuracy on new data (see the "
            "model card for the honest estimate)")


def sample_positions(total: int, k: int = 8) -> set[int]:
    """Up to ``k`` evenly spread positions among ``total`` frames."""
    if total <= 0 or k <= 0:
        return set()
    return {int(round(x)) for x in np.linspace(0, total - 1, min(k, total))}


class SampleCollector:
    """Keeps input / overlay / ground-truth tiles for the contact sheet."""

    def __init__(self, palette, positions: set[int], alpha: float = 0.5):
        from ..visualize import Colorizer

        self.colorizer = Colorizer(np.asarray(palette, np.uint8))
        self.positions = set(positions)
        self.alpha = alpha
        self.rows: list[tuple[int, list]] = []

    def wants(self, position: int) -> bool:
        return position in self.positions

    def add(self, position: int, frame, labels: np.ndarray) -> None:
        from ..visualize import overlay

        rgb = np.array(frame.rgb, copy=True)
        color = self.colorizer.colorize(labels)
        row = [rgb, overlay(rgb, color, self.alpha, labels=labels)]
        row.append(self.colorizer.colorize(frame.gt) if frame.gt is not None else None)
        self.rows.append((position, row))

    def sheet(self):
        from ..visualize import contact_sheet

        if not self.rows:
            return None
        rows = [r for _, r in sorted(self.rows, key=lambda x: x[0])]
        return contact_sheet(rows, titles=["input", "prediction overlay", "ground truth"], max_width=1200)


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------

def _jsonable(obj: Any):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v, digits=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def _wxh_text(hw) -> str:
    return f"{hw[1]}x{hw[0]}" if hw else "each frame's own size"


def markdown(results: dict) -> str:
    """The Markdown report (summary table, latency table, per-class table)."""
    mode = results["mode"]
    model = results.get("model", {})
    bag = results.get("bag", {})
    frames = results.get("frames", {})
    lines = [f"# clipseg-bag-eval {mode}", ""]
    rows = [("bag", f"`{bag.get('path')}` ({bag.get('storage')})"),
            ("image topic", f"`{bag.get('image_topic')}` ({bag.get('image_type', '').rsplit('/', 1)[-1]})"),
            ("label topic", f"`{bag.get('label_topic')}`" if bag.get("label_topic") else "none"),
            ("model", f"`{model.get('path')}` ({model.get('num_classes')} classes)"),
            ("backend", model.get("description")),
            ("network input (W x H)", _wxh_text(model.get("network_input_size"))),
            ("frames", frames.get("total"))]
    if mode == "live":
        live = results.get("live", {})
        rows += [("replay rate", live.get("rate")), ("sent", frames.get("sent")),
                 ("processed", frames.get("processed")), ("dropped", frames.get("dropped")),
                 ("rejected", frames.get("rejected")),
                 ("achieved rate (Hz)", _fmt(results.get("rate", {}).get("achieved_hz"))),
                 ("input rate (Hz)", _fmt(results.get("rate", {}).get("sent_hz")))]
        for st in (live.get("diagnostics_final") or {}).values():
            v = st.get("values", {})
            if "inference latency median (ms)" in v:
                rows.append(("node inference median / p95 (ms)",
                             f"{v['inference latency median (ms)']} / {v.get('inference latency p95 (ms)')}"))
                break
        trend = results.get("latency_trend")
        if trend:
            rows += [("end-to-end p95, first / last quarter (ms)",
                      f"{_fmt(trend['first_quarter_p95_ms'])} / {_fmt(trend['last_quarter_p95_ms'])}"),
                     ("end-to-end latency slope (ms/min)",
                      f"{_fmt(trend['slope_ms_per_min'])} over {_fmt(trend['duration_s'], 0)} s")]
    else:
        rows += [("processed", frames.get("processed")),
                 ("achieved rate (Hz)", _fmt(results.get("rate", {}).get("achieved_hz")))]
    rows.append(("frames with ground truth", frames.get("with_gt")))
    m = results.get("metrics")
    if m:
        # ConfusionMatrix reports the summary numbers in percent already
        rows += [("mIoU (%)", _fmt(m.get("miou"))), ("pixel accuracy (%)", _fmt(m.get("pixel_accuracy")))]
        if results.get("trained_on_these_frames"):
            rows.append(("note", "**" + results["trained_on_these_frames"] + "**"))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    lat = results.get("latency_ms") or {}
    if lat.get("count"):
        what = ("end-to-end (labels received − input stamp)" if mode == "live"
                else "per-frame inference (segmenter call)")
        lines += [f"## Latency, {what}, ms", "",
                  "| count | mean | median | p90 | p99 | min | max |", "|---|---|---|---|---|---|---|",
                  "| " + " | ".join([str(lat["count"])] + [
                      _fmt(lat[k + "_ms"]) for k in ("mean", "median", "p90", "p99", "min", "max")]) + " |",
                  ""]
        br = results.get("latency_breakdown_ms") or {}
        if br:
            lines += ["| stage | median | p90 | p99 |", "|---|---|---|---|"]
            lines += [f"| {k} | {_fmt(v['median_ms'])} | {_fmt(v['p90_ms'])} | {_fmt(v['p99_ms'])} |"
                      for k, v in br.items() if v.get("count")]
            lines.append("")
    table = results.get("metrics_table")
    if table:
        lines += ["## Per-class IoU", "", table, ""]
    return "\n".join(lines)


def _plot_latency(lat_s, positions, out_dir: Path, title: str) -> list[str]:
    # a bare Figure renders with the Agg canvas and leaves pyplot's global state alone
    from matplotlib.figure import Figure

    ms = np.asarray(lat_s, np.float64) * 1000.0
    if ms.size == 0:
        return []
    written = []
    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(ms, bins=min(50, max(5, ms.size // 2)), color="#4477aa")
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        v = np.percentile(ms, q)
        ax.axvline(v, color="k", linestyle=style, linewidth=1, label=f"p{q} {v:.1f} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_hist.png")
    written.append("latency_hist.png")

    fig = Figure(figsize=(7, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(positions, ms, ".-", markersize=3, linewidth=0.8, color="#4477aa")
    ax.axhline(np.median(ms), color="k", linewidth=1, label="median")
    ax.set_xlabel("frame")
    ax.set_ylabel("latency (ms)")
    ax.set_title(title + " over time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "latency_timeline.png")
    written.append("latency_timeline.png")
    return written


def write_results(out_dir: Path, results: dict, *, cm=None, class_names=None, latencies_s=(),
                  latency_frames=(), samples: SampleCollector | None = None, quiet: bool = False) -> dict:
    """Write JSON, Markdown and PNGs into ``out_dir``; returns ``results`` (with the file list)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    if cm is not None and results.get("frames", {}).get("with_gt"):
        from ..metrics import format_table, plot_confusion, plot_per_class_iou

        computed = cm.compute()
        results["metrics"] = cm.to_json_dict(class_names)
        results["metrics_table"] = format_table(computed, class_names)
        plot_per_class_iou(computed, class_names, out_dir / "per_class_iou.png")
        plot_confusion(cm.counts, class_names, out_dir / "confusion.png")
        files += ["per_class_iou.png", "confusion.png"]
    else:
        results.setdefault("metrics", None)
    if results.get("metrics"):
        results["trained_on_these_frames"] = training_overlap(results.get("model"), results.get("bag"))
    title = "end-to-end latency" if results.get("mode") == "live" else "inference latency"
    files += _plot_latency(list(latencies_s), list(latency_frames), out_dir, title)
    if samples is not None:
        sheet = samples.sheet()
        if sheet is not None:
            from ..visualize import save_png

            save_png(out_dir / "contact_sheet.png", sheet)
            files.append("contact_sheet.png")
    files += ["results.json", "results.md"]
    results["files"] = files
    results.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    shown = portable_paths(results)         # no directories of this machine in the files
    md = markdown(shown)
    (out_dir / "results.md").write_text(md + "\n")
    atomic_write_text(out_dir / "results.json", json.dumps(_jsonable(shown), indent=2, allow_nan=False))
    if not quiet:
        print(md)
        print(f"\nresults in {out_dir}/")
    return results
