"""int8 for CPUs: add a statically quantized graph to a model file.

    python -m clipseg_ros.quantize MODEL --calib DIR_OR_BAG [--val-bag BAG] [--out OUT]
                                   [--calib-count 300] [--min-agreement 0.9]

ONNX Runtime static quantization of the file's ``model.onnx``: QDQ format, per-channel int8
weights, uint8 activations, MinMax (or ``--calibration percentile | entropy``) calibration on
``--calib-count`` frames (resized whole frames
as the node feeds them, and random crops of them resized likewise: "training crops"), from a
folder of images (e.g. CamVid's train images) or a bag.  Only Conv layers are quantized; the
graph's preprocessing, upsampling and argmax stay float.  Then the graph is checked:

* against PyTorch (the file's ``weights.pt``, when torch is installed) and the fp32 ONNX graph on
  held-out frames: its labels must agree on at least ``--min-agreement`` of the pixels (int8 moves
  pixels near class boundaries; a broken quantization moves everything);
* with ``--val-bag`` (a bag with ground-truth labels, e.g. the sample bag), its val mIoU and the
  fp32 graph's are measured the way ``clipseg-bag-eval offline`` measures (labels at the frame's
  resolution) and recorded.

The result is the same model file with a ``model_int8.onnx`` member and an ``int8`` entry in
``meta.json`` (how it was made, agreement, both mIoUs, the latency of both graphs measured here).
The node uses it with ``precision: int8`` (CPU); ``precision: auto`` uses it only when the file
says it is within 0.5 mIoU of fp32 *and* it measures faster than fp32 on the robot at start-up.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from .model_file import INT8_NAME, META_NAME, ModelFile, ModelFileError, atomic_write_zip

__all__ = ["AUTO_MAX_MIOU_DROP", "QuantizeError", "add_int8_member", "calibration_frames", "quantize_graph"]

#: precision auto takes the int8 graph only when the file records a val mIoU at most this far
#: below fp32's.
AUTO_MAX_MIOU_DROP = 0.5
MIN_AGREEMENT = 0.9
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class QuantizeError(RuntimeError):
    """Quantization cannot be done or its result fails a check; the message says why."""


def _read_images(source: Path, limit: int) -> list[np.ndarray]:
    """RGB frames from a folder of images or a bag (at most ``limit``)."""
    import cv2

    if source.is_dir() and not (source / "metadata.yaml").exists():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise QuantizeError(f"calibration folder {source}: no images ({', '.join(_IMAGE_SUFFIXES)})")
        step = max(1, len(files) // limit)
        out = []
        for p in files[::step][:limit]:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise QuantizeError(f"calibration image {p} cannot be read")
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return out
    from .bag.reader import BagError, open_bag

    try:
        with open_bag(source) as src:
            src.select_topics(None, None)
            return [f.rgb for f in src.frames(None, limit=limit)]
    except BagError as exc:
        raise QuantizeError(f"calibration source {source}: {exc}") from None


def calibration_frames(images: list[np.ndarray], input_hw, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` uint8 HxWx3 frames at the model's input size: each image resized whole (what the
    node feeds the graph), then random crops (half to full size, random flips) resized likewise."""
    import cv2

    if not images:
        raise QuantizeError("no calibration images")
    h, w = input_hw
    rng = np.random.default_rng(seed)
    out = [cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR) for im in images[:count]]
    while len(out) < count:
        im = images[int(rng.integers(len(images)))]
        ih, iw = im.shape[:2]
        s = float(rng.uniform(0.5, 1.0))
        ch, cw = max(16, int(ih * s)), max(16, int(iw * s))
        y, x = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
        crop = im[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR))
    return out


CALIBRATIONS = ("minmax", "percentile", "entropy")


