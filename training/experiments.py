"""The CamVid reproduction experiment: every row x every seed, resumable, and its report.

    python -m clipseg_training.experiments run    [--rows ...] [--seeds 0 1 2] [--root runs/camvid-cpu]
    python -m clipseg_training.experiments report [--root runs/camvid-cpu] [--out docs/results] [--carry JSON]
    python -m clipseg_training.experiments embeddings NPZ|minilm ...  # class-embedding similarity

``run`` trains the rows one after another; a finished run is skipped and an interrupted one is
continued with ``--resume``, so the command can be stopped and restarted at any time.
``report`` reads each run's ``summary.json`` / ``best.pt`` and writes ``results.json``, a
Markdown page (mean ± std val mIoU per row, per-class IoU, training time, the exact command of
every run, paired per-seed differences) and per-class IoU and validation-curve plots.
Besides the four main rows, two diagnostic rows can be run by name:
``stage2ctl-minilm`` (stage 2 without prompts: is stage 2's gain the prompts or the extra
iterations?) and ``stage1-clip_rn50-centered`` (CLIP class embeddings with their common
direction removed).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .runner import run_matrix

CONFIGS = Path(__file__).resolve().parent / "configs"
#: how this (13-epoch) experiment scores a run; the decisive experiment scores differently
SCORING = ("best validation evaluation (val mIoU, %; the checkpoint is selected on the reporting "
           "split, so the number is optimistic)")


@dataclass(frozen=True)
class Row:
    name: str            # row label in the report
    config: str          # config file name in training/configs
    stage: str           # stage to run (baseline | stage1 | stage2 | both)
    report_stage: str    # which stage's result the row reports
    label: str           # human description
    key: str = ""        # run directory under the root (default: the row name)
    overrides: tuple[str, ...] = ()   # config overrides of this row
    init_from: str = ""  # stage 2 only: the run directory whose stage-1 best.pt it starts from

    @property
    def dir_key(self) -> str:
        return self.key or self.name


ROWS = (
    Row("baseline", "camvid-mobilenetv2-baseline-240x320.yaml", "baseline", "baseline",
        "Baseline (no textual guidance)"),
    Row("stage1-clip_rn50", "camvid-mobilenetv2-stage1-clip_rn50-240x320.yaml", "stage1", "stage1",
        "Stage 1, CLIP RN50 class embeddings (precomputed)"),
    # the two MiniLM rows share one two-stage run
    Row("stage1-minilm", "camvid-mobilenetv2-stage12-minilm-240x320.yaml", "both", "stage1",
        "Stage 1, MiniLM-L6 class embeddings (bundled encoder; not CLIP)", key="minilm"),
    Row("stage2-minilm", "camvid-mobilenetv2-stage12-minilm-240x320.yaml", "both", "stage2",
        "Stage 2, learnable prompts through MiniLM-L6 (not CLIP)", key="minilm"),
    # Diagnostics (not main rows): each answers one question about the rows above.
    Row("stage2ctl-minilm", "camvid-mobilenetv2-stage12-minilm-240x320.yaml", "stage2", "stage2",
        "Control for stage 2: the same frozen 300 iterations from the same stage-1 model, "
        "fixed MiniLM text, no prompts", key="minilm-ctl",
        overrides=("stage2.learn_prompts=false",), init_from="minilm"),
    Row("stage1-clip_rn50-centered", "camvid-mobilenetv2-stage1-clip_rn50-240x320.yaml", "stage1", "stage1",
        "Stage 1, CLIP RN50 class embeddings centred (mean class direction removed)",
        key="clip_rn50-centered", overrides=("text.center=true",)),
)
MAIN_ROWS = ("baseline", "stage1-clip_rn50", "stage1-minilm", "stage2-minilm")


def run_dir(root: Path, row: Row, seed: int) -> Path:
    return root / row.dir_key / f"seed{seed}"


def stage1_dir(root: Path, row: Row, seed: int) -> Path:
    """Where the stage 1 that a row's stage 2 continues from lives."""
    return (root / row.init_from / f"seed{seed}" if row.init_from else run_dir(root, row, seed)) / "stage1"


