"""The decisive CamVid experiment: does CLIP guidance beat its baseline twin, and is it CLIP?

    python -m clipseg_training.decisive run    [--rows ...] [--seeds 0 1 2 3 4] [--root runs/camvid-decisive] [--jobs N]
    python -m clipseg_training.decisive report [--root runs/camvid-decisive] [--out docs/results/decisive]
    python -m clipseg_training.decisive archive --root runs/camvid-decisive --to docs/results/decisive/runs

Rows (configs ``camvid-mobilenetv2f-*-360x480.yaml``: the faithful MobileNetV2 variant, full
360x480 frames, 50 epochs): the baseline twin, stage 1 against CLIP RN50 class embeddings, and a
non-CLIP control (stage 1 against fixed random unit vectors).  ``run`` goes seed by seed, so paired
seeds complete together; a finished run is skipped, an interrupted one resumes.

Scoring: each run is scored by the **mean of its last two validation evaluations** (the reporting
split is not used to pick a checkpoint); the best evaluation is reported beside it.  ``report``
writes ``results.json`` (per row: n, epochs, crop size, iterations, batch size, the scoring rule,
per-seed scores, per-class IoU of the final weights where recorded), ``results.md`` (rows,
paired differences with a 95 % t interval, the authors'
logged numbers) and ``guided_minus_baseline.png`` (paired differences at every evaluation, as in
the authors' logs).  ``archive`` copies each finished run's record (``summary.json``, ``val.csv``,
``log.csv``, ``config.yaml``; never checkpoints) into the repository's run folder, so the matrix
accumulates across working sessions, and for runs whose summary has no per-class IoU (trained
before it was recorded) writes ``eval_last/metrics.json`` with ``clipseg-eval`` on ``last.pt``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipseg_ros.atomic_files import atomic_write_text

from .runner import run_matrix

CAMVID_TRAIN_IMAGES = 367
SCORING = "mean of the last two validation evaluations (val mIoU, %)"


@dataclass(frozen=True)
class Row:
    name: str
    config: str
    stage: str
    label: str
    max_seeds: int = 99        # the control runs on fewer seeds


ROWS = (
    Row("baseline", "camvid-mobilenetv2f-baseline-360x480.yaml", "baseline",
        "Baseline twin (widened MobileNetV2, no guidance)"),
    Row("clip_rn50", "camvid-mobilenetv2f-stage1-clip_rn50-360x480.yaml", "stage1",
        "Stage 1, CLIP RN50 class embeddings (precomputed)"),
    Row("random", "camvid-mobilenetv2f-stage1-random-360x480.yaml", "stage1",
        "Stage 1, fixed random unit vectors (non-CLIP control)", max_seeds=3),
)
REFERENCE = "baseline"
#: guided row − control row, paired by seed: what a gain over the baseline owes to CLIP itself
#: rather than to the auxiliary textual loss (same loss, same extra channels, random targets)
CONTROL_CONTRASTS = (("clip_rn50", "random"),)

#: The authors' own CamVid logs (github ChiaYi-LIN/mmsegmentation at d89be68b; val mIoU at each of
#: the 10 evaluations, every 1k iterations x 16 images): work_dirs/stdc1_1x16_720x960_10k_camvid/
#: 20230503_214758.log.json, work_dirs/entextnet_stdc1_1x16_720x960_10k_camvid/20230503_234505.log.json,
#: work_dirs/tuneprompt_1x16_720x960_10k_camvid_contextlength16_fixbackbone/20230504_121134.log.json
AUTHORS = {
    "iters": [1000 * i for i in range(1, 11)], "batch_size": 16, "crop_size": [720, 960], "n": 1,
    "baseline": [70.1, 71.79, 73.05, 72.84, 74.64, 73.41, 73.64, 75.28, 75.06, 74.98],
    "stage1": [66.2, 72.47, 72.95, 73.0, 74.9, 75.6, 75.82, 76.29, 76.6, 75.73],
    "stage2": [74.2, 76.41, 75.17, 74.54, 75.83, 75.81, 75.42, 76.47, 78.02, 76.56],
}

# two-sided 95 % Student t quantiles, df = 1..30
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042]


def t95(df: int) -> float:
    return _T95[df - 1] if 1 <= df <= len(_T95) else 1.96


def run_dir(root: Path, row: Row, seed: int) -> Path:
    return root / row.name / f"seed{seed}"


def command(row: Row, seed: int, root: Path, extra: list[str]) -> list[str]:
    return ["clipseg-train", str(_config_path(row)), "--stage", row.stage, "--seed",
            str(seed), "--out", str(run_dir(root, row, seed)), *extra]


def _config_path(row: Row) -> Path:
    """``training/configs/<file>`` relative to the working directory when that is the repository
    root (the command reads as users type it), else the installed package's copy."""
    rel = Path("training/configs") / row.config
    return rel if rel.is_file() else Path(__file__).resolve().parent / "configs" / row.config