def quantize_graph(fp32_onnx: bytes, frames: list[np.ndarray], calibration: str = "minmax") -> bytes:
    """The QDQ int8 graph of ``fp32_onnx`` calibrated on ``frames`` (uint8 HxWx3 at input size),
    activation ranges by ``calibration`` (minmax, percentile = 99.999th, entropy)."""
    if calibration not in CALIBRATIONS:
        raise QuantizeError(f"calibration {calibration!r} is not one of {', '.join(CALIBRATIONS)}")
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise QuantizeError(f"int8 quantization needs onnxruntime (and onnx): {exc}") from None

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(frames)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {"image": np.ascontiguousarray(x)[None]}

    with tempfile.TemporaryDirectory(prefix="clipseg_quant_") as tmp:
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32_onnx)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - the pre-processing is an optimisation; quantize the original
            pre = src
        quantize_static(str(pre), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv"],
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[calibration])
        return dst.read_bytes()


def _session(onnx_bytes: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _labels(sess, frame: np.ndarray) -> np.ndarray:
    return sess.run(["labels"], {"image": np.ascontiguousarray(frame)[None]})[0][0]


def time_graphs(graphs: dict, frame: np.ndarray, threads: int, rounds: int = 15) -> dict:
    """Median ms per run of each graph on ``frame``, interleaved (one run of each per round)."""
    sessions = {k: _session(v, threads) for k, v in graphs.items()}
    for s in sessions.values():
        _labels(s, frame)
    times = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            _labels(s, frame)
            times[k].append(time.perf_counter() - t0)
    return {k: round(float(np.median(v)) * 1000.0, 3) for k, v in times.items()}


def _val_miou(graphs: dict, bag: Path, meta, threads: int) -> dict:
    """val mIoU of each graph on a labelled bag, frames resized to the input size and the labels
    back to the frame's (nearest), as the node does."""
    import cv2

    from .bag.reader import BagError, LabelMapper, open_bag
    from .metrics import ConfusionMatrix

    sessions = {k: _session(v, threads) for k, v in graphs.items()}
    cms = {k: ConfusionMatrix(meta.num_classes) for k in sessions}
    h, w = meta.input_size
    n = 0
    try:
        with open_bag(bag) as src:
            src.select_topics(None, "auto")
            for frame in src.frames(LabelMapper(None, meta.num_classes)):
                if frame.gt is None:
                    continue
                small = cv2.resize(frame.rgb, (w, h), interpolation=cv2.INTER_LINEAR)
                fh, fw = frame.rgb.shape[:2]
                for k, s in sessions.items():
                    lab = cv2.resize(_labels(s, small), (fw, fh), interpolation=cv2.INTER_NEAREST)
                    cms[k].update(lab, frame.gt)
                n += 1
    except BagError as exc:
        raise QuantizeError(f"--val-bag {bag}: {exc}") from None
    if not n:
        raise QuantizeError(f"--val-bag {bag}: no frame has a ground-truth label")
    out = {"frames": n}
    for k, cm in cms.items():
        res = cm.to_json_dict(meta.class_names)
        out[k] = {"miou": round(float(res["miou"]), 3),
                  "per_class_iou": {c: (None if v is None else round(100.0 * v, 2))
                                    for c, v in zip(res["class_names"], res["iou"])}}
    return out


def add_int8_member(model: Path, out: Path, calib: Path, *, count: int = 300, val_bag: Path | None = None,
                    min_agreement: float = MIN_AGREEMENT, threads: int = 2, seed: int = 0,
                    calibration: str = "minmax", log=print) -> dict:
    """Quantize ``model``'s graph, check it, and write ``out`` = the model file plus the int8
    member.  Returns the ``int8`` metadata entry.  Raises QuantizeError / ModelFileError."""
    mf = ModelFile(model)
    meta = mf.meta
    if mf.onnx_bytes is None:
        raise QuantizeError(f"model file {model} has no model.onnx to quantize")
    if not meta.input_size:
        raise QuantizeError(f"model file {model} has no fixed input_size; int8 calibration needs one")
    images = _read_images(Path(calib), count)
    # hold some frames back for the agreement check (not calibrated on)
    held = images[-max(4, len(images) // 10):] if len(images) > 8 else images
    calib_images = images[:len(images) - len(held)] if len(images) > 8 else images
    frames = calibration_frames(calib_images, meta.input_size, count, seed)
    log(f"calibrating on {len(frames)} frames ({len(calib_images)} images from {Path(calib).name})")
    t0 = time.perf_counter()
    int8 = quantize_graph(mf.onnx_bytes, frames, calibration)
    log(f"quantized in {time.perf_counter() - t0:.1f} s")
    check = calibration_frames(held, meta.input_size, len(held), seed + 1)
    s8, s32 = _session(int8, threads), _session(mf.onnx_bytes, threads)
    agree_onnx = float(np.mean([np.mean(_labels(s8, f) == _labels(s32, f)) for f in check]))
    agree_torch = None
    if mf.has_torch_weights:
        try:
            import torch  # noqa: F401

            from .segmenter import Segmenter

            ref = Segmenter(model, device="cpu", backend="torch", threads=threads)
            agree_torch = float(np.mean([np.mean(_labels(s8, f) == ref(f).labels) for f in check]))
        except ImportError:
            agree_torch = None
    worst = min(a for a in (agree_onnx, agree_torch) if a is not None)
    if worst < min_agreement:
        raise QuantizeError(
            f"the int8 graph of {model} agrees with fp32 on only {worst:.3f} of the pixels of {len(check)} "
            f"held-out frames (PyTorch {agree_torch}, ONNX fp32 {agree_onnx:.3f}; need >= "
            f"{min_agreement}): not written")
    entry = {
        "member": INT8_NAME,
        "quantization": f"onnxruntime static, QDQ, per-channel int8 weights, uint8 activations, "
                        f"{calibration} calibration, Conv layers",
        "calibration_frames": len(frames), "calibration_source": Path(calib).name,
        "agreement_with_torch": None if agree_torch is None else round(agree_torch, 5),
        "agreement_with_fp32_onnx": round(agree_onnx, 5), "agreement_frames": len(check),
        "val_miou": None, "fp32_val_miou": None, "val_source": None,
        "latency_ms": time_graphs({"fp32": mf.onnx_bytes, "int8": int8}, check[0], threads),
        "latency_threads": threads,
        "made": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if val_bag is not None:
        log(f"val mIoU of both graphs on {Path(val_bag).name}")
        val = _val_miou({"fp32": mf.onnx_bytes, "int8": int8}, Path(val_bag), meta, threads)
        entry.update(val_miou=val["int8"]["miou"], fp32_val_miou=val["fp32"]["miou"],
                     val_source=f"{Path(val_bag).name} ({val['frames']} frames)",
                     val_per_class_iou=val["int8"]["per_class_iou"],
                     fp32_val_per_class_iou=val["fp32"]["per_class_iou"])
    with zipfile.ZipFile(model) as zf:
        raw_meta = json.loads(zf.read(META_NAME))
        members = {n: zf.read(n) for n in zf.namelist() if n not in (META_NAME, INT8_NAME)}
    members[INT8_NAME] = int8
    raw_meta["members"] = {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}
    raw_meta["int8"] = entry
    atomic_write_zip(out, {META_NAME: json.dumps(raw_meta, indent=2).encode("utf-8"), **members})
    ModelFile(out)          # read back: the member, its sha256 and its class count check out
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clipseg_ros.quantize", description=__doc__.split("\n\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="the .clipseg file")
    ap.add_argument("--calib", type=Path, required=True,
                    help="calibration frames: a folder of images (e.g. CamVid train) or a bag")
    ap.add_argument("--calib-count", type=int, default=300, help="calibration frames (default 300)")
    ap.add_argument("--val-bag", type=Path, default=None, help="a labelled bag to measure both mIoUs on")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: replace MODEL)")
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    ap.add_argument("--calibration", choices=CALIBRATIONS, default="minmax",
                    help="how activation ranges are set (default minmax)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.calib_count < 1:
        print(f"--calib-count must be at least 1, got {args.calib_count}", file=sys.stderr)
        return 2
    try:
        entry = add_int8_member(args.model, args.out or args.model, args.calib, count=args.calib_count,
                                val_bag=args.val_bag, min_agreement=args.min_agreement, threads=args.threads,
                                calibration=args.calibration)
    except (QuantizeError, ModelFileError) as exc:
        print(f"quantize: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in entry.items() if not k.endswith("per_class_iou")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