def command(row: Row, seed: int, root: Path, extra: list[str]) -> list[str]:
    init = [f"stage2.init={stage1_dir(root, row, seed) / 'best.pt'}"] if row.init_from else []
    return ["clipseg-train", str(Path("training/configs") / row.config), "--stage", row.stage,
            "--seed", str(seed), "--out", str(run_dir(root, row, seed)), *row.overrides, *init, *extra]


def finished(row: Row, seed: int, root: Path) -> bool:
    return (run_dir(root, row, seed) / row.report_stage / "summary.json").is_file()


def run(rows, seeds, root: Path, extra: list[str]) -> int:
    # the two MiniLM rows share one run directory and stage: one run serves both
    return run_matrix(rows, seeds, tag="experiments",
                      command=lambda row, seed: command(row, seed, root, extra),
                      finished=lambda row, seed: finished(row, seed, root),
                      run_key=lambda row, seed: (run_dir(root, row, seed), row.stage))


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


def embedding_similarity(source) -> dict:
    """How alike a set of class embeddings are (cosine between different classes).

    ``source``: a precomputed ``.npz`` (embeddings + class_names), or ``minilm`` for the bundled
    MiniLM-L6 encoder on the CamVid prompt names of the MiniLM config (what those rows train with).
    """
    if str(source) == "minilm":
        from .config import load_config
        from .text_encoders import build_text_encoder

        cfg = load_config(CONFIGS / "camvid-mobilenetv2-stage12-minilm-240x320.yaml")
        names = list(cfg["text"]["prompt_names"])
        emb = build_text_encoder({"type": "hf", "model_dir": None}).encode_class_names(names)
        emb = emb.detach().double().numpy()
    else:
        data = np.load(source)
        emb = data["embeddings"].astype(np.float64)
        names = [str(n) for n in data["class_names"]]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ emb.T
    off = ~np.eye(len(names), dtype=bool)
    i, j = np.unravel_index(np.argmax(np.where(off, cos, -np.inf)), cos.shape)
    return {"classes": names, "mean": float(cos[off].mean()), "min": float(cos[off].min()),
            "max": float(cos[off].max()), "most_similar": [names[i], names[j]]}


# (row, reference): the paired per-seed differences the report lists
COMPARISONS = (
    ("stage1-clip_rn50", "baseline"),
    ("stage1-minilm", "baseline"),
    ("stage2-minilm", "stage1-minilm"),
    ("stage2ctl-minilm", "stage1-minilm"),
    ("stage2-minilm", "stage2ctl-minilm"),
    ("stage1-clip_rn50-centered", "baseline"),
    ("stage1-clip_rn50-centered", "stage1-clip_rn50"),
)


def val_curve(root: Path, row: Row, seed: int) -> list[list[float]] | None:
    """[[iteration, val mIoU], ...] of one run; a stage 2 continues after its stage 1's last
    validated iteration."""
    csv = run_dir(root, row, seed) / row.report_stage / "val.csv"
    if not csv.is_file():
        return None
    its, m = _read_val_csv(csv)
    if its.size == 0:
        return None
    if row.report_stage == "stage2":
        s1_csv = stage1_dir(root, row, seed) / "val.csv"
        s1 = _read_val_csv(s1_csv)[0] if s1_csv.is_file() else np.array([])
        its = its + (int(s1.max()) if s1.size else 0)
    return [[int(i), float(v)] for i, v in zip(its, m)]


# diagnostic evaluations of a guided run's best checkpoint: clipseg-eval output folder (cache, in
# the run's stage folder) and arguments
DIAGNOSTICS = {
    # the prediction with S's class information scrambled: how much the head relies on S
    "miou_text_shuffled": ("eval_val_ablate-shuffle", ["--ablate-text", "shuffle"]),
    # the score map S alone (argmax over classes, 1/32 scale): what the text branch has learned
    "miou_score_map": ("eval_val_score_map", ["--head", "score_map"]),
}


