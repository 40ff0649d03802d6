"""The CamVid reproduction experiment: every row x every seed, resumable, and its report.

    python -m clipseg_training.experiments run    [--rows ...] [--seeds 0 1 2] [--root runs/camvid-cpu]
    python -m clipseg_training.experiments report [--root runs/camvid-cpu] [--out docs/results]
    python -m clipseg_training.experiments embeddings NPZ [NPZ ...]   # class-embedding similarity

``run`` trains the rows one after another; a finished run is skipped and an interrupted one is
continued with ``--resume``, so the command can be stopped and restarted at any time.
``report`` reads each run's ``summary.json`` / ``best.pt`` and writes ``results.json``, a
Markdown page (mean ± std val mIoU per row, per-class IoU, training time, the exact command of
every run) and a per-class IoU plot.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Row:
    name: str            # row label in the report
    config: str          # config file name in training/configs
    stage: str           # stage to run (baseline | stage1 | both)
    report_stage: str    # which stage's result the row reports
    label: str           # human description


ROWS = (
    Row("baseline", "camvid-mobilenetv2-baseline-240x320.yaml", "baseline", "baseline",
        "Baseline (no textual guidance)"),
    Row("stage1-clip_rn50", "camvid-mobilenetv2-stage1-clip_rn50-240x320.yaml", "stage1", "stage1",
        "Stage 1, CLIP RN50 class embeddings (precomputed)"),
    Row("stage1-minilm", "camvid-mobilenetv2-stage12-minilm-240x320.yaml", "both", "stage1",
        "Stage 1, MiniLM-L6 class embeddings (bundled encoder; not CLIP)"),
    Row("stage2-minilm", "camvid-mobilenetv2-stage12-minilm-240x320.yaml", "both", "stage2",
        "Stage 2, learnable prompts through MiniLM-L6 (not CLIP)"),
)


def run_dir(root: Path, row: Row, seed: int) -> Path:
    # the two MiniLM rows share one two-stage run
    key = "minilm" if row.config.startswith("camvid-mobilenetv2-stage12-minilm") else row.name
    return root / key / f"seed{seed}"


def command(row: Row, seed: int, root: Path, extra: list[str]) -> list[str]:
    return ["clipseg-train", str(Path("training/configs") / row.config), "--stage", row.stage,
            "--seed", str(seed), "--out-dir", str(run_dir(root, row, seed)), *extra]


def finished(row: Row, seed: int, root: Path) -> bool:
    return (run_dir(root, row, seed) / row.report_stage / "summary.json").is_file()


def run(rows, seeds, root: Path, extra: list[str]) -> int:
    done_dirs = set()
    for seed in seeds:
        for row in rows:
            d = run_dir(root, row, seed)
            if finished(row, seed, root) or (d, row.stage) in done_dirs:
                print(f"[experiments] {row.name} seed {seed}: done", flush=True)
                continue
            cmd = command(row, seed, root, extra) + ["--resume"]
            print(f"[experiments] {row.name} seed {seed}: {shlex.join(cmd)}", flush=True)
            exe = Path(sys.executable).parent / "clipseg-train"
            res = subprocess.run([str(exe)] + cmd[1:])
            if res.returncode != 0:
                print(f"[experiments] {row.name} seed {seed} stopped with exit code {res.returncode}; "
                      f"rerun the same command to continue", flush=True)
                return res.returncode
            done_dirs.add((d, row.stage))
    return 0


def active_seconds(log_csv: Path, wall: float) -> float:
    """Training time without pauses: ``log.csv``'s cumulative ``seconds`` column, with any step
    between two log lines longer than 4x the median step (a paused or stopped-and-resumed run)
    counted as a median step.  Falls back to the wall time when there is no usable log."""
    try:
        lines = log_csv.read_text().splitlines()
        col = lines[0].split(",").index("seconds")
        t = np.array([float(ln.split(",")[col]) for ln in lines[1:] if ln.strip()])
    except (OSError, ValueError, IndexError):
        return float(wall)
    if t.size < 3:
        return float(wall)
    steps = np.diff(np.concatenate([[0.0], t]))
    med = float(np.median(steps))
    steps = np.where(steps > 4 * med, med, steps)
    tail = wall - t[-1]          # after the last log line: the final validation and save
    return float(steps.sum() + (tail if 0 <= tail < 4 * med else 0.0))


def embedding_similarity(npz_path) -> dict:
    """How alike a precomputed ``.npz``'s class embeddings are (cosine between different classes)."""
    data = np.load(npz_path)
    emb = data["embeddings"].astype(np.float64)
    names = [str(n) for n in data["class_names"]]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ emb.T
    off = ~np.eye(len(names), dtype=bool)
    i, j = np.unravel_index(np.argmax(np.where(off, cos, -np.inf)), cos.shape)
    return {"classes": names, "mean": float(cos[off].mean()), "min": float(cos[off].min()),
            "max": float(cos[off].max()), "most_similar": [names[i], names[j]]}


