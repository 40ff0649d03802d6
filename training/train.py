"""``clipseg-train``: the two-stage CLIP text-distillation recipe, and its baseline.

    clipseg-train CONFIG [--stage baseline|stage1|stage2|both] [--resume] [section.key=value ...]

Iteration-based SGD (momentum 0.9, weight decay 5e-4 except norms/biases, poly LR with linear
warm-up), OHEM losses, periodic validation (mIoU over the whole split), ``best.pt`` by val mIoU,
``last.pt`` every ``run.ckpt_interval`` iterations and on SIGINT/SIGTERM, all written atomically.
``--resume`` continues from ``last.pt`` exactly: model, optimizer, LR schedule, RNG state and the
position inside the epoch's data order are restored, so an interrupted run reproduces an
uninterrupted one.  Several processes / machines: ``torchrun --nproc_per_node N -m
clipseg_training.train ...`` (NCCL on GPUs, gloo on CPU).

This module holds the :class:`Trainer` (set-up, the optimisation step, the loop, validation) and
the CLI.  Checkpoint I/O (atomic writes, the ``best.pt`` / ``last.pt`` payloads, resuming,
:func:`~clipseg_training.checkpoint.load_checkpoint_network`) lives in
:mod:`clipseg_training.checkpoint`; the datasets, the resumable sampler and the loaders in
:mod:`clipseg_training.sampling`; validation uses :func:`clipseg_training.evaluate.evaluate`.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from clipseg_ros import devices
from clipseg_ros.atomic_files import atomic_write_text

from .checkpoint import (atomic_torch_save, best_payload, checkpoint_iteration, jsonable, last_payload,
                         load_network_state, restore_training_state)
from .config import ConfigError, dump_config, load_config
from .provenance import code_commit
from .evaluate import evaluate
from .export import export_checkpoint
from .losses import SegmentationCriterion, class_weights
from .precision import resolve_precision
from .sampling import EpochSampler, build_data, make_loader, make_val_loader
from .stages import TrainModule, build_stage, param_groups, poly_warmup_factor

STAGE_CHOICES = ("baseline", "stage1", "stage2", "both")


# --------------------------------------------------------------------------- utilities
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``run.device`` as a torch device (see :func:`clipseg_ros.devices.resolve_device`)."""
    try:
        dev = devices.resolve_device(name, local_rank, onnxruntime=False)
    except devices.DeviceError as exc:
        raise ConfigError(f"run.device: {exc}") from None
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device {name} requested but no CUDA device is available")
    return torch.device(dev)


# --------------------------------------------------------------------------- trainer
class StopRequested(Exception):
    pass


