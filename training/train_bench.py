"""``clipseg-bench --train``: training throughput of the REAL training step.

For each variant (precision x memory format, optionally ``torch.compile`` and loader workers) it
builds the real :class:`~clipseg_training.train.Trainer` from a training config (all heads and
losses, the real optimiser, the real dataset, cache and loader) and times
:meth:`Trainer.step` plus the wait for the next batch.  Variants run interleaved, in rounds of
``--block`` iterations each, so that a machine whose load changes during the run affects all of
them alike.  Writes ``train_bench.json`` (machine description, settings, per-variant samples and
summary) and ``train_bench.md``.

    clipseg-bench --train [--config CFG] [--crop 360x480] [--batch 8] [--iters 12]
                  [--variants fp32:contiguous,bf16:channels_last,...] [--workers 0] [--out DIR]

Also ``--whole-run``: times complete ``clipseg-train`` processes (start-up, data caching,
training and validation included), one per variant, back to back.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from clipseg_ros.atomic_files import atomic_write_text

DEFAULT_CONFIG = "training/configs/camvid-mobilenetv2-stage1-clip_rn50-240x320.yaml"
DEFAULT_VARIANTS = "fp32:contiguous,fp32:channels_last,bf16:contiguous,bf16:channels_last"


def parse_variants(text: str) -> list[dict]:
    """``precision:memory_format[:compile][:wN]`` items, comma separated."""
    from .precision import PRECISIONS

    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        parts = item.split(":")
        prec = parts[0]
        if prec not in PRECISIONS:
            raise ValueError(f"variant {item!r}: precision {prec!r} is not one of {', '.join(PRECISIONS)}")
        fmt = parts[1] if len(parts) > 1 else "channels_last"
        if fmt not in ("contiguous", "channels_last"):
            raise ValueError(f"variant {item!r}: memory format {fmt!r} is not contiguous or channels_last")
        v = {"name": item, "precision": prec, "channels_last": fmt == "channels_last", "compile": False,
             "workers": None}
        for extra in parts[2:]:
            if extra == "compile":
                v["compile"] = True
            elif extra.startswith("w") and extra[1:].isdigit():
                v["workers"] = int(extra[1:])
            else:
                raise ValueError(f"variant {item!r}: unknown option {extra!r} (compile or wN)")
        out.append(v)
    if not out:
        raise ValueError("no variants given")
    return out


def _overrides(args, v: dict) -> list[str]:
    h, w = args.crop
    workers = v["workers"] if v["workers"] is not None else args.workers
    return [f"run.precision={v['precision']}", f"run.channels_last={str(v['channels_last']).lower()}",
            f"run.compile={str(v['compile']).lower()}", f"data.crop_size=[{h},{w}]",
            f"data.batch_size={args.batch}", f"data.workers={workers}", "run.progress=false",
            f"data.cache_mb={args.cache_mb}", f"run.threads={args.threads}"] + list(args.override)


class _Variant:
    """One Trainer and its endless loader."""

    def __init__(self, cfg, v, train_set, out_dir: Path):
        from .sampling import make_loader
        from .train import Trainer

        self.v = v
        self.trainer = Trainer(cfg, "stage1" if cfg["model"]["guidance"] else "baseline", out_dir, False)
        t0 = time.perf_counter()
        self.trainer.setup(train_set, None)
        self.setup_s = time.perf_counter() - t0
        self.train_set = train_set
        self.make_loader = make_loader
        self.epoch = 0
        self._new_iter()
        self.step_s: list[float] = []
        self.data_s: list[float] = []
        self.phases: list[dict] = []
        self.first_step_s = None

    def _new_iter(self):
        t = self.trainer
        t.sampler.set_epoch(self.epoch, 0)
        self.it = iter(self.make_loader(self.train_set, t.sampler, t.cfg["data"]["batch_size"],
                                        t.cfg["data"]["workers"], t.device))

    def next_batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.epoch += 1
            self._new_iter()
            return next(self.it)

    def run(self, n: int, record: bool = True):
        for _ in range(n):
            a = time.perf_counter()
            batch = self.next_batch()
            b = time.perf_counter()
            self.trainer.step(batch)
            c = time.perf_counter()
            if self.first_step_s is None:
                self.first_step_s = c - b
            if record:
                self.data_s.append(b - a)
                self.step_s.append(c - b)
                self.phases.append(dict(self.trainer.phase_seconds))


def _summary(v: _Variant, batch: int) -> dict:
    step = np.asarray(v.step_s)
    data = np.asarray(v.data_s)
    total = step + data
    med = float(np.median(total))
    return {
        "name": v.v["name"], "precision": v.trainer.precision.name,
        "precision_reason": v.trainer.precision.reason,
        "channels_last": v.v["channels_last"], "compile": v.v["compile"],
        "workers": v.trainer.cfg["data"]["workers"], "iterations": int(step.size),
        "setup_s": round(v.setup_s, 2), "first_step_s": round(v.first_step_s or 0.0, 2),
        "step_median_s": round(float(np.median(step)), 4), "data_median_s": round(float(np.median(data)), 4),
        "iteration_median_s": round(med, 4), "iteration_mean_s": round(float(total.mean()), 4),
        "data_fraction": round(float(data.sum() / total.sum()), 4),
        "phase_median_s": {k: round(float(np.median([p[k] for p in v.phases])), 4) for k in v.phases[0]},
        "images_per_s": round(batch / med, 3),
        "samples": {"step_s": [round(x, 4) for x in v.step_s], "data_s": [round(x, 4) for x in v.data_s]},
    }


def run_step_bench(args) -> dict:
    import torch

    from clipseg_ros.machine import machine_info

    from .config import load_config
    from .sampling import build_data

    variants = parse_variants(args.variants)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    base = load_config(args.config, _overrides(args, variants[0]))
    t0 = time.perf_counter()
    train_set, _ = build_data(base, 0, 1, validate=False)
    data_s = time.perf_counter() - t0
    out_dir = Path(args.out)
    runs = []
    for v in variants:
        cfg = load_config(args.config, _overrides(args, v))
        runs.append(_Variant(cfg, v, train_set, out_dir / "trainers" / v["name"].replace(":", "_")))
        print(f"train bench: {v['name']}: {runs[-1].trainer.precision.describe()}", flush=True)
    from tqdm import tqdm

    for r in runs:                              # warm-up (first iterations: allocation, compile)
        r.run(args.warmup, record=False)
    rounds = max(1, -(-args.iters // args.block))
    bar = tqdm(total=rounds * len(runs) * args.block, desc="train bench", unit="it", dynamic_ncols=True,
               disable=not args.progress)
    for _ in range(rounds):
        for r in runs:
            r.run(args.block)
            bar.update(args.block)
    bar.close()
    rows = [_summary(r, args.batch) for r in runs]
    ref = next((r for r in rows if r["precision"] == "fp32" and not r["channels_last"]), rows[0])
    for r in rows:
        r["speedup_vs_" + ref["name"].replace(":", "_")] = round(ref["iteration_median_s"] / r["iteration_median_s"], 3)
    return {
        "kind": "train_step", "machine": machine_info(threads),
        "settings": {"config": str(args.config), "crop": list(args.crop), "batch": args.batch,
                     "iters": args.iters, "warmup": args.warmup, "block": args.block,
                     "cache_mb": args.cache_mb, "overrides": list(args.override),
                     "dataset_load_s": round(data_s, 2), "reference": ref["name"]},
        "rows": rows,
    }


def run_whole(args) -> dict:
    """Complete ``clipseg-train`` runs, one per variant, back to back (wall time with start-up)."""
    from clipseg_ros.machine import machine_info

    variants = parse_variants(args.variants)
    machine = machine_info(args.threads)          # before the runs: the load they started under
    rows = []
    out_dir = Path(args.out)
    for v in variants:
        run_dir = out_dir / "whole" / v["name"].replace(":", "_")
        cmd = [sys.executable, "-m", "clipseg_training.train", str(args.config), "--out-dir", str(run_dir),
               "--seed", str(args.seed)] + _overrides(args, v) + [f"stage1.iters={args.iters}",
                                                                  f"run.val_interval={args.iters}",
                                                                  f"run.ckpt_interval={args.iters}"]
        print("train bench (whole run):", " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        (out_dir / "whole").mkdir(parents=True, exist_ok=True)
        (out_dir / "whole" / f"{v['name'].replace(':', '_')}.log").write_text(proc.stdout)
        if proc.returncode != 0:
            raise RuntimeError(f"whole run {v['name']} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}")
        stage = "stage1"
        summary = json.loads((run_dir / stage / "summary.json").read_text()) \
            if (run_dir / stage / "summary.json").is_file() else \
            json.loads((run_dir / "baseline" / "summary.json").read_text())
        rows.append({"name": v["name"], "wall_s": round(wall, 1), "train_seconds": summary["train_seconds"],
                     "best_miou": summary["best_miou"], "iterations": args.iters})
    ref = next((r for r in rows if r["name"].startswith("fp32")), rows[0])
    for r in rows:
        r["speedup_vs_" + ref["name"].replace(":", "_")] = round(ref["wall_s"] / r["wall_s"], 3)
    return {"kind": "train_whole", "machine": machine,
            "settings": {"config": str(args.config), "crop": list(args.crop), "batch": args.batch,
                         "iters": args.iters, "seed": args.seed, "overrides": list(args.override)},
            "rows": rows}


def format_markdown(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    lines = [f"# Training throughput ({'whole runs' if result['kind'] == 'train_whole' else 'training step'})", "",
             f"{m['cpu_model']}, {m['usable_cores']} usable cores, {m.get('threads')} threads, "
             f"GPU: {m.get('gpu') or 'none'}; torch {m['versions'].get('torch')}; {m['date']}; "
             f"load average at start {m.get('loadavg_start')}", "",
             f"Config `{s['config']}`, crop {s['crop'][0]}x{s['crop'][1]}, batch {s['batch']}, "
             f"{s['iters']} iterations" + (f" per variant (interleaved in blocks of {s['block']}, "
                                          f"{s['warmup']} warm-up)" if "block" in s else "") + ".", ""]
    if result["kind"] == "train_whole":
        lines += ["| variant | wall s | train s | val mIoU | speed-up |", "|---|---|---|---|---|"]
        for r in result["rows"]:
            sp = next(v for k, v in r.items() if k.startswith("speedup_vs_"))
            lines.append(f"| {r['name']} | {r['wall_s']:.1f} | {r['train_seconds']:.1f} | {r['best_miou']:.2f} "
                         f"| {sp:.2f}x |")
        return "\n".join(lines) + "\n"
    lines += ["| variant | precision | workers | s / iteration (median) | of which data | forward / loss / "
              "backward s | images/s | speed-up | first step s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sp = next(v for k, v in r.items() if k.startswith("speedup_vs_"))
        ph = r["phase_median_s"]
        lines.append(f"| {r['name']} | {r['precision']} | {r['workers']} | {r['iteration_median_s']:.3f} | "
                     f"{100 * r['data_fraction']:.1f} % | {ph['forward']:.2f} / {ph['loss']:.2f} / "
                     f"{ph['backward']:.2f} | {r['images_per_s']:.2f} | {sp:.2f}x | {r['first_step_s']:.1f} |")
    lines += ["", f"Speed-up relative to `{s['reference']}`; data = time waiting for the next batch "
                  f"(share of the summed iteration time)."]
    return "\n".join(lines) + "\n"


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"crop {text!r} must look like HEIGHTxWIDTH, e.g. 360x480") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"crop {text!r} is too small (at least 32x32)")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clipseg-bench --train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=DEFAULT_CONFIG, help="training config (default %(default)s)")
    p.add_argument("--crop", type=_size, default=(360, 480), help="training crop HEIGHTxWIDTH (default 360x480)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=12,
                   help="timed iterations per variant (whole runs: iterations per run)")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations per variant")
    p.add_argument("--block", type=int, default=3, help="iterations per variant per interleaving round")
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help="comma list of precision:memory_format[:compile][:wN] (default %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="loader workers (a variant's :wN overrides)")
    p.add_argument("--cache-mb", type=int, default=2048, help="data.cache_mb (0 = decode every item)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = library default)")
    p.add_argument("--whole-run", action="store_true", help="time complete clipseg-train runs instead")
    p.add_argument("--seed", type=int, default=0, help="whole runs: run.seed")
    p.add_argument("--out", default="outputs/train_bench", help="output folder")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("override", nargs="*", help="extra config overrides, e.g. model.guidance=false")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.iters < 1 or args.block < 1 or args.warmup < 0:
        print("clipseg-bench --train: --batch, --iters and --block must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    try:
        parse_variants(args.variants)
        result = run_whole(args) if args.whole_run else run_step_bench(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"clipseg-bench --train: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "train_whole" if args.whole_run else "train_bench"
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2))
    md = format_markdown(result)
    (out / f"{name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