def collect(rows, root: Path) -> dict:
    import torch

    out = {}
    for row in rows:
        seeds = sorted(int(p.name[4:]) for p in (run_dir(root, row, 0).parent).glob("seed*")
                       if (p / row.report_stage / "summary.json").is_file())
        runs = []
        for seed in seeds:
            d = run_dir(root, row, seed) / row.report_stage
            summary = json.loads((d / "summary.json").read_text())
            best = torch.load(d / "best.pt", map_location="cpu", weights_only=False)
            val = best.get("val") or {}
            runs.append({"seed": seed, "miou": summary["best_miou"], "best_iteration": summary["best_iteration"],
                         "train_seconds": summary["train_seconds"],
                         "active_seconds": active_seconds(d / "log.csv", summary["train_seconds"]),
                         "iou": val.get("iou"),
                         "pixel_accuracy": val.get("pixel_accuracy"),
                         "command": shlex.join(command(row, seed, root, []))})
        mious = np.array([r["miou"] for r in runs], dtype=float)
        out[row.name] = {
            "label": row.label, "config": row.config, "runs": runs, "n": len(runs),
            "miou_mean": float(mious.mean()) if len(runs) else None,
            "miou_std": float(mious.std(ddof=1)) if len(runs) > 1 else None,
            "iou_mean": (np.nanmean([r["iou"] for r in runs if r["iou"]], axis=0).tolist()
                         if any(r["iou"] for r in runs) else None),
        }
    return out


def report(rows, root: Path, out_dir: Path, class_names) -> Path:
    data = collect(rows, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(data, indent=2))
    lines = ["| row | seeds | val mIoU (mean ± std) | per-seed | train time / run (active) |", "|---|---|---|---|---|"]
    for name, r in data.items():
        if not r["n"]:
            lines.append(f"| {r['label']} | 0 | – | – | – |")
            continue
        std = f" ± {r['miou_std']:.2f}" if r["miou_std"] is not None else ""
        per = ", ".join(f"{x['miou']:.2f}" for x in r["runs"])
        t = np.mean([x["active_seconds"] for x in r["runs"]]) / 60
        lines.append(f"| {r['label']} | {r['n']} | {r['miou_mean']:.2f}{std} | {per} | {t:.0f} min |")
    lines += ["", "Per-class IoU (mean over seeds):", "",
              "| row | " + " | ".join(class_names) + " |", "|---|" + "---|" * len(class_names)]
    for name, r in data.items():
        if r["iou_mean"]:
            lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" if v <= 1.0 else f"{v:.1f}"
                                                    for v in r["iou_mean"]) + " |")
    lines += ["", "Commands:", ""]
    for name, r in data.items():
        for x in r["runs"]:
            lines.append(f"- {name} seed {x['seed']}: `{x['command']}`")
    table = "\n".join(lines) + "\n"
    (out_dir / "results_table.md").write_text(table)
    _plot(data, class_names, out_dir / "per_class_iou.png")
    _plot_curves(rows, root, out_dir / "val_miou_curves.png")
    print(table)
    return out_dir / "results_table.md"


