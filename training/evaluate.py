"""``clipseg-eval``: mIoU over a whole split from accumulated confusion counts.

Evaluates a training checkpoint (``--checkpoint``) or an exported model file (``--model``) on a
dataset split at native resolution (or ``data.eval_size``), optionally with horizontal flip and
multi-scale averaging of the softmax.  Writes ``metrics.json``, a Markdown table, a normalised
confusion-matrix PNG and a per-class IoU bar chart.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from clipseg_ros import devices
from clipseg_ros.atomic_files import atomic_write_text
from torch.nn import functional as F

from clipseg_ros.metrics import ConfusionMatrix, format_table, plot_confusion, plot_per_class_iou

from .checkpoint import load_checkpoint_network


@torch.no_grad()
def predict_logits(net, images: torch.Tensor, text=None, flip: bool = False,
                   scales=(1.0,), out_size=None, head: str = "logits") -> torch.Tensor:
    """Class probabilities (B,K,H,W) at ``out_size`` (default the input size), averaged over
    flips and scales.  ``head="score_map"`` predicts from the textual score map S alone (the
    cosine similarities to the class embeddings at 1/32 scale): a diagnostic of what the text
    branch has learned."""
    h, w = out_size if out_size is not None else images.shape[-2:]
    total = None
    for s in scales:
        x = images if s == 1.0 else F.interpolate(images, scale_factor=s, mode="bilinear",
                                                   align_corners=False)
        views = [x, x.flip(-1)] if flip else [x]
        for i, v in enumerate(views):
            out = net(v, text)
            if head not in out:
                raise ValueError(f"the network has no {head!r} output (score_map needs a guided model)")
            logits = out[head]
            if i == 1:
                logits = logits.flip(-1)
            prob = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False).softmax(1)
            total = prob if total is None else total + prob
    return total


@torch.no_grad()
def evaluate(net, loader, num_classes: int, device, text=None, flip=False, scales=(1.0,),
             progress: bool = False, distributed: bool = False, head: str = "logits",
             autocast=None, memory_format=torch.contiguous_format) -> ConfusionMatrix:
    """Accumulate a confusion matrix over ``loader`` (dicts with image, label; or lists of such
    dicts, for batches of differently sized frames).  ``autocast``: a callable returning the
    context the forward passes run in (the training precision); the softmax, the upsampling and
    the argmax run on fp32 logits."""
    was_training = net.training
    net.eval()
    cm = ConfusionMatrix(num_classes)
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc="eval", unit="batch", leave=False, dynamic_ncols=True)
    for batch in it:
        for part in batch if isinstance(batch, list) else [batch]:
            images = part["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            labels = part["label"]
            # images may be resized (data.eval_size); predictions are compared at label resolution
            with autocast() if autocast is not None else nullcontext():
                prob = predict_logits(net, images, text, flip, scales, out_size=labels.shape[-2:], head=head)
            pred = prob.float().argmax(1).cpu().numpy()
            cm.update(pred, labels.numpy())
    if distributed and torch.distributed.is_initialized():
        counts = torch.from_numpy(cm.counts.copy())
        torch.distributed.all_reduce(counts)
        cm.counts[...] = counts.numpy()
    net.train(was_training)
    return cm


def ablated_text(net, how: str) -> torch.Tensor:
    """Class embeddings that take the class information out of the score map S, to measure how
    much the final prediction relies on it: ``shuffle`` gives channel k the embedding of class
    k+1 (S keeps its statistics but names the wrong classes); ``mean`` gives every channel the mean
    class embedding (all K channels of S become the same map)."""
    guidance = getattr(net, "text_guidance", None)
    if guidance is None or not hasattr(guidance, "text_embeddings"):
        raise ValueError("--ablate-text needs a guided training checkpoint (baselines and exported "
                         "models with the text folded in have no replaceable class embeddings)")
    t = guidance.text_embeddings.detach().clone()
    if how == "shuffle":
        return t.roll(-1, dims=0)
    if how == "mean":
        return F.normalize(t, dim=-1).mean(0, keepdim=True).expand_as(t).clone()
    raise ValueError(f"--ablate-text {how!r} is not one of shuffle, mean")


def write_report(cm: ConfusionMatrix, class_names, out_dir: Path, extra: dict | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = cm.compute()
    payload = {**(extra or {}), "metrics": cm.to_json_dict(class_names)}
    atomic_write_text(out_dir / "metrics.json", json.dumps(payload, indent=2))
    (out_dir / "metrics.md").write_text(format_table(result, class_names) + "\n")
    plot_confusion(cm.counts, class_names, out_dir / "confusion.png")
    plot_per_class_iou(result, class_names, out_dir / "per_class_iou.png")
    return result


def _load_network(args, device):
    """(net, class_names, mean, std, text_source_note) from a checkpoint or a model file."""
    if args.model:
        from clipseg_ros.model_file import ModelFile

        mf = ModelFile(args.model)
        return (mf.build_network().to(device), mf.meta.class_names, mf.meta.mean, mf.meta.std,
                {"model_file": str(args.model), "provenance": mf.meta.provenance}, None)
    net, ckpt = load_checkpoint_network(args.checkpoint, device)
    cfg = ckpt["config"]
    return (net, ckpt["class_names"], cfg["data"]["mean"], cfg["data"]["std"],
            {"checkpoint": str(args.checkpoint), "stage": ckpt.get("stage")}, cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clipseg-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="training checkpoint (best.pt / last.pt)")
    src.add_argument("--model", help="exported .clipseg model file")
    parser.add_argument("--config", help="config file for the dataset (default: the checkpoint's)")
    parser.add_argument("--split", default=None, help="dataset split (default data.val_split)")
    parser.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    parser.add_argument("--scales", default="1.0", help="comma-separated scales, e.g. 0.75,1.0,1.25")
    parser.add_argument("--head", default="logits", choices=("logits", "score_map"),
                        help="predict from the segmentation head (default) or from the textual score "
                             "map S alone (diagnostic of the text branch; guided models only)")
    parser.add_argument("--ablate-text", default=None, choices=("shuffle", "mean"),
                        help="diagnostic: evaluate with the class embeddings permuted (shuffle) or all "
                             "replaced by their mean (mean), to measure how much the prediction uses S")
    parser.add_argument("--out", default=None, help="output folder (default next to the checkpoint/model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    args = parser.parse_args(argv)

    from .config import ConfigError, load_config
    from .datasets import DatasetError, build_dataset
    from .transforms import eval_preset

    if args.ablate_text and args.model:
        parser.error(f"--ablate-text works on training checkpoints (--checkpoint), not on the model file {args.model}")
    try:
        device = torch.device(devices.resolve_device(args.device, onnxruntime=False))
        net, class_names, mean, std, source, ckpt_cfg = _load_network(args, device)
        cfg = load_config(args.config or ckpt_cfg, args.overrides)
        d = cfg["data"]
        split = args.split or d["val_split"]
        dataset = build_dataset(d["dataset"], d["root"], split,
                                eval_preset(size=d["eval_size"], mean=mean, std=std),
                                classes_file=d["classes_file"])
        if len(dataset.class_names) != len(class_names):
            raise ValueError(f"dataset {d['dataset']} has {len(dataset.class_names)} classes but the "
                             f"model predicts {len(class_names)}")
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=False,
                                             num_workers=args.workers)
        scales = tuple(float(s) for s in args.scales.split(","))
        t0 = time.time()
        if args.head == "score_map" and getattr(net, "text_guidance", None) is None:
            raise ValueError(f"--head score_map: {args.checkpoint or args.model} has no textual guidance "
                             "(a baseline model)")
        text = ablated_text(net, args.ablate_text).to(device) if args.ablate_text else None
        cm = evaluate(net, loader, len(class_names), device, text=text, flip=args.flip, scales=scales,
                      progress=True, head=args.head)
        out = Path(args.out) if args.out else Path(args.checkpoint or args.model).with_suffix("").parent / (
            f"eval_{split}" + ("" if args.head == "logits" else f"_{args.head}")
            + (f"_ablate-{args.ablate_text}" if args.ablate_text else ""))
        result = write_report(cm, class_names, out, {
            **source, "dataset": d["dataset"], "root": str(d["root"]), "split": split,
            "images": len(dataset), "flip": args.flip, "scales": list(scales), "head": args.head,
            "ablate_text": args.ablate_text,
            "seconds": round(time.time() - t0, 1)})
    except (ConfigError, DatasetError, FileNotFoundError, ValueError) as exc:
        print(f"clipseg-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result, class_names))
    print(f"mIoU {result['miou']:.2f}  pixel acc {result['pixel_accuracy']:.2f}  -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