class Trainer:
    def __init__(self, cfg: dict, stage: str, out_dir: Path, resume: bool, argv: list[str] | None = None):
        self.cfg, self.stage, self.out_dir = cfg, stage, out_dir
        self.argv = argv or []
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.main = self.rank == 0
        self.device = resolve_device(cfg["run"]["device"], self.local_rank)
        if cfg["run"]["threads"]:
            torch.set_num_threads(int(cfg["run"]["threads"]))
        self.total = int(cfg["stage2" if stage == "stage2" else "stage1"]["iters"])
        self.precision = resolve_precision(cfg["run"]["precision"], self.device)
        self.memory_format = torch.channels_last if cfg["run"]["channels_last"] else torch.contiguous_format
        self.resume = resume
        self.stop_signal: int | None = None

    # ---- setup
    def setup(self, train_set, val_set, init_state=None):
        cfg = self.cfg
        seed_everything(cfg["run"]["seed"] + self.rank)
        self.class_names = list(train_set.class_names)
        module, self.info = build_stage(self.stage, cfg, self.class_names, self.device, init_state)
        self.module: TrainModule = module.to(self.device, memory_format=self.memory_format)
        if self.main:
            print(f"[{self.stage}] precision {self.precision.describe()}, "
                  f"{'channels-last' if self.memory_format is torch.channels_last else 'contiguous'} "
                  f"memory format, {torch.get_num_threads()} threads, {self.cfg['data']['workers']} loader workers",
                  flush=True)
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        groups = param_groups(self.module, cfg, self.stage)
        o = cfg["optim"]
        self.optimizer = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=o["momentum"])
        weight = None
        if cfg["loss"]["class_weight"] is not None:
            rule = cfg["loss"]["class_weight"]
            counts, present = (train_set.class_pixel_counts(progress=cfg["run"]["progress"] and self.main)
                               if isinstance(rule, str) else (np.zeros(len(self.class_names)), None))
            try:
                weight = class_weights(rule, counts, present)
            except ValueError as exc:
                raise ConfigError(f"{exc} ({train_set.describe()}, {len(self.class_names)} classes)") from exc
            self.info["class_weight"] = {"rule": rule if isinstance(rule, str) else "given",
                                         "weights": [round(float(w), 4) for w in weight]}
            if self.main:
                print(f"[{self.stage}] class weights ({self.info['class_weight']['rule']}): "
                      + ", ".join(f"{n} {w:.2f}" for n, w in zip(self.class_names, weight)), flush=True)
        self.criterion = SegmentationCriterion(
            cfg["loss"]["ohem_thresh"], cfg["loss"]["ohem_min_kept_div"], cfg["loss"]["aux_weight"],
            cfg["loss"]["detail_weight"], cfg["loss"]["text_weight"], cfg["loss"]["tau"],
            class_weight=None if weight is None else torch.from_numpy(weight))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.needs_scaler)
        self.forward = self.ddp or self.module
        if cfg["run"]["compile"]:
            self.forward = torch.compile(self.forward)
        self.sampler = EpochSampler(len(train_set), cfg["data"]["batch_size"], cfg["run"]["seed"],
                                    self.rank, self.world)
        self.train_set, self.val_set = train_set, val_set
        self.iteration, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_miou, self.best_iter, self.history = -1.0, -1, []
        self.train_seconds = 0.0
        if self.resume and (self.out_dir / "last.pt").is_file():
            self._load_last(self.out_dir / "last.pt")

    def _set_lr(self):
        o = self.cfg["optim"]
        f = poly_warmup_factor(self.iteration, self.total, o["power"], o["warmup_iters"], o["warmup_ratio"])
        min_lr = float(o["min_lr"])
        for g in self.optimizer.param_groups:
            # mmseg poly: (lr - min_lr) * (1 - t/T)^p + min_lr, per group
            base = g["initial_lr"]
            floor = min(min_lr, base)
            g["lr"] = (base - floor) * f + floor

    # ---- checkpoints
    def _state(self) -> dict:
        self.module.bake_text()
        return last_payload(
            stage=self.stage, config=self.cfg, class_names=self.class_names, iteration=self.iteration,
            total=self.total, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch, module=self.module,
            optimizer=self.optimizer, scaler=self.scaler, best_miou=self.best_miou, best_iter=self.best_iter,
            history=self.history, info=self.info, train_seconds=self.train_seconds)

    def save_last(self):
        if self.main:
            atomic_torch_save(self._state(), self.out_dir / "last.pt")
        self._barrier()

    def _load_last(self, path: Path):
        ckpt = restore_training_state(path, self.stage, self.module, self.optimizer, self.scaler,
                                      self.memory_format)
        self.iteration, self.epoch, self.batch_in_epoch = ckpt["iteration"], ckpt["epoch"], ckpt["batch_in_epoch"]
        self.best_miou, self.best_iter = ckpt["best_miou"], ckpt["best_iter"]
        self.history = ckpt["history"]
        self.train_seconds = ckpt.get("train_seconds", 0.0)
        if self.main:
            print(f"[{self.stage}] resumed from {path} at iteration {self.iteration}/{self.total}", flush=True)

    def _barrier(self):
        if self.world > 1:
            dist.barrier()

    # ---- validation
    def validate(self) -> dict | None:
        if self.val_set is None:
            return None
        self.module.bake_text()
        d = self.cfg["data"]
        loader = make_val_loader(self.val_set, self.rank, self.world, min(2, d["workers"]),
                                 batch_size=d["val_batch_size"])
        cm = evaluate(self.module.net, loader, len(self.class_names), self.device,
                      distributed=self.world > 1, autocast=self.precision.autocast,
                      memory_format=self.memory_format)
        self.module.train()
        return cm.compute()

    # ---- loop
    def step(self, batch: dict) -> tuple[float, dict]:
        """One optimisation step on ``batch`` (forward with all heads and losses, backward, SGD);
        returns the loss and its parts.  The training loop and ``clipseg-bench --train`` run this."""
        self._set_lr()
        t0 = time.perf_counter()
        images = batch["image"].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        labels = batch["label"].to(self.device, non_blocking=True)
        with self.precision.autocast():
            outputs = self.forward(images)
        t1 = time.perf_counter()
        # losses in fp32 outside autocast (they also cast their inputs to fp32)
        loss, parts = self.criterion(outputs, labels)
        loss_value = float(loss.detach())
        t2 = time.perf_counter()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at iteration {self.iteration} "
                                     f"({parts}); lower optim.lr or check the data")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        t3 = time.perf_counter()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        self.batch_in_epoch += 1
        # wall seconds of the step's phases (on CPU; CUDA timings would need a synchronize)
        self.phase_seconds = {"forward": t1 - t0, "loss": t2 - t1, "backward": t3 - t2,
                              "optimizer": time.perf_counter() - t3}
        return loss_value, parts

    def _signal(self, signum, frame):
        self.stop_signal = signum

    def _stop_now(self) -> bool:
        flag = 1.0 if self.stop_signal is not None else 0.0
        if self.world > 1:
            t = torch.tensor([flag])
            dist.all_reduce(t)
            flag = float(t)
        return flag > 0

    def run(self) -> dict:
        cfg, run = self.cfg, self.cfg["run"]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.main:
            (self.out_dir / "config.yaml").write_text(dump_config(cfg))
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGINT, signal.SIGTERM)}
        log_file = self.out_dir / "log.csv"
        writer = None
        tb = None
        if self.main:
            # rows past the checkpoint were trained after it and are trained again now (a run killed
            # between checkpoints): drop them, so each iteration is logged once and `seconds` rises
            for name in ("log.csv", "val.csv"):
                trim_csv_after(self.out_dir / name, self.iteration)
            if self.iteration == 0:     # a fresh run: an earlier run's summary no longer describes this folder
                (self.out_dir / "summary.json").unlink(missing_ok=True)
            new = not log_file.exists() or self.iteration == 0
            fh = open(log_file, "w" if new else "a", newline="")
            writer = csv.writer(fh)
            if new:
                writer.writerow(["iteration", "epoch", "lr", "loss", "seg", "aux16", "aux32", "detail",
                                 "text", "seconds"])
            if run["tensorboard"]:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                    tb = SummaryWriter(str(self.out_dir / "tb"))
                except ImportError:
                    print("tensorboard not installed; logging to CSV only", file=sys.stderr)
        bar = None
        if self.main and run["progress"]:
            from tqdm import tqdm
            bar = tqdm(total=self.total, initial=self.iteration, desc=f"{self.stage}", unit="it",
                       dynamic_ncols=True)
        self.module.train()
        loader_iter = None
        t_start = time.time()
        try:
            while self.iteration < self.total:
                if loader_iter is None:
                    if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                    loader_iter = iter(make_loader(self.train_set, self.sampler, cfg["data"]["batch_size"],
                                                   cfg["data"]["workers"], self.device))
                try:
                    batch = next(loader_iter)
                except StopIteration:
                    loader_iter = None
                    self.batch_in_epoch = self.sampler.batches_per_epoch
                    continue
                loss_value, parts = self.step(batch)
                lr = self.optimizer.param_groups[-1 if self.stage == "stage2" else 0]["lr"]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", ep=self.epoch, refresh=False)
                if writer is not None and (self.iteration % run["log_interval"] == 0 or self.iteration == self.total):
                    writer.writerow([self.iteration, self.epoch, f"{lr:.6g}", f"{loss_value:.5f}"] +
                                    [f"{parts.get(k, float('nan')):.5f}"
                                     for k in ("seg", "aux16", "aux32", "detail", "text")] +
                                    [f"{self.train_seconds + time.time() - t_start:.1f}"])
                    fh.flush()
                    if tb is not None:
                        tb.add_scalar("train/loss", loss_value, self.iteration)
                        tb.add_scalar("train/lr", lr, self.iteration)
                if run["val_interval"] and (self.iteration % run["val_interval"] == 0 or self.iteration == self.total):
                    self._validate_and_keep_best(bar, tb)
                if self.iteration % run["ckpt_interval"] == 0 or self.iteration == self.total:
                    self.train_seconds += time.time() - t_start
                    t_start = time.time()
                    self.save_last()
                if self._stop_now():
                    self.train_seconds += time.time() - t_start
                    t_start = time.time()
                    self.save_last()
                    raise StopRequested()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if writer is not None:
                fh.close()
            if tb is not None:
                tb.close()
        if not run["val_interval"] or self.best_iter < 0:
            # No validation configured: the final weights are the "best".
            if self.main:
                atomic_torch_save(self._best_payload(None), self.out_dir / "best.pt")
        summary = {"stage": self.stage, "iterations": self.total, "best_miou": self.best_miou,
                   "best_iteration": self.best_iter, "train_seconds": round(self.train_seconds, 1),
                   "train_split": self.cfg["data"]["train_split"], "train_images": len(self.train_set),
                   "val_images": len(self.val_set) if self.val_set is not None else 0,
                   "class_names": self.class_names,
                   "history": self.history, "command": " ".join(self.argv), "info": self.info,
                   "runtime": self._runtime()}
        if self.main:
            # atomic: a summary marks the run finished (``--resume`` and the experiment runners skip it)
            atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def _runtime(self) -> dict:
        """How this run (its last resume) ran: precision, device, threads, PyTorch, the code's commit.
        Kept in summary.json so that archived runs say what produced them."""
        return {"precision": self.precision.name, "precision_note": self.precision.describe(),
                "device": str(self.device), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "commit": code_commit()}

    def _best_payload(self, result):
        return best_payload(stage=self.stage, config=self.cfg, class_names=self.class_names,
                            iteration=self.iteration, module=self.module, val=result, info=self.info)

    def _validate_and_keep_best(self, bar, tb):
        result = self.validate()
        if result is None:
            return
        miou = float(result["miou"])
        self.history.append({"iteration": self.iteration, "miou": miou,
                             "pixel_accuracy": float(result["pixel_accuracy"]),
                             "iou": [round(100 * float(x), 3) for x in result["iou"]]})   # per class, %
        if tb is not None:
            tb.add_scalar("val/mIoU", miou, self.iteration)
        if self.main:
            with open(self.out_dir / "val.csv", "a") as fh:
                fh.write(f"{self.iteration},{miou:.4f},{result['pixel_accuracy']:.4f}\n")
        if miou > self.best_miou:
            self.best_miou, self.best_iter = miou, self.iteration
            if self.main:
                atomic_torch_save(self._best_payload(jsonable(result)), self.out_dir / "best.pt")
        msg = (f"[{self.stage}] iter {self.iteration}/{self.total}  val mIoU {miou:.2f}  "
               f"(best {self.best_miou:.2f} @ {self.best_iter})")
        if self.main:
            (bar.write if bar is not None else print)(msg)
        self._barrier()


