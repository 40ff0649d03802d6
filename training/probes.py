"""Recipe probes for the thin classes: one-change train-only runs against the decisive baseline.

    python -m clipseg_training.probes [--probes docs/results/select] [--baseline docs/results/decisive/runs/baseline]
                                      [--out docs/results/select] [--classes Pole SignSymbol]

Each probe is a folder ``<probes>/<name>/baseline/twin/baseline`` with the run's ``config.yaml`` and
either ``summary.json`` (a finished run) or ``history.json`` (a run stopped early: the history of
its last checkpoint).  The reference is the decisive experiment's baseline seeds
(``<baseline>/seed*/baseline/summary.json``), the same network, schedule and evaluation points.

Writes ``probes.md`` (per probe: what changed, iterations reached, val mIoU and the chosen
classes' IoU at its last evaluation and as the mean of its last two, against the baseline seeds at
the same evaluations) and ``probes.png`` (mIoU and each class's IoU at every evaluation: the
baseline seeds' range as a band, each probe as a line).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from clipseg_ros.atomic_files import atomic_write_text

RUN = Path("baseline") / "twin" / "baseline"
#: config keys whose value tells what a probe changed (against the decisive baseline's config)
_CHANGE_KEYS = (("loss", "class_weight"), ("loss", "ohem_min_kept_div"), ("loss", "ohem_thresh"),
                ("model", "skip4"), ("data", "crop_size"), ("data", "scale_range"))


def load_history(run_dir: Path) -> tuple[list[str], list[dict], bool]:
    """(class names, evaluations [{iteration, miou, iou}], finished) of one run folder."""
    for name, finished in (("summary.json", True), ("history.json", False)):
        f = run_dir / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except ValueError as exc:
                raise ValueError(f"{f}: not valid JSON ({exc})") from None
            hist = [e for e in data.get("history") or [] if e.get("iou")]
            if not data.get("class_names") or not hist:
                raise ValueError(f"{f}: needs class_names and a history with per-class IoU")
            return list(data["class_names"]), hist, finished
    raise FileNotFoundError(f"{run_dir}: no summary.json or history.json")


def _changes(config: Path, reference: dict) -> str:
    cfg = yaml.safe_load(config.read_text()) if config.is_file() else {}
    out = []
    for sec, key in _CHANGE_KEYS:
        v, ref = (cfg.get(sec) or {}).get(key), (reference.get(sec) or {}).get(key)
        if v != ref:
            out.append(f"`{sec}.{key}: {v}`")
    return ", ".join(out) or "none found in the config"


def collect(probes: Path, baseline: Path) -> dict:
    seeds = {}
    ref_cfg = {}
    for d in sorted(baseline.glob("seed*/baseline")):
        try:
            names, hist, _ = load_history(d)
        except (FileNotFoundError, ValueError):
            continue              # seeds trained before per-class IoU was recorded
        seeds[d.parent.name] = hist
        if not ref_cfg and (d / "config.yaml").is_file():
            ref_cfg = yaml.safe_load((d / "config.yaml").read_text())
    if not seeds:
        raise ValueError(f"{baseline}: no baseline seed with per-class IoU in its summary.json")
    runs = {}
    for d in sorted(p for p in probes.iterdir() if (p / RUN).is_dir()):
        names_p, hist, finished = load_history(d / RUN)
        if names_p != names:
            raise ValueError(f"{d / RUN}: classes {names_p} differ from the baseline's {names}")
        runs[d.name] = {"history": hist, "finished": finished, "change": _changes(d / RUN / "config.yaml", ref_cfg)}
    if not runs:
        raise ValueError(f"{probes}: no probe folders (<name>/{RUN})")
    return {"class_names": names, "baseline": seeds, "probes": runs}


#: a probe evaluation is compared with the baseline evaluation this many iterations away at most
#: (runs from before `final plan` rounded to whole intervals evaluated at 229k and 2294)
TOLERANCE = 10


def _at(hist: list[dict], it: int, tol: int = 0) -> dict | None:
    near = [e for e in hist if abs(e["iteration"] - it) <= tol]
    return min(near, key=lambda e: abs(e["iteration"] - it)) if near else None


def summarise(data: dict, classes: list[str]) -> list[dict]:
    names = data["class_names"]
    idx = [names.index(c) for c in classes]
    rows = []
    for name, run in data["probes"].items():
        hist = run["history"]
        last2 = hist[-2:]
        row = {"probe": name, "change": run["change"], "finished": run["finished"],
               "iteration": hist[-1]["iteration"], "miou_last": hist[-1]["miou"],
               "miou_last2": float(np.mean([e["miou"] for e in last2])),
               "class_last2": {c: float(np.mean([e["iou"][i] for e in last2])) for c, i in zip(classes, idx)}}
        ref = [[_at(h, e["iteration"], TOLERANCE) for e in last2] for h in data["baseline"].values()]
        ref = [r for r in ref if all(r)]
        if ref:
            row["baseline_iterations"] = sorted({e["iteration"] for r in ref for e in r})
            row["baseline_miou_last2"] = [float(np.mean([e["miou"] for e in r])) for r in ref]
            row["baseline_class_last2"] = {c: [float(np.mean([e["iou"][i] for e in r])) for r in ref]
                                           for c, i in zip(classes, idx)}
        rows.append(row)
    return rows


def _range(v: list[float]) -> str:
    return f"{min(v):.1f}–{max(v):.1f}" if v else "-"


def format_markdown(rows: list[dict], classes: list[str], n_seeds: int) -> str:
    head = " | ".join(f"{c} (probe / baseline)" for c in classes)
    L = ["# Thin-class recipe probes (train only, scored on CamVid val)", "",
         "Each probe changes one thing of the decisive baseline (same network, 50-epoch schedule, "
         f"evaluations every 230 iterations). Baseline: the range over its {n_seeds} seeds with "
         "per-class IoU, at the probe's own last two evaluations. Written by "
         "`python -m clipseg_training.probes`. Evaluations are matched by iteration "
         f"(within {TOLERANCE} iterations: the median-frequency run evaluated at 2290 and 2294, "
         "compared with the baseline's 2300).", "",
         f"| probe | change | reached | val mIoU, mean of last two (probe / baseline) | {head} |",
         "|---|---|---|---|" + "---|" * len(classes)]
    for r in rows:
        reached = f"{r['iteration']}" + ("" if r["finished"] else " (stopped)")
        cells = " | ".join(f"{r['class_last2'][c]:.1f} / {_range(r.get('baseline_class_last2', {}).get(c, []))}"
                           for c in classes)
        L.append(f"| {r['probe']} | {r['change']} | {reached} | {r['miou_last2']:.2f} / "
                 f"{_range(r.get('baseline_miou_last2', []))} | {cells} |")
    return "\n".join(L + [""])


def plot(data: dict, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = data["class_names"]
    panels = [("val mIoU", None)] + [(f"{c} IoU", names.index(c)) for c in classes]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, i) in zip(axes[0], panels):
        def val(e):
            return e["miou"] if i is None else e["iou"][i]

        its = sorted({e["iteration"] for h in data["baseline"].values() for e in h})
        lo = [min(val(_at(h, t)) for h in data["baseline"].values() if _at(h, t)) for t in its]
        hi = [max(val(_at(h, t)) for h in data["baseline"].values() if _at(h, t)) for t in its]
        ax.fill_between(its, lo, hi, color="0.8", label=f"baseline ({len(data['baseline'])} seeds, range)")
        for name, run in data["probes"].items():
            h = run["history"]
            ax.plot([e["iteration"] for e in h], [val(e) for e in h], marker="o", ms=3,
                    label=name + ("" if run["finished"] else " (stopped)"))
        ax.set_title(title)
        ax.set_xlabel("iteration (batch 8)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipseg_training.probes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--probes", type=Path, default=Path("docs/results/select"))
    p.add_argument("--baseline", type=Path, default=Path("docs/results/decisive/runs/baseline"))
    p.add_argument("--out", type=Path, default=None, help="default: the --probes folder")
    p.add_argument("--classes", nargs="+", default=["Pole", "SignSymbol"])
    a = p.parse_args(argv)
    try:
        data = collect(a.probes, a.baseline)
        unknown = [c for c in a.classes if c not in data["class_names"]]
        if unknown:
            raise ValueError(f"--classes {unknown}: not among {data['class_names']}")
        rows = summarise(data, a.classes)
    except (FileNotFoundError, ValueError) as exc:
        print(f"probes: {exc}", file=sys.stderr)
        return 2
    out = a.out or a.probes
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probes.md", format_markdown(rows, a.classes, len(data["baseline"])))
    atomic_write_text(out / "probes.json", json.dumps(rows, indent=1) + "\n")
    plot(data, a.classes, out / "probes.png")
    print(format_markdown(rows, a.classes, len(data["baseline"])))
    print(f"wrote {out / 'probes.md'}, probes.json, probes.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