def finished(row: Row, seed: int, root: Path) -> bool:
    return (run_dir(root, row, seed) / row.stage / "summary.json").is_file()


def run(rows, seeds, root: Path, extra: list[str], jobs: int = 1) -> int:
    """Every (row, seed) run not yet finished; ``jobs`` at once (each one's output then goes to
    ``<run>/train.log``)."""
    return run_matrix(rows, seeds, tag="decisive",
                      command=lambda row, seed: command(row, seed, root, extra),
                      finished=lambda row, seed: finished(row, seed, root),
                      applies=lambda row, seed: seed < row.max_seeds,
                      jobs=jobs, log_path=lambda row, seed: run_dir(root, row, seed) / "train.log")


def history(stage_dir: Path) -> list[tuple[int, float]]:
    """(iteration, val mIoU) of every evaluation so far: summary.json when finished, else val.csv."""
    summary = stage_dir / "summary.json"
    if summary.is_file():
        return [(int(h["iteration"]), float(h["miou"])) for h in json.loads(summary.read_text())["history"]]
    out: dict[int, float] = {}       # by iteration: an evaluation repeated after a resume counts once
    csv = stage_dir / "val.csv"
    if csv.is_file():
        for line in csv.read_text().splitlines():
            parts = line.split(",")
            if len(parts) >= 2:
                try:
                    out[int(parts[0])] = float(parts[1])
                except ValueError:
                    continue
    return sorted(out.items())


def final_class_iou(stage_dir: Path) -> tuple[list[str], list[float]] | None:
    """Per-class val IoU (%) of the run's final weights: the last evaluation's in ``summary.json``
    (runs trained after it recorded per-class IoU), else ``eval_last/metrics.json`` written by
    ``clipseg-eval --checkpoint <stage>/last.pt --out <stage>/eval_last``."""
    summary = stage_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        if s.get("history") and "iou" in s["history"][-1] and s.get("class_names"):
            return list(s["class_names"]), [float(x) for x in s["history"][-1]["iou"]]
    metrics = stage_dir / "eval_last" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())["metrics"]
        return list(m["class_names"]), [100 * float(x) for x in m["iou"]]
    return None


def score(hist: list[tuple[int, float]]) -> float | None:
    if len(hist) < 2:
        return None
    return float(np.mean([m for _, m in hist[-2:]]))


