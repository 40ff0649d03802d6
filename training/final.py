"""The model to ship: one arm's recipe, a long fixed schedule, train+val for the file, a twin for the number.

    python -m clipseg_training.final run    --arm baseline|clip_rn50 [--epochs 150] [--root runs/camvid-final]
    python -m clipseg_training.final export --arm baseline|clip_rn50 --out default.clipseg
                                            [--calib ../shared/data/camvid/train] [--val-bag BAG]
    python -m clipseg_training.final plan   --arm ...     # print the commands, run nothing

Standard CamVid practice, as issue 17 asks: the recipe (``--arm``: the decisive experiment's
baseline twin or its stage-1 CLIP RN50 row, whichever its evidence favours) is trained

1. ``twin``: on **train** only, scored on val (mean of the last two of 10 evaluations): the honest
   val estimate of the recipe;
2. ``trainval``: on **train + val** with the same number of epochs and no evaluation; its final
   checkpoint is the file that ships (``export``);
3. ``peer``: torchvision's LR-ASPP head on the same ImageNet MobileNetV2, train only, the same
   schedule: the row users would otherwise build.

Every run uses the decisive experiment's config (faithful MobileNetV2, full 360x480 crops, batch
8) with the iterations set from ``--epochs`` (train: 367 images, train+val: 468), so the three are
trained the same way.  ``run`` is resumable (a finished run is skipped, an interrupted one resumes);
``export`` writes the model file from the train+val run's final weights with the int8 CPU graph
(``clipseg-export --int8-calib``).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .runner import run_matrix

CAMVID_TRAIN, CAMVID_VAL = 367, 101
BATCH = 8
ARMS = {"baseline": ("camvid-mobilenetv2f-baseline-360x480.yaml", "baseline"),
        "clip_rn50": ("camvid-mobilenetv2f-stage1-clip_rn50-360x480.yaml", "stage1")}
PEER = ("camvid-lraspp_mobilenetv2-baseline-360x480.yaml", "baseline")
EVALUATIONS = 10


@dataclass(frozen=True)
class Run:
    name: str
    config: str
    stage: str
    images: int
    overrides: tuple


def iterations(epochs: float, images: int, batch: int = BATCH) -> int:
    return int(math.ceil(epochs * images / batch))


def plan(arm: str, epochs: float) -> list[Run]:
    """The three runs of ``arm`` at ``epochs`` epochs."""
    if arm not in ARMS:
        raise ValueError(f"--arm {arm!r} is not one of {', '.join(ARMS)}")
    if not epochs > 0:
        raise ValueError(f"--epochs must be positive, got {epochs}")
    config, stage = ARMS[arm]
    key = "stage2.iters" if stage == "stage2" else "stage1.iters"     # the baseline runs stage 1's schedule
    # train-only runs: a whole number of evaluation intervals, so the 10th evaluation is the last
    # iteration and "the last two evaluations" are two intervals apart (not the 10th plus a final
    # one a few iterations later); 50 epochs give the decisive experiment's 2300 / 230
    it_train = EVALUATIONS * math.ceil(iterations(epochs, CAMVID_TRAIN) / EVALUATIONS)
    it_all = iterations(epochs, CAMVID_TRAIN + CAMVID_VAL)
    val_every = it_train // EVALUATIONS
    ckpt = max(1, it_train // 50)
    train_only = (f"{key}={it_train}", f"run.val_interval={val_every}", f"run.ckpt_interval={ckpt}")
    return [
        Run("twin", config, stage, CAMVID_TRAIN, train_only),
        Run("trainval", config, stage, CAMVID_TRAIN + CAMVID_VAL,
            (f"{key}={it_all}", "data.train_split=train+val", "data.val_split=",
             "run.val_interval=0", f"run.ckpt_interval={ckpt}")),
        Run("peer", PEER[0], PEER[1], CAMVID_TRAIN,
            (f"stage1.iters={it_train}", f"run.val_interval={val_every}", f"run.ckpt_interval={ckpt}")),
    ]


def _config_path(name: str) -> Path:
    rel = Path("training/configs") / name
    return rel if rel.is_file() else Path(__file__).resolve().parent / "configs" / name


def run_dir(root: Path, arm: str, run: Run) -> Path:
    return root / arm / run.name


def command(root: Path, arm: str, run: Run, seed: int, extra: list[str]) -> list[str]:
    return ["clipseg-train", str(_config_path(run.config)), "--stage", run.stage, "--seed", str(seed),
            "--out", str(run_dir(root, arm, run)), *run.overrides, *extra]


def planned_iterations(run: Run) -> int:
    return next(int(o.split("=", 1)[1]) for o in run.overrides if o.startswith(("stage1.iters=", "stage2.iters=")))


def finished(root: Path, arm: str, run: Run) -> bool:
    """The run's summary exists and it trained for the planned iterations (a run made with other
    ``--epochs`` is not this plan's: ``run`` resumes it to the planned length)."""
    summary = run_dir(root, arm, run) / run.stage / "summary.json"
    if not summary.is_file():
        return False
    try:
        return int(json.loads(summary.read_text())["iterations"]) == planned_iterations(run)
    except (ValueError, KeyError, TypeError):
        return False