def _plot(data, class_names, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(n, r) for n, r in data.items() if r["iou_mean"]]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(rows)
    x = np.arange(len(class_names))
    for i, (name, r) in enumerate(rows):
        vals = np.array(r["iou_mean"], dtype=float)
        vals = vals * 100 if np.nanmax(vals) <= 1.0 else vals
        ax.bar(x + i * width, vals, width, label=f"{name} (mIoU {r['miou_mean']:.1f})")
    ax.set_xticks(x + width * (len(rows) - 1) / 2, class_names, rotation=30, ha="right")
    ax.set_ylabel("val IoU (%)")
    ax.set_title("CamVid val per-class IoU, mean over seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _read_val_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``val.csv`` of a run (iteration, mIoU, pixel accuracy) -> (iterations, mIoU)."""
    its, mious = [], []
    for line in path.read_text().splitlines():
        parts = line.split(",")
        try:
            its.append(int(parts[0]))
            mious.append(float(parts[1]))
        except (ValueError, IndexError):
            continue      # header or a partial line
    return np.array(its), np.array(mious)


def _plot_curves(rows, root: Path, path: Path) -> None:
    """Val mIoU against iteration, one thin line per seed and a thick mean per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for i, row in enumerate(rows):
        color = f"C{i}"
        curves = []
        for seed_dir in sorted(run_dir(root, row, 0).parent.glob("seed*")):
            csv = seed_dir / row.report_stage / "val.csv"
            if not csv.is_file():
                continue
            its, m = _read_val_csv(csv)
            if its.size == 0:
                continue
            if row.report_stage == "stage2":      # continues from stage 1: offset the x axis
                cfg_iters = None
                s1_csv = seed_dir / "stage1" / "val.csv"
                if s1_csv.is_file():
                    s1 = _read_val_csv(s1_csv)[0]
                    cfg_iters = int(s1.max()) if s1.size else 0
                its = its + (cfg_iters or 0)
            ax.plot(its, m, color=color, alpha=0.35, linewidth=0.8)
            curves.append((its, m))
        if curves:
            n = min(len(c[0]) for c in curves)
            mean = np.mean([c[1][:n] for c in curves], axis=0)
            ax.plot(curves[0][0][:n], mean, color=color, linewidth=2.2,
                    label=f"{row.name} (mean of {len(curves)})")
            drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("iteration (stage 2 continues after stage 1)")
    ax.set_ylabel("CamVid val mIoU (%)")
    ax.set_title("Validation mIoU during training (thin: seeds, thick: mean)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipseg_training.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("run", "report", "embeddings"))
    parser.add_argument("--rows", nargs="*", default=[r.name for r in ROWS],
                        choices=[r.name for r in ROWS])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="runs/camvid-cpu")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("overrides", nargs="*",
                        help="run: extra config overrides for every run; embeddings: the .npz files")
    args = parser.parse_args(argv)
    rows = [r for r in ROWS if r.name in args.rows]
    if args.action == "embeddings":
        for path in args.overrides:
            r = embedding_similarity(path)
            print(f"{path}: {len(r['classes'])} classes, cosine between different classes: mean "
                  f"{r['mean']:.3f}, min {r['min']:.3f}, max {r['max']:.3f} "
                  f"({r['most_similar'][0]} / {r['most_similar'][1]})")
        return 0
    if args.action == "run":
        t0 = time.time()
        rc = run(rows, args.seeds, Path(args.root), args.overrides)
        print(f"[experiments] {time.time() - t0:.0f} s")
        return rc
    from clipseg_ros.visualize import CAMVID_CLASSES
    report(rows, Path(args.root), Path(args.out), list(CAMVID_CLASSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