def collect(rows, root: Path) -> dict:
    from .config import load_config

    data = {}
    for row in rows:
        cfg_path = Path(__file__).resolve().parent / "configs" / row.config
        ran = sorted((root / row.name).glob(f"seed*/{row.stage}/config.yaml"))
        cfg = load_config(ran[0] if ran else cfg_path)       # what the runs actually used
        iters = int(cfg["stage1"]["iters"])
        bs = int(cfg["data"]["batch_size"])
        seeds, partial = {}, {}
        base = root / row.name
        for d in sorted(base.glob("seed*")) if base.is_dir() else []:
            seed = int(d.name[4:])
            stage_dir = d / row.stage
            hist = history(stage_dir)
            summary = stage_dir / "summary.json"
            rec = {"history": hist, "last2": score(hist), "best": max((m for _, m in hist), default=None),
                   "class_iou": final_class_iou(stage_dir), "provenance": provenance(stage_dir),
                   "train_seconds": (json.loads(summary.read_text()).get("train_seconds")
                                     if summary.is_file() else None)}
            (seeds if finished(row, seed, root) else partial)[seed] = rec
        last2 = [v["last2"] for v in seeds.values()]
        data[row.name] = {
            "label": row.label, "config": row.config, "stage": row.stage, "n": len(seeds),
            "iters": iters, "batch_size": bs, "crop_size": list(cfg["data"]["crop_size"]),
            "epochs": round(iters * bs / CAMVID_TRAIN_IMAGES, 1), "scoring": SCORING,
            "per_seed": {str(s): {"last2": round(v["last2"], 3), "best": round(v["best"], 3),
                                  **({"provenance": v["provenance"]} if v["provenance"] else {}),
                                  **({"train_seconds": round(v["train_seconds"], 1)}
                                     if v["train_seconds"] is not None else {})}
                         for s, v in sorted(seeds.items())},
            "mean": round(float(np.mean(last2)), 3) if last2 else None,
            "std": round(float(np.std(last2, ddof=1)), 3) if len(last2) > 1 else None,
            "best_mean": round(float(np.mean([v["best"] for v in seeds.values()])), 3) if seeds else None,
            "curves": {str(s): v["history"] for s, v in sorted(seeds.items())},
            "class_iou": _class_iou_summary(seeds),
            "in_progress": {str(s): {"evaluations": len(v["history"]),
                                     "last": v["history"][-1] if v["history"] else None}
                            for s, v in sorted(partial.items())},
        }
    return data


PROVENANCE_KEYS = ("commit", "precision", "threads", "device", "machine")


def provenance(stage_dir: Path) -> dict:
    """What produced a finished run: ``provenance.json`` (written by ``archive --provenance``)
    over the trainer's own ``runtime`` record in ``summary.json`` (runs from later commits)."""
    out = {}
    summary = stage_dir / "summary.json"
    if summary.is_file():
        runtime = json.loads(summary.read_text()).get("runtime") or {}
        out.update({k: runtime[k] for k in PROVENANCE_KEYS if runtime.get(k) is not None})
    extra = stage_dir / "provenance.json"
    if extra.is_file():
        out.update(json.loads(extra.read_text()))
    return out


def _class_iou_summary(seeds: dict) -> dict | None:
    """Per-class IoU of the finished runs' final weights: the class names, the per-seed values and
    their mean (only the seeds that have them)."""
    have = {s: v["class_iou"] for s, v in sorted(seeds.items()) if v.get("class_iou")}
    if not have:
        return None
    names = next(iter(have.values()))[0]
    per = {str(s): [round(x, 2) for x in ious] for s, (_, ious) in have.items()}
    return {"class_names": names, "per_seed": per,
            "mean": [round(float(np.mean([p[i] for p in per.values()])), 2) for i in range(len(names))]}


def paired(data: dict, name: str, ref: str = REFERENCE) -> dict | None:
    a, b = data.get(name), data.get(ref)
    if not a or not b:
        return None
    common = sorted(set(a["per_seed"]) & set(b["per_seed"]), key=int)
    if not common:
        return None
    d = np.array([a["per_seed"][s]["last2"] - b["per_seed"][s]["last2"] for s in common])
    out = {"seeds": [int(s) for s in common], "differences": [round(float(x), 3) for x in d],
           "mean": round(float(d.mean()), 3)}
    if a.get("curves") and b.get("curves"):      # guided − baseline at every shared evaluation, per seed
        by_eval = {}
        for s in common:
            ref_curve = {int(i): m for i, m in b["curves"].get(s, [])}
            by_eval[s] = [[int(i), round(m - ref_curve[int(i)], 3)] for i, m in a["curves"].get(s, [])
                          if int(i) in ref_curve]
        out["at_evaluations"] = by_eval
    if d.size > 1:
        half = t95(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
        m = float(d.mean())
        out["ci95"] = [round(m - half, 3), round(m + half, 3)]
    return out


#: where the project's results index keeps the decisive rows (beside the 13-epoch history rows)
INDEX_PREFIX = "decisive/"
INDEX_KEYS = ("label", "config", "stage", "n", "epochs", "crop_size", "iters", "batch_size", "scoring",
              "per_seed", "mean", "std", "best_mean")


def update_index(index: Path, result: dict, source: Path) -> None:
    """Write the decisive rows into the project's results index (``docs/results/results.json``),
    each as ``decisive/<row>`` with n, epochs, crop size, iterations, batch size, the scoring rule
    and the per-seed scores; the other rows of the index are kept as they are."""
    try:
        data = json.loads(index.read_text()) if index.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ValueError(f"--index {index}: not a readable results.json ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"--index {index}: expected a JSON object of rows, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if not k.startswith(INDEX_PREFIX)}
    for name, row in result["rows"].items():
        data[INDEX_PREFIX + name] = {**{k: row[k] for k in INDEX_KEYS if k in row},
                                     "report": str(source),
                                     **({"commit": result["commit"]} if result.get("commit") else {})}
    index.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index, json.dumps(data, indent=2))


