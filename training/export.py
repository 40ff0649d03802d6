"""``clipseg-export``: a training checkpoint → the single ``.clipseg`` file the node loads.

The network is exported with its text classifier T baked in (no text encoder at run time), the
training-only heads dropped, and metadata (class names, palette, input size, mean/std, recipe,
validation metrics).  The file is then loaded back through the runtime's own loader, with every
backend available here, and checked against the checkpoint's PyTorch output on a sample image:

- labels must agree on at least ``LABEL_AGREEMENT`` of the pixels (compact float16 storage can
  flip pixels whose two best classes are within rounding of each other);
- confidence must agree within ``CONF_TOL`` (absolute).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint_network

LABEL_AGREEMENT = 0.995
CONF_TOL = 2e-2


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001 - no git, not a repository, ...: the commit is just not recorded
        return None


def _palette_for(dataset: str, k: int):
    from clipseg_ros import visualize

    if dataset == "camvid" and k == 11:
        return visualize.CAMVID_PALETTE
    if dataset == "cityscapes" and k == 19:
        return visualize.CITYSCAPES_PALETTE
    return visualize.default_palette(k)


def export_checkpoint(checkpoint, out, input_size=None, onnx: bool = True, compact: bool | None = None,
                      sample_image=None, verify: bool = True) -> dict:
    """Export and verify; returns the verification report."""
    from clipseg_ros.model_file import save_model_file

    net, ckpt = load_checkpoint_network(checkpoint)
    cfg = ckpt["config"]
    size = input_size or cfg["export"]["input_size"] or cfg["data"]["crop_size"]
    compact = cfg["export"]["compact"] if compact is None else compact
    val = ckpt.get("val") or {}
    provenance = {
        "stage": ckpt["stage"], "iteration": ckpt.get("iteration"),
        "checkpoint": str(checkpoint), "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": _git_commit(), "dataset": cfg["data"]["dataset"],
        "train_split": cfg["data"]["train_split"], "val_split": cfg["data"]["val_split"],
        "recipe": {k: cfg[k] for k in ("model", "text", "prompt", "data", "loss", "optim", "stage1", "stage2")},
        "info": ckpt.get("info"),
        "val_miou": val.get("miou"),
        "val_per_class_iou": val.get("iou"),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    meta = save_model_file(out, net, ckpt["class_names"],
                           palette=_palette_for(cfg["data"]["dataset"], len(ckpt["class_names"])),
                           input_size=list(size), mean=cfg["data"]["mean"], std=cfg["data"]["std"],
                           provenance=provenance, onnx=onnx if onnx is not None else cfg["export"]["onnx"],
                           compact=compact)
    report = {"file": str(out), "classes": len(meta.class_names), "input_size": list(size)}
    if verify:
        report["verify"] = verify_export(net, out, cfg["data"]["mean"], cfg["data"]["std"], size, sample_image)
    return report


def verify_export(net, path, mean, std, size, sample_image=None) -> dict:
    """Compare the exported file (every backend available) with the PyTorch network."""
    from clipseg_ros.networks import DeployWrapper
    from clipseg_ros.segmenter import Segmenter

    h, w = int(size[0]), int(size[1])
    if sample_image is None:
        rng = np.random.default_rng(0)
        # smooth random image: more realistic logits than white noise
        small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
        import cv2
        sample_image = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    ref_wrapper = DeployWrapper(net.eval(), mean, std).eval()
    with torch.no_grad():
        import cv2
        img = sample_image if sample_image.shape[:2] == (h, w) else cv2.resize(sample_image, (w, h))
        ref_labels, ref_conf = ref_wrapper(torch.from_numpy(np.ascontiguousarray(img))[None])
    ref_labels, ref_conf = ref_labels[0].numpy(), ref_conf[0].numpy()
    results = {}
    backends = ["torch"]
    try:
        import onnxruntime  # noqa: F401
        backends.append("onnxruntime")
    except ImportError:
        pass
    for backend in backends:
        seg = Segmenter(path, device="cpu", backend=backend)
        if backend == "onnxruntime" and seg.model.onnx_bytes is None:
            continue
        r = seg(img, want_confidence=True)
        agree = float((r.labels == ref_labels).mean())
        conf_err = float(np.abs(r.confidence - ref_conf).max())
        ok = agree >= LABEL_AGREEMENT and conf_err <= CONF_TOL
        results[backend] = {"label_agreement": agree, "max_conf_error": conf_err, "ok": ok}
        if not ok:
            raise RuntimeError(
                f"exported {path} does not reproduce the PyTorch output with backend {backend}: "
                f"label agreement {agree:.5f} (need >= {LABEL_AGREEMENT}), max confidence error "
                f"{conf_err:.2e} (need <= {CONF_TOL})")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="clipseg-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="training checkpoint (e.g. runs/x/stage2/best.pt)")
    parser.add_argument("out", help="output model file (.clipseg)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="resolution the model runs at (default export.input_size or the crop)")
    parser.add_argument("--no-onnx", action="store_true", help="omit the ONNX graph")
    parser.add_argument("--full-precision", action="store_true", help="store float32 weights (bigger file)")
    parser.add_argument("--sample", help="image file to verify on (default: a synthetic image)")
    parser.add_argument("--int8-calib", type=Path, default=None, metavar="DIR_OR_BAG",
                        help="also add the int8 CPU graph, calibrated on these frames (clipseg_ros.quantize)")
    parser.add_argument("--int8-val-bag", type=Path, default=None, metavar="BAG",
                        help="with --int8-calib: the labelled bag both graphs' val mIoU is measured on")
    parser.add_argument("--int8-count", type=int, default=300, help="int8 calibration frames (default 300)")
    args = parser.parse_args(argv)
    if args.int8_val_bag is not None and args.int8_calib is None:
        print("clipseg-export: error: --int8-val-bag needs --int8-calib", file=sys.stderr)
        return 2
    sample = None
    if args.sample:
        import cv2
        img = cv2.imread(args.sample, cv2.IMREAD_COLOR)
        if img is None:
            print(f"clipseg-export: error: cannot read sample image {args.sample}", file=sys.stderr)
            return 2
        sample = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:
        report = export_checkpoint(args.checkpoint, args.out, args.input_size, onnx=not args.no_onnx,
                                   compact=False if args.full_precision else None, sample_image=sample)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"clipseg-export: error: {exc}", file=sys.stderr)
        return 2
    if args.int8_calib is not None:
        from clipseg_ros.model_file import ModelFileError
        from clipseg_ros.quantize import QuantizeError, add_int8_member

        try:
            rec = add_int8_member(Path(args.out), Path(args.out), args.int8_calib, count=args.int8_count,
                                  val_bag=args.int8_val_bag)
        except (QuantizeError, ModelFileError) as exc:
            print(f"clipseg-export: error: int8: {exc} ({args.out} was written without an int8 graph)",
                  file=sys.stderr)
            return 2
        print(f"  int8: agreement with PyTorch {rec['agreement_with_torch']}, val mIoU {rec['val_miou']} "
              f"(fp32 {rec['fp32_val_miou']})")
    size_mb = Path(args.out).stat().st_size / 1e6
    print(f"wrote {args.out} ({size_mb:.1f} MB, {report['classes']} classes, input {report['input_size']})")
    for backend, r in report.get("verify", {}).items():
        print(f"  verified {backend}: label agreement {r['label_agreement']:.5f} (>= {LABEL_AGREEMENT}), "
              f"max confidence error {r['max_conf_error']:.1e} (<= {CONF_TOL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