# --------------------------------------------------------------------------- entry point
def trim_csv_after(path: Path, iteration: int) -> None:
    """Drop the rows of ``path`` (a log with the iteration in its first column, a header line or
    none) whose iteration is past ``iteration``; rewritten atomically, untouched when nothing goes."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = []
    for line in lines:
        head = line.split(",", 1)[0].strip()
        if head.isdigit() and int(head) > iteration:
            continue
        keep.append(line)
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(keep))


def train(cfg: dict, stage: str, resume: bool = False, argv=None) -> dict:
    """Run one stage or both; returns {stage: summary}."""
    out_root = Path(cfg["run"]["out_dir"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and cfg["run"]["device"] != "cpu" else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    stages = ["stage1", "stage2"] if stage == "both" else [stage]
    train_set, val_set = build_data(cfg, int(os.environ.get("RANK", "0")), world, validate=True)
    _check_class_count(cfg, train_set)
    summaries = {}
    for st in stages:
        out_dir = out_root / st
        trainer = Trainer(cfg, st, out_dir, resume, argv)
        if (resume and (out_dir / "summary.json").is_file()
                and _finished(out_dir / "last.pt", trainer.total)):
            summaries[st] = json.loads((out_dir / "summary.json").read_text())
            if trainer.main:
                print(f"[{st}] already finished in {out_dir}; skipping", flush=True)
            continue
        init_state = None
        if st == "stage2":
            init_path = Path(cfg["stage2"]["init"] or out_root / "stage1" / "best.pt")
            if not init_path.is_file():
                raise FileNotFoundError(f"stage 2 starts from a stage-1 checkpoint; not found: {init_path} "
                                        f"(run --stage stage1 first or set stage2.init)")
            init_state = load_network_state(init_path)
        trainer.setup(train_set, val_set, init_state)
        summaries[st] = trainer.run()
    return summaries


def _finished(last: Path, total: int) -> bool:
    if not last.is_file():
        return False
    return checkpoint_iteration(last) >= total


def _check_class_count(cfg: dict, train_set) -> None:
    k = len(train_set.class_names)
    names = cfg["text"].get("prompt_names")
    if names is not None and len(names) != k:
        raise ConfigError(f"text.prompt_names lists {len(names)} names but dataset "
                          f"{cfg['data']['dataset']} has {k} classes")
    if cfg["model"]["guidance"] and cfg["text"]["type"] == "precomputed" and cfg["text"]["path"]:
        path = Path(cfg["text"]["path"])
        if path.is_file():
            try:
                with np.load(path) as data:
                    n = data["embeddings"].shape[0] if "embeddings" in data.files else None
            except Exception:  # noqa: BLE001 - the text encoder reports the unreadable file with its own message
                n = None
            if n is not None and n != k:
                raise ConfigError(f"text embeddings {path} have {n} classes but dataset "
                                  f"{cfg['data']['dataset']} has {k}")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="clipseg-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="YAML config (see training/configs)")
    parser.add_argument("--stage", choices=STAGE_CHOICES, default=None,
                        help="baseline (no guidance), stage1, stage2, or both (stage1 then stage2); "
                             "default run.stage from the config, else both (baseline when unguided)")
    parser.add_argument("--resume", action="store_true", help="continue from <out_dir>/<stage>/last.pt")
    parser.add_argument("--out", "--out-dir", dest="out_dir", help="shortcut for run.out_dir=...")
    parser.add_argument("--seed", type=int, help="shortcut for run.seed=...")
    parser.add_argument("--export", metavar="PATH", help="export the final best model to this .clipseg file")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. stage1.iters=500 data.batch_size=4")
    args = parser.parse_intermixed_args(argv)
    overrides = list(args.overrides)
    if args.out_dir:
        overrides.append(f"run.out_dir={args.out_dir}")
    if args.seed is not None:
        overrides.append(f"run.seed={args.seed}")
    try:
        from .datasets import DatasetError
    except ImportError:  # pragma: no cover
        DatasetError = ValueError
    try:
        cfg = load_config(args.config, overrides)
        stage = args.stage or cfg["run"]["stage"] or ("both" if cfg["model"]["guidance"] else "baseline")
        if stage not in STAGE_CHOICES:
            raise ConfigError(f"run.stage {stage!r} is not one of {', '.join(STAGE_CHOICES)}")
        if stage == "baseline":
            cfg["model"]["guidance"] = False
        summaries = train(cfg, stage, args.resume, ["clipseg-train"] + argv)
    except StopRequested:
        print("clipseg-train: stopped by signal; checkpoint saved, continue with --resume", file=sys.stderr)
        return 130
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"clipseg-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            # every rank reaches teardown together (gloo aborts if a peer disappears mid-call)
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()
    for st, s in summaries.items():
        print(f"[{st}] best val mIoU {s['best_miou']:.2f} at iteration {s['best_iteration']} "
              f"({s['train_seconds']:.0f} s)")
    if args.export and int(os.environ.get("RANK", "0")) == 0:
        last_stage = list(summaries)[-1]
        export_checkpoint(Path(cfg["run"]["out_dir"]) / last_stage / "best.pt", args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