def report(rows, root: Path, out_dir: Path, commit: str | None = None) -> dict:
    data = collect(rows, root)
    result = {"root": str(root), "commit": commit, "scoring": SCORING, "rows": data,
              "paired": {r.name: paired(data, r.name) for r in rows if r.name != REFERENCE},
              "versus_control": {f"{a}-{b}": paired(data, a, b) for a, b in CONTROL_CONTRASTS
                                 if a in data and b in data},
              "authors": AUTHORS}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(result, indent=2))
    (out_dir / "results.md").write_text(format_markdown(result))
    _plot(data, result["paired"], out_dir / "guided_minus_baseline.png")
    return result


def format_markdown(result: dict) -> str:
    rows = result["rows"]
    lines = [f"Scoring: {result['scoring']}; best evaluation beside it (selected on val: optimistic).", "",
             "| row | n | epochs | crop | iterations x batch | val mIoU (last 2) | best evaluation "
             "| per seed (last 2) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        mean = "—" if r["mean"] is None else f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "")
        best = "—" if r["best_mean"] is None else f"{r['best_mean']:.2f}"
        per = ", ".join(f"{s}: {v['last2']:.2f}" for s, v in r["per_seed"].items()) or "—"
        prog = "".join(f"; seed {s} running ({v['evaluations']} evaluations)" for s, v in r["in_progress"].items())
        lines.append(f"| {r['label']} | {r['n']} | {r['epochs']} | {r['crop_size'][0]}x{r['crop_size'][1]} | "
                     f"{r['iters']} x {r['batch_size']} | {mean} | {best} | {per}{prog} |")
    lines += ["", "| paired difference (− baseline) | seeds | per seed | mean | 95 % interval "
                  "| per seed at the first / last single evaluation |",
              "|---|---|---|---|---|---|"]
    for name, p in result["paired"].items():
        if p is None:
            lines.append(f"| {rows[name]['label']} | 0 | — | — | — | — |")
            continue
        ci = f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]" if "ci95" in p else "— (one seed)"
        ends = ", ".join(f"{s}: {d[0][1]:+.2f} / {d[-1][1]:+.2f}"
                         for s, d in p.get("at_evaluations", {}).items() if d) or "—"
        lines.append(f"| {rows[name]['label']} | {len(p['seeds'])} | "
                     f"{', '.join(f'{x:+.2f}' for x in p['differences'])} | {p['mean']:+.2f} | {ci} | {ends} |")
    contrasts = result.get("versus_control") or {}
    if contrasts:
        lines += ["", "| guided − non-CLIP control, paired by seed | seeds | per seed (last 2) | mean "
                      "| 95 % interval |", "|---|---|---|---|---|"]
        for key, p in contrasts.items():
            a, b = key.split("-", 1)
            label = f"{rows[a]['label']} − {rows[b]['label']}"
            if p is None:
                lines.append(f"| {label} | 0 | — | — | — |")
                continue
            ci = f"[{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}]" if "ci95" in p else "— (one seed)"
            lines.append(f"| {label} | {len(p['seeds'])} | "
                         + ", ".join(f"{s}: {x:+.2f}" for s, x in zip(p["seeds"], p["differences"]))
                         + f" | {p['mean']:+.2f} | {ci} |")
    with_iou = {n: r["class_iou"] for n, r in rows.items() if r.get("class_iou")}
    if with_iou:
        names = next(iter(with_iou.values()))["class_names"]
        lines += ["", "Per-class val IoU (%) of the final weights (the last evaluation), mean over the finished "
                      "seeds that have it:", "",
                  "| row | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for n, c in with_iou.items():
            lines.append(f"| {rows[n]['label']} | {len(c['per_seed'])} | "
                         + " | ".join(f"{x:.1f}" for x in c["mean"]) + " |")
    prov = [(r, seed, v["provenance"]) for r in rows.values() for seed, v in r["per_seed"].items()
            if v.get("provenance")]
    if prov:
        lines += ["", "What produced each run:", "",
                  "| row | seed | commit | precision | threads | machine "
                  "| training time (`train_seconds`, evaluations included) |",
                  "|---|---|---|---|---|---|---|"]
        for r, seed, p in prov:
            secs = r["per_seed"][seed].get("train_seconds")
            took = "—" if secs is None else f"{secs:.0f} s ({secs / r['iters']:.2f} s/iteration)"
            lines.append(f"| {r['label']} | {seed} | {p.get('commit', '—')} | {p.get('precision', '—')} | "
                         f"{p.get('threads', '—')} | {p.get('machine', '—')} | {took} |")
    a = result["authors"]
    diffs = [s - b for s, b in zip(a["stage1"], a["baseline"])]
    lines += ["", f"The authors' logs (STDC1, one seed, {a['crop_size'][0]}x{a['crop_size'][1]} crops, "
                  f"batch {a['batch_size']}, evaluations every 1k iterations): baseline last {a['baseline'][-1]:.2f} "
                  f"(best {max(a['baseline']):.2f}, last two {np.mean(a['baseline'][-2:]):.2f}); stage 1 last "
                  f"{a['stage1'][-1]:.2f} (best {max(a['stage1']):.2f}, last two {np.mean(a['stage1'][-2:]):.2f}); "
                  f"stage 1 − baseline at each evaluation: {', '.join(f'{d:+.2f}' for d in diffs)}."]
    if result.get("commit"):
        lines += ["", f"Runs trained from commit `{result['commit']}`."]
    return "\n".join(lines) + "\n"


def _plot(data: dict, pairs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = {"clip_rn50": "tab:blue", "random": "tab:orange"}
    for name, r in data.items():
        if name == REFERENCE:
            continue
        diffs = []
        for pts in ((pairs.get(name) or {}).get("at_evaluations") or {}).values():
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color=colours.get(name, "gray"), alpha=0.3, lw=1)
                diffs.append(dict(pts))
        if diffs:
            xs = sorted(set.intersection(*[set(d) for d in diffs]))
            ax.plot(xs, [np.mean([d[x] for d in diffs]) for x in xs], color=colours.get(name, "gray"), lw=2.5,
                    label=f"{r['label']} − baseline (mean of {len(diffs)} seeds)")
    a = AUTHORS
    scale = a["batch_size"] / max(next(iter(data.values()))["batch_size"], 1)
    ax.plot([i * scale for i in a["iters"]], [s - b for s, b in zip(a["stage1"], a["baseline"])], "k--", lw=1.5,
            label="authors' STDC1 stage 1 − baseline (1 seed; x = images / 8)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("iteration (batch 8)")
    ax.set_ylabel("Δ val mIoU (points)")
    ax.set_title("Guided − baseline, paired by seed, at every evaluation")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


RECORD_FILES = ("summary.json", "val.csv", "log.csv", "config.yaml")


def archive(rows, root: Path, dest: Path, device: str = "cpu", provenance_of: dict | None = None) -> list[Path]:
    """Copy every finished run's record from ``root`` to ``dest`` (same layout); add
    ``eval_last/metrics.json`` where the summary lacks per-class IoU, and ``provenance.json``
    (``provenance_of``: commit, precision, machine, ... the trainer did not record) to the runs
    archived now. Returns the run folders written; runs already archived with the same summary
    are left alone."""
    import shutil

    written = []
    for row in rows:
        for seed_dir in sorted((root / row.name).glob("seed*")):
            src = seed_dir / row.stage
            if not (src / "summary.json").is_file():
                continue
            dst = dest / row.name / seed_dir.name / row.stage
            if (dst / "summary.json").is_file() and \
                    (dst / "summary.json").read_bytes() == (src / "summary.json").read_bytes() and \
                    final_class_iou(dst) is not None:
                continue
            dst.mkdir(parents=True, exist_ok=True)
            for name in RECORD_FILES:
                if (src / name).is_file():
                    shutil.copyfile(src / name, dst / name)
            if final_class_iou(dst) is None:
                ckpt = src / "last.pt"
                if not ckpt.is_file():
                    raise FileNotFoundError(f"{ckpt} is missing: the per-class IoU of {src} needs its final weights")
                from .evaluate import main as eval_main
                if eval_main(["--checkpoint", str(ckpt), "--out", str(dst / "eval_last"),
                              "--device", device]) != 0:
                    raise RuntimeError(f"clipseg-eval failed on {ckpt}")
                for extra in ("confusion.png", "per_class_iou.png"):     # keep the repository small
                    (dst / "eval_last" / extra).unlink(missing_ok=True)
                metrics = dst / "eval_last" / "metrics.json"
                payload = json.loads(metrics.read_text())     # no machine paths in the repository
                payload["checkpoint"] = str(Path(root.resolve().name) / ckpt.resolve().relative_to(root.resolve()))
                atomic_write_text(metrics, json.dumps(payload, indent=2))
            if provenance_of:
                atomic_write_text(dst / "provenance.json", json.dumps(provenance_of, indent=2))
            print(f"[decisive] archived {src} -> {dst}", flush=True)
            written.append(dst)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipseg_training.decisive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "report", "archive"))
    parser.add_argument("--rows", nargs="*", default=None, choices=[r.name for r in ROWS])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--root", default="runs/camvid-decisive")
    parser.add_argument("--out", default="docs/results/decisive")
    parser.add_argument("--commit", default=None, help="report: the commit the runs were trained from")
    parser.add_argument("--index", default=None,
                        help="report: also write the rows into this results index as decisive/<row> "
                             "(docs/results/results.json)")
    parser.add_argument("--to", default="docs/results/decisive/runs", help="archive: where the records go")
    parser.add_argument("--device", default="cpu", help="archive: device of the per-class evaluation")
    parser.add_argument("--provenance", action="append", default=[], metavar="KEY=VALUE",
                        help="archive: what produced the runs archived now, where their summary.json "
                             f"does not say ({', '.join(PROVENANCE_KEYS)}; repeatable)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="run: how many runs train at once (a GPU machine: several; default 1)")
    parser.add_argument("--override", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                        help="run: an extra clipseg-train override (repeatable; smoke runs, tests)")
    args = parser.parse_args(argv)
    rows = [r for r in ROWS if args.rows is None or r.name in args.rows]
    root = Path(args.root)
    if args.action == "run":
        if args.jobs < 1:
            parser.error(f"--jobs must be at least 1, got {args.jobs}")
        return run(rows, args.seeds, root, list(args.overrides), args.jobs)
    if args.action == "archive":
        prov = {}
        for item in args.provenance:
            key, sep, value = item.partition("=")
            if not sep or key not in PROVENANCE_KEYS:
                parser.error(f"--provenance {item!r}: expected KEY=VALUE with KEY one of {', '.join(PROVENANCE_KEYS)}")
            prov[key] = value
        try:
            archive(rows, root, Path(args.to), args.device, prov)
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"decisive archive: {exc}", file=sys.stderr)
            return 1
        return 0
    result = report(rows, root, Path(args.out), args.commit)
    if args.index:
        try:
            update_index(Path(args.index), result, Path(args.out) / "results.json")
        except (OSError, ValueError) as exc:
            print(f"decisive report: {exc}", file=sys.stderr)
            return 1
    print(format_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