def diagnostic_miou(stage_dir: Path, key: str, compute: bool) -> float | None:
    """Val mIoU of one :data:`DIAGNOSTICS` evaluation of ``stage_dir/best.pt`` (read from
    clipseg-eval's cached ``metrics.json``; run first when ``compute``), or None."""
    folder, args = DIAGNOSTICS[key]
    metrics = stage_dir / folder / "metrics.json"
    if not metrics.is_file():
        if not compute:
            return None
        from .evaluate import main as eval_main

        if eval_main(["--checkpoint", str(stage_dir / "best.pt"), *args, "--workers", "1",
                      "--out", str(stage_dir / folder)]) != 0:
            return None
    return float(json.loads(metrics.read_text())["metrics"]["miou"])


def collect(rows, root: Path, carry: dict | None = None, ablate: bool = False) -> dict:
    """Every finished run of ``rows`` under ``root``; with ``carry`` (an earlier ``results.json``),
    the runs it records that are not on disk any more are kept, marked ``"carried": true``.
    ``ablate``: also run the :data:`DIAGNOSTICS` evaluations of every guided run that lacks them."""
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
                         "val_curve": val_curve(root, row, seed),
                         **{k: diagnostic_miou(d, k, ablate) if row.stage != "baseline" else None
                            for k in DIAGNOSTICS},
                         "command": shlex.join(command(row, seed, root, []))})
        for old in ((carry or {}).get(row.name) or {}).get("runs", []):
            if old["seed"] not in seeds:
                runs.append({**old, "carried": True})
        runs.sort(key=lambda r: r["seed"])
        mious = np.array([r["miou"] for r in runs], dtype=float)
        from .config import load_config

        cfg = load_config(CONFIGS / row.config, list(row.overrides))
        iters = int(cfg["stage2" if row.report_stage == "stage2" else "stage1"]["iters"])
        bs = int(cfg["data"]["batch_size"])
        total = iters + (int(cfg["stage1"]["iters"]) if row.report_stage == "stage2" else 0)
        out[row.name] = {
            "label": row.label, "config": row.config, "runs": runs, "n": len(runs),
            "iters": iters, "batch_size": bs, "crop_size": list(cfg["data"]["crop_size"]),
            "epochs": round(total * bs / 367, 1),
            "scoring": SCORING,
            "per_seed": {str(r["seed"]): r["miou"] for r in runs},
            "miou_mean": float(mious.mean()) if len(runs) else None,
            "miou_std": float(mious.std(ddof=1)) if len(runs) > 1 else None,
            "iou_mean": (np.nanmean([r["iou"] for r in runs if r["iou"]], axis=0).tolist()
                         if any(r["iou"] for r in runs) else None),
        }
    return out