def export_command(root: Path, arm: str, out: Path, calib: Path | None, val_bag: Path | None,
                   epochs: float) -> list[str]:
    ship = plan(arm, epochs)[1]
    cmd = ["clipseg-export", str(run_dir(root, arm, ship) / ship.stage / "last.pt"), str(out)]
    if calib is not None:
        cmd += ["--int8-calib", str(calib)]
        if val_bag is not None:
            cmd += ["--int8-val-bag", str(val_bag)]
    return cmd


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clipseg_training.final", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=("plan", "run", "export"))
    ap.add_argument("--arm", required=True, choices=tuple(ARMS))
    ap.add_argument("--epochs", type=float, default=150.0, help="epochs of every run (default 150)")
    ap.add_argument("--root", type=Path, default=Path("runs/camvid-final"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", nargs="+", default=["twin", "trainval", "peer"], choices=("twin", "trainval", "peer"))
    ap.add_argument("--override", nargs="*", default=[], help="extra KEY=VALUE for every run")
    ap.add_argument("--jobs", type=int, default=1,
                    help="run: how many of the runs train at once (a GPU machine: 3; default 1)")
    ap.add_argument("--out", type=Path, default=None, help="export: the model file to write")
    ap.add_argument("--calib", type=Path, default=Path("../shared/data/camvid/train"),
                    help="export: int8 calibration images (default ../shared/data/camvid/train); 'none' = no int8")
    ap.add_argument("--val-bag", type=Path, default=Path("data/sample_bag/camvid_val_sample"),
                    help="export: labelled bag for the int8 record's val mIoU")
    args = ap.parse_args(argv)
    try:
        runs = [r for r in plan(args.arm, args.epochs) if r.name in args.runs]
    except ValueError as exc:
        print(f"final: {exc}", file=sys.stderr)
        return 2
    if args.action == "plan":
        for r in runs:
            print(f"# {r.name}: {r.images} images, {args.epochs:g} epochs")
            print(shlex.join(command(args.root, args.arm, r, args.seed, args.override) + ["--resume"]))
        return 0
    if args.action == "run":
        if args.jobs < 1:
            ap.error(f"--jobs must be at least 1, got {args.jobs}")
        return run_matrix(runs, [args.seed], tag="final",
                          command=lambda r, seed: command(args.root, args.arm, r, seed, args.override),
                          finished=lambda r, seed: finished(args.root, args.arm, r),
                          jobs=args.jobs, log_path=lambda r, seed: run_dir(args.root, args.arm, r) / "train.log")
    if args.out is None:
        print("final: export needs --out", file=sys.stderr)
        return 2
    calib = None if str(args.calib).lower() == "none" else args.calib
    ship = plan(args.arm, args.epochs)[1]
    if not finished(args.root, args.arm, ship):
        print(f"final: the train+val run {run_dir(args.root, args.arm, ship)} has not finished "
              f"{planned_iterations(ship)} iterations ({args.epochs:g} epochs); run it first", file=sys.stderr)
        return 1
    from .export import main as export_main

    cmd = export_command(args.root, args.arm, args.out, calib, args.val_bag, args.epochs)
    print(f"[final] {shlex.join(cmd)}", flush=True)
    return export_main(cmd[1:])


if __name__ == "__main__":
    sys.exit(main())
