"""Where to upsample: the logits (bilinear, before the argmax) or the labels (nearest, after it)?

    python -m clipseg_ros.bench.boundaries [--model FILE] [--bag DIR] [--out DIR] [--threads N]

A model whose input size is smaller than the camera frame (the shipped CamVid model runs at
240x320 on 360x480 frames) can be brought back to the frame size in two ways:

- ``labels``: argmax at the model's resolution, then nearest-neighbour resize of the label image
  (what the node does today: ``Segmenter`` resizes the labels back);
- ``logits``: bilinear resize of the class logits to the frame size, then the argmax there.

Both run the same network (PyTorch, CPU) on the same resized frames of a labelled bag (default:
the sample bag, 101 CamVid val frames); the tool reports val mIoU, per-class IoU and the time of
the upsampling + argmax step for each, interleaved frame by frame, as JSON + Markdown.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2

from ..machine import latency_summary, machine_info
from .catalogue import PACKAGED_DEFAULT, REPO, shown_path

DEFAULT_BAG = REPO / "data" / "sample_bag" / "camvid_val_sample"
MODES = ("labels", "logits")


def evaluate(model: str | Path, bag: str | Path, threads: int = 2, limit: int | None = None,
             progress: bool = True) -> dict:
    import torch
    from torch.nn import functional as F

    from ..bag.reader import LabelMapper, open_bag
    from ..metrics import ConfusionMatrix
    from ..model_file import ModelFile

    torch.set_num_threads(threads)
    mf = ModelFile(model)
    meta = mf.meta
    net = mf.build_network().eval()
    from ..networks.deploy import inference_network

    net = inference_network(net)
    mean = torch.tensor(meta.mean, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(meta.std, dtype=torch.float32).view(1, 3, 1, 1)
    cms = {m: ConfusionMatrix(meta.num_classes) for m in MODES}
    times = {m: [] for m in MODES}
    frames_done = 0
    with open_bag(bag) as src:
        src.select_topics(None, "auto")
        mapper = LabelMapper(None, meta.num_classes)
        frames = src.frames(mapper, limit=limit)
        if progress:
            from tqdm import tqdm

            frames = tqdm(frames, total=limit or src.image_count(), desc="boundaries", unit="frame")
        for frame in frames:
            if frame.gt is None:
                continue
            rgb = frame.rgb
            h, w = rgb.shape[:2]
            mh, mw = meta.input_size or (h, w)
            small = cv2.resize(rgb, (mw, mh), interpolation=cv2.INTER_LINEAR)
            with torch.inference_mode():
                x = (torch.from_numpy(small).permute(2, 0, 1)[None].float() - mean) * inv_std
                logits = net(x)["logits"]
                logits = F.interpolate(logits, size=(mh, mw), mode="bilinear", align_corners=False)
                # interleave the two variants' order so neither always runs on a warm cache
                order = MODES if frames_done % 2 == 0 else MODES[::-1]
                for mode in order:
                    t0 = time.perf_counter()
                    if mode == "labels":
                        lab = logits.argmax(1)[0].to(torch.uint8).numpy()
                        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
                    else:
                        up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
                        lab = up.argmax(1)[0].to(torch.uint8).numpy()
                    times[mode].append(time.perf_counter() - t0)
                    cms[mode].update(lab, frame.gt)
            frames_done += 1
    if not frames_done:
        raise SystemExit(f"bag {bag}: no frame has a ground-truth label; nothing to compare")
    out = {"model": shown_path(model), "bag": shown_path(bag), "frames": frames_done,
           "model_input_size": meta.input_size, "frame_size": [int(h), int(w)],
           "machine": machine_info(threads), "modes": {}}
    for mode in MODES:
        res = cms[mode].to_json_dict(meta.class_names)
        per_class = {n: (None if v is None else 100.0 * v) for n, v in zip(res["class_names"], res["iou"])}
        out["modes"][mode] = {"miou": res["miou"], "per_class_iou": per_class,
                              "upsample_argmax_ms": latency_summary(times[mode])}
    return out


def format_markdown(result: dict) -> str:
    a, b = result["modes"]["labels"], result["modes"]["logits"]
    names = list(a["per_class_iou"])
    lines = [f"# Upsampling logits vs labels ({result['frames']} frames of `{Path(result['bag']).name}`)", "",
             f"Model `{Path(result['model']).name}` at {result['model_input_size']} on "
             f"{result['frame_size']} frames. Command: `python -m clipseg_ros.bench.boundaries`.", "",
             "| | labels: argmax, then nearest | logits: bilinear, then argmax | difference |",
             "|---|---:|---:|---:|"]

    def row(name, x, y):
        if x is None or y is None:
            return f"| {name} | {x} | {y} | |"
        return f"| {name} | {x:.2f} | {y:.2f} | {y - x:+.2f} |"

    lines.append(row("**mIoU**", a["miou"], b["miou"]))
    for n in names:
        lines.append(row(n, a["per_class_iou"][n], b["per_class_iou"][n]))
    ta, tb = a["upsample_argmax_ms"], b["upsample_argmax_ms"]
    lines += ["", f"Upsampling + argmax step, median ms: labels {ta['median_ms']:.2f}, logits "
              f"{tb['median_ms']:.2f} (p90 {ta['p90_ms']:.2f} / {tb['p90_ms']:.2f}); "
              f"machine: {result['machine'].get('cpu_model')}, {result['machine'].get('threads')} threads.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m clipseg_ros.bench.boundaries", description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(PACKAGED_DEFAULT), help="model file (default: the bundled model)")
    p.add_argument("--bag", default=str(DEFAULT_BAG), help="labelled bag (default: the sample bag)")
    p.add_argument("--out", default="bench_results/boundaries", help="output folder (JSON + Markdown)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="at most this many frames")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    result = evaluate(a.model, a.bag, a.threads, a.limit, progress=not a.no_progress)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "boundaries.json").write_text(json.dumps(result, indent=2))
    md = format_markdown(result)
    (out / "boundaries.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