def paired(data: dict, name: str, ref: str) -> dict | None:
    """Per-seed differences ``name - ref`` over the seeds both rows have."""
    if not (data.get(name) and data.get(ref)):
        return None
    a = {r["seed"]: r["miou"] for r in data[name]["runs"]}
    b = {r["seed"]: r["miou"] for r in data[ref]["runs"]}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    return {"row": name, "reference": ref, "seeds": seeds, "differences": d.tolist(),
            "mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else None}


def report(rows, root: Path, out_dir: Path, class_names, carry: dict | None = None,
           ablate: bool = False) -> Path:
    data = collect(rows, root, carry, ablate)
    data = {k: v for k, v in data.items() if v["n"] or k in MAIN_ROWS}
    out_dir.mkdir(parents=True, exist_ok=True)
    index = out_dir / "results.json"
    # rows another report keeps in the same index (written by `decisive report --index`)
    from .decisive import INDEX_PREFIX

    try:
        kept = ({k: v for k, v in json.loads(index.read_text()).items() if k.startswith(INDEX_PREFIX)}
                if index.is_file() else {})
    except (OSError, ValueError, AttributeError):
        kept = {}
    index.write_text(json.dumps({**data, **kept}, indent=2))
    lines = ["| row | seeds | val mIoU (mean ± std) | per-seed | train time / run (active) |", "|---|---|---|---|---|"]
    any_carried = False
    for name, r in data.items():
        if not r["n"]:
            lines.append(f"| {r['label']} | 0 | – | – | – |")
            continue
        std = f" ± {r['miou_std']:.2f}" if r["miou_std"] is not None else ""
        per = ", ".join(f"{x['miou']:.2f}" + ("†" if x.get("carried") else "") for x in r["runs"])
        any_carried |= any(x.get("carried") for x in r["runs"])
        t = np.mean([x["active_seconds"] for x in r["runs"]]) / 60
        lines.append(f"| {r['label']} | {r['n']} | {r['miou_mean']:.2f}{std} | {per} | {t:.0f} min |")
    if any_carried:
        lines += ["", "† carried over from the earlier results.json (that run's directory was not kept)."]
    diffs = [d for d in (paired(data, a, b) for a, b in COMPARISONS) if d]
    if diffs:
        lines += ["", "Paired differences (same seed, val mIoU points):", "",
                  "| row − reference | seeds | per seed | mean ± std |", "|---|---|---|---|"]
        for d in diffs:
            std = f" ± {d['std']:.2f}" if d["std"] is not None else ""
            lines.append(f"| {d['row']} − {d['reference']} | {len(d['seeds'])} | "
                         + ", ".join(f"{x:+.2f}" for x in d["differences"]) + f" | {d['mean']:+.2f}{std} |")
    diag = [(name, x) for name, r in data.items() for x in r["runs"]
            if any(x.get(k) is not None for k in DIAGNOSTICS)]
    if diag:
        def cell(v):
            return "–" if v is None else f"{v:.2f}"
        lines += ["", "Diagnostics of the guided runs' best checkpoints: the prediction with the class embeddings "
                  "shuffled (`clipseg-eval --ablate-text shuffle`: channel k of S gets class k+1's embedding), "
                  "and the score map S alone (`clipseg-eval --head score_map`):", "",
                  "| row | seed | val mIoU | T shuffled | change | S alone |", "|---|---|---|---|---|---|"]
        for name, x in diag:
            sh = x.get("miou_text_shuffled")
            change = "–" if sh is None else f"{sh - x['miou']:+.2f}"
            lines.append(f"| {name} | {x['seed']} | {x['miou']:.2f} | {cell(sh)} | {change} | "
                         f"{cell(x.get('miou_score_map'))} |")
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
    _plot_curves(data, out_dir / "val_miou_curves.png")
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


def _plot_curves(data: dict, path: Path) -> None:
    """Val mIoU against iteration, one thin line per seed and a thick mean per row (runs that
    carry no curve, e.g. carried over from a report that did not store curves, are left out)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for i, (name, r) in enumerate(data.items()):
        color = f"C{i}"
        curves = [np.array(x["val_curve"], dtype=float) for x in r["runs"] if x.get("val_curve")]
        for c in curves:
            ax.plot(c[:, 0], c[:, 1], color=color, alpha=0.35, linewidth=0.8)
        if curves:
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n, 1] for c in curves], axis=0)
            ax.plot(curves[0][:n, 0], mean, color=color, linewidth=2.2,
                    label=f"{name} (mean of {len(curves)})")
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
    parser.add_argument("--rows", nargs="*", default=None,
                        help="run: default the four main rows; report: default every row with runs",
                        choices=[r.name for r in ROWS])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="runs/camvid-cpu")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--ablate", action="store_true",
                        help="report: also evaluate each guided run with shuffled class embeddings and "
                             "from the score map alone (cached in the run folder)")
    parser.add_argument("--carry", default=None, metavar="RESULTS_JSON",
                        help="report: keep the runs an earlier results.json records that are no "
                             "longer on disk (marked as carried over)")
    parser.add_argument("overrides", nargs="*",
                        help="run: extra config overrides for every run; embeddings: .npz files, or minilm")
    args = parser.parse_args(argv)
    names = args.rows if args.rows is not None else (MAIN_ROWS if args.action == "run" else [r.name for r in ROWS])
    rows = [r for r in ROWS if r.name in names]
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
    carry = None
    if args.carry:
        try:
            carry = json.loads(Path(args.carry).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--carry {args.carry}: cannot read an earlier results.json ({exc})")
    report(rows, Path(args.root), Path(args.out), list(CAMVID_CLASSES), carry, args.ablate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
