"""``clipseg-bag-eval offline``: run the model on every frame of a bag, in this process.

Per frame: decode the image (Image or CompressedImage), time one segmenter call (the per-frame
inference latency: preprocess + inference + postprocess, excluding bag reading and decoding),
and, when the bag has ground truth, accumulate the confusion matrix of
:class:`clipseg_ros.metrics.ConfusionMatrix` (the same code as ``clipseg-eval``).
The first frame is run ``--warmup`` times before timing starts (not counted).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import EvalConfig, OfflineConfig
from ..machine import latency_summary, machine_info
from .reader import BagError, LabelMapper, open_bag, parse_label_map
from .report import SampleCollector, model_info, sample_positions, write_results

__all__ = ["run_offline", "expected_frames", "common_results"]


def expected_frames(count: int, every: int = 1, limit: int | None = None) -> int:
    n = (count + every - 1) // every if count > 0 else 0
    return min(n, limit) if limit is not None else n


def common_results(mode: str, cfg: EvalConfig, bag, model: dict) -> dict:
    info = bag.info()
    info.update(image_topic=bag.image_topic, image_type=bag.image_type, label_topic=bag.label_topic,
                label_type=bag.label_type)
    return {"tool": "clipseg-bag-eval", "mode": mode,
            "config": {"args": cfg.record(), "argv": cfg.argv}, "bag": info, "model": model,
            "machine": machine_info(model.get("threads"), model.get("device"))}


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", dynamic_ncols=True, leave=False)


def run_offline(cfg: OfflineConfig) -> dict:
    from ..metrics import ConfusionMatrix
    from ..segmenter import Segmenter

    from ..model_file import ModelFile

    label_map = parse_label_map(cfg.label_map)
    out_dir = Path(cfg.out)
    with open_bag(cfg.bag) as bag:
        bag.select_topics(cfg.image_topic, cfg.label_topic)
        mapper = LabelMapper(label_map, ModelFile(cfg.model).meta.num_classes)
        seg = Segmenter(cfg.model, device=cfg.device, backend=cfg.backend, precision=cfg.precision,
                        threads=cfg.threads, input_size=cfg.input_size)
        num_classes = len(seg.class_names)
        total = expected_frames(bag.image_count(), cfg.every, cfg.limit)
        results = common_results("offline", cfg, bag, model_info(
            cfg.model, seg.meta, backend=seg.backend, device=seg.device, precision=seg.precision,
            threads=cfg.threads, description=seg.description, input_size=seg.input_size))
        results["label_map"] = mapper.to_json()
        cm = ConfusionMatrix(num_classes)
        samples = SampleCollector(seg.palette, sample_positions(total, cfg.samples))
        outbag = None
        if cfg.output_bag:
            from .writer import OutputBag

            outbag = OutputBag(cfg.output_bag, cfg.output_storage or bag.storage, bag.image_topic,
                               bag.image_connection(), cfg.output_prefix, seg.palette)
        latencies, stamps, positions = [], [], []
        stages = {"decode": [], "preprocess": [], "inference": [], "postprocess": []}
        processed = with_gt = 0
        ok = False
        t_start = None
        try:
            frames = bag.frames(mapper, limit=cfg.limit, every=cfg.every)
            for pos, frame in enumerate(_progress(frames, total, not cfg.no_progress, "offline")):
                t0 = time.perf_counter()
                rgb = frame.rgb
                t_dec = time.perf_counter() - t0
                if pos == 0:
                    for _ in range(max(0, cfg.warmup)):
                        seg(rgb)
                    t_start = time.perf_counter()
                t0 = time.perf_counter()
                res = seg(rgb)
                dt = time.perf_counter() - t0
                labels = res.labels
                latencies.append(dt)
                positions.append(pos)
                stamps.append(frame.stamp_ns)
                stages["decode"].append(t_dec)
                for k in ("preprocess", "inference", "postprocess"):
                    stages[k].append(res.timings.get(k, float("nan")))
                if frame.gt is not None:
                    cm.update(labels, frame.gt)
                    with_gt += 1
                if samples.wants(pos):
                    samples.add(pos, frame, labels)
                if outbag is not None:
                    outbag.write(frame, labels)
                processed += 1
            ok = True
        finally:
            if outbag is not None:
                outbag.close() if ok else outbag.abort()
        wall = time.perf_counter() - t_start if t_start is not None else 0.0
        results["bag"]["reader_stats"] = dict(bag.stats)
    if processed == 0:
        raise BagError(f"bag {cfg.bag} has no frames on {results['bag']['image_topic']}")
    results["frames"] = {"total": processed, "processed": processed, "with_gt": with_gt,
                         "without_gt": processed - with_gt, "dropped": 0, "rejected": 0}
    results["latency_ms"] = latency_summary(latencies)
    results["latency_breakdown_ms"] = {k: latency_summary(v) for k, v in stages.items()}
    results["rate"] = {"achieved_hz": processed / wall if wall > 0 else None,
                       "model_hz": 1.0 / float(np.median(latencies)) if latencies else None,
                       "wall_s": wall}
    results["per_frame"] = [{"position": p, "stamp_ns": s, "latency_ms": 1000.0 * v}
                            for p, s, v in zip(positions, stamps, latencies)]
    if outbag is not None:
        results["output_bag"] = {"path": str(outbag.path), "topics": outbag.topics, "frames": outbag.count}
    return write_results(out_dir, results, cm=cm, class_names=seg.class_names, latencies_s=latencies,
                         latency_frames=positions, samples=samples, quiet=cfg.quiet)
