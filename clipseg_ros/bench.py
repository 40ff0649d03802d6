"""``clipseg-bench``: latency of the segmenters, of the node's per-frame work and of the node process.

One run, one machine, batch 1, after warm-up.  Three sections:

1. **Model latency** – every selected model x input size x backend, timed through
   :class:`clipseg_ros.segmenter.Segmenter` (the node's code path: uint8 RGB in, labels out) after
   exporting each network with :func:`clipseg_ros.model_file.save_model_file`.  The model input size
   equals the frame size in these rows, so the Segmenter's resize steps are no-ops.  Models:

   - ``default``: the packaged default model (``clipseg_ros/models/default.clipseg``) or
     ``--model PATH``; when neither exists, a randomly initialised MobileNetV2 enhanced model is
     exported and labelled *untrained stand-in* (same architecture and size, so the latency is
     representative; the labels are not);
   - the CLIP-enhanced / baseline twins of STDC1, STDC2 and MobileNetV2 (random weights; latency
     does not depend on the weights);
   - torchvision's LRASPP-MobileNetV3-Large and DeepLabV3-MobileNetV3-Large (random weights), what
     a user would otherwise pick.  They run in the same deploy wrapper (uint8 in, normalisation,
     bilinear upsampling, argmax and confidence in the graph) and the same PyTorch / ONNX Runtime
     session code as the Segmenter (``segmenter._TorchBackend`` / ``_OnnxBackend``).

   Backends: ``torch`` and ``onnxruntime`` (``--backends``) plus ``torch-raw``: the bare network
   forward (float input already normalised, in the channels-last layout DeployWrapper produces;
   logits at 1/8 scale: no upsampling, no argmax, no copies), which shows what the deploy wrapper
   and the host<->tensor traffic cost.

   Rows of one (size, backend) group are timed **interleaved**: round robin over the models, each
   turn ``--block`` back-to-back timed calls after ``--settle-ms`` of untimed calls (ONNX Runtime's
   thread pool keeps spinning for tens of ms after a run and would slow the next session down).
   A load change on a shared machine then hits all models alike and the ratios between rows
   (enhanced / baseline twin, default / LRASPP) stay meaningful even when the absolute numbers are
   noisy.  ``--no-interleave`` times the rows one after another instead.

2. **Node overhead** – the per-frame work the node does besides inference, at 640x480
   (``--overhead-size``): decoding (``image_to_rgb`` of rgb8 and bgr8 ``sensor_msgs/Image``,
   JPEG ``CompressedImage``), the Segmenter's preprocess (resize to the model input) and postprocess
   (label resize back), colorize, overlay, filling the labels / color / overlay messages and, when
   rclpy is available, publishing them through rclpy to a subscriber in this process.  Reported as
   medians and as a percentage of the default model's inference time for each backend.

3. **Node memory** – the real ``seg_node`` console script started as a subprocess with the default
   model, fed 640x480 frames closed-loop for ``--node-seconds``; its peak RSS (``VmHWM`` from
   ``/proc/<pid>/status``) is read before it is stopped.  Skipped (with a note) while
   ``clipseg_ros.node`` does not exist.

Outputs (``--out``, default ``bench_results/<timestamp>``): ``bench.json`` (every row, the machine
description and the settings), ``bench.md`` (Markdown tables with the ratios), and
``latency_vs_size.png`` (median latency vs input pixels, log y).

**DDS**: sections 2 (publish) and 3 create a ROS context.  This tool does not touch the DDS
settings (on a robot they must reach the network); ``make bench`` sets
``FASTDDS_BUILTIN_TRANSPORTS`` (shared memory only), ``ROS_DOMAIN_ID`` and ``ROS_LOG_DIR`` first.
``--no-publish --no-memory`` runs without any ROS context.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

__all__ = ["MODEL_SPECS", "main", "parse_args", "run_bench"]

SCHEMA = "clipseg-bench/1"
DEFAULT_SIZES = "480x360,640x480,1024x512"
QUICK_SIZES = "256x192"
QUICK_MODELS = "default,default-native,mobilenetv2,lraspp"
DEFAULT_INPUT_HW = (360, 480)          # the default model's input size (height, width)
TEXT_DIM = 1024                        # CLIP RN50 text width
REFERENCE_SIZE = "480x360"             # where default / LRASPP is compared
PACKAGED_DEFAULT = Path(__file__).resolve().parent / "models" / "default.clipseg"


# --------------------------------------------------------------------------------------------
# model catalogue
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    key: str                   # row name
    family: str                # stdc1 / stdc2 / mobilenetv2 / default / torchvision
    variant: str               # enhanced / baseline / default / reference
    arch: str | None = None    # clipseg_ros.networks.create_model name
    text_dim: int | None = None
    twin: str | None = None    # key of the baseline twin (enhanced rows)
    tv: str | None = None      # torchvision builder


MODEL_SPECS: dict[str, ModelSpec] = {s.key: s for s in (
    ModelSpec("default", "default", "default"),
    # as deployed: the file's own input size; the frame is resized to it and the labels back
    ModelSpec("default-native", "default", "deployed"),
    ModelSpec("stdc1-enh", "stdc1", "enhanced", "stdc1", TEXT_DIM, twin="stdc1-base"),
    ModelSpec("stdc1-base", "stdc1", "baseline", "stdc1", None),
    ModelSpec("stdc2-enh", "stdc2", "enhanced", "stdc2", TEXT_DIM, twin="stdc2-base"),
    ModelSpec("stdc2-base", "stdc2", "baseline", "stdc2", None),
    ModelSpec("mobilenetv2-enh", "mobilenetv2", "enhanced", "mobilenetv2", TEXT_DIM, twin="mobilenetv2-base"),
    ModelSpec("mobilenetv2-base", "mobilenetv2", "baseline", "mobilenetv2", None),
    ModelSpec("lraspp-mbv3", "torchvision", "reference", tv="lraspp_mobilenet_v3_large"),
    ModelSpec("deeplabv3-mbv3", "torchvision", "reference", tv="deeplabv3_mobilenet_v3_large"),
)}

MODEL_ALIASES = {
    "all": list(MODEL_SPECS),
    "defaults": ["default", "default-native"],
    "stdc1": ["stdc1-enh", "stdc1-base"],
    "stdc2": ["stdc2-enh", "stdc2-base"],
    "stdc": ["stdc1-enh", "stdc1-base", "stdc2-enh", "stdc2-base"],
    "mobilenetv2": ["mobilenetv2-enh", "mobilenetv2-base"],
    "mbv2": ["mobilenetv2-enh", "mobilenetv2-base"],
    "twins": ["stdc1-enh", "stdc1-base", "stdc2-enh", "stdc2-base", "mobilenetv2-enh", "mobilenetv2-base"],
    "lraspp": ["lraspp-mbv3"],
    "deeplabv3": ["deeplabv3-mbv3"],
    "torchvision": ["lraspp-mbv3", "deeplabv3-mbv3"],
}

BACKEND_CHOICES = ("torch", "onnxruntime")
RAW = "torch-raw"


class BenchError(RuntimeError):
    """A problem that stops the benchmark (bad option, missing dependency)."""


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().strip().split("x"))
    except ValueError:
        raise BenchError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise BenchError(f"size {text!r}: width and height must be 16..8192")
    return w, h


def size_name(wh: tuple[int, int]) -> str:
    return f"{wh[0]}x{wh[1]}"


def resolve_models(text: str) -> list[str]:
    keys: list[str] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        names = MODEL_ALIASES.get(part) or ([part] if part in MODEL_SPECS else None)
        if names is None:
            raise BenchError(f"unknown model {part!r}; choose from {', '.join(MODEL_SPECS)} "
                             f"or the groups {', '.join(MODEL_ALIASES)}")
        keys += [k for k in names if k not in keys]
    if not keys:
        raise BenchError("--models selects nothing")
    return keys


# --------------------------------------------------------------------------------------------
# statistics and machine description
# --------------------------------------------------------------------------------------------

def stats_ms(samples_s) -> dict:
    a = np.asarray(samples_s, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"n": 0, "median_ms": None, "p90_ms": None, "mean_ms": None, "min_ms": None, "std_ms": None}
    return {"n": int(a.size), "median_ms": round(float(np.median(a)), 4),
            "p90_ms": round(float(np.percentile(a, 90)), 4), "mean_ms": round(float(a.mean()), 4),
            "min_ms": round(float(a.min()), 4), "std_ms": round(float(a.std()), 4)}


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _loadavg():
    parts = _read("/proc/loadavg").split()
    return [float(v) for v in parts[:3]] if len(parts) >= 3 else None


def _version(mod: str) -> str | None:
    try:
        m = __import__(mod)
    except Exception:  # noqa: BLE001 - optional dependency
        return None
    return getattr(m, "__version__", "installed")


def machine_info(threads: int) -> dict:
    mem_kb = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        affinity = os.cpu_count()
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": affinity,
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "threads": threads, "loadavg_start": _loadavg(),
        "versions": {m: _version(m) for m in ("torch", "torchvision", "onnxruntime", "onnx", "numpy")},
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    import cv2

    info["versions"]["opencv"] = cv2.__version__
    info["gpu"] = None
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        info["onnxruntime_providers"] = []
    return info


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here (None when a CUDA path exists)."""
    torch_ok = False
    try:
        import torch

        torch_ok = torch.cuda.is_available()
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    gpu_providers = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if torch_ok or gpu_providers:
        return None
    return ("--device cuda: no CUDA device here (torch.cuda.is_available() is False and ONNX Runtime "
            f"has only {', '.join(providers) or 'no'} providers); every CUDA row is skipped. "
            "Run on a machine with an NVIDIA GPU (onnxruntime-gpu for the CUDA/TensorRT providers) "
            "or use --device cpu.")


# --------------------------------------------------------------------------------------------
# synthetic frames
# --------------------------------------------------------------------------------------------

def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, camera-like RGB frame (gradients, shapes, mild noise): JPEG sizes stay realistic."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 90 + 110 * (x / width)
    img[..., 1] = 120 + 60 * np.sin(y / max(height, 1) * 3.0)
    img[..., 2] = 200 - 120 * (y / height)
    img = img.astype(np.uint8)
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.rectangle(img, p1, p2, c, -1)
        cv2.circle(img, p2, int(rng.integers(4, max(5, width // 8))), c[::-1], -1)
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# model preparation
# --------------------------------------------------------------------------------------------

def _class_names_palette():
    from .visualize import CAMVID_CLASSES, CAMVID_PALETTE

    return list(CAMVID_CLASSES), np.asarray(CAMVID_PALETTE).tolist()


def _random_network(arch: str, text_dim: int | None, num_classes: int):
    import torch

    from .networks import create_model

    net = create_model(arch, num_classes, text_dim)
    if net.text_guidance is not None:
        net.text_guidance.set_text_embeddings(torch.randn(num_classes, text_dim))
    return net.eval()


def with_input_size(src: Path, dst: Path, input_hw, label: str | None = None) -> Path:
    """Copy a model file with another ``input_size`` in its metadata.

    The ONNX graph has dynamic height/width and the weights do not depend on the size, so one
    export serves every size.  A scratch file: stored uncompressed and not fsynced (deflating and
    syncing the members again took seconds per copy).  Checked by loading it (``ModelFile``
    verifies the metadata and every member's sha256).
    """
    from .model_file import META_NAME, ModelFile

    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members[META_NAME])
    meta["input_size"] = [int(input_hw[0]), int(input_hw[1])]
    if label:
        meta.setdefault("provenance", {})["bench_label"] = label
    members[META_NAME] = json.dumps(meta, indent=2).encode()
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    os.replace(tmp, dst)
    ModelFile(dst)
    return dst


class _TVAdapter:
    """torchvision segmentation model -> ``{"logits": 1/8-scale logits}`` (what DeployWrapper expects).

    The model's own final upsampling is skipped: DeployWrapper upsamples once, as for our models.
    """

    @staticmethod
    def build(tv_name: str, num_classes: int):
        import torch
        from torch import nn
        from torchvision.models import segmentation as tvseg

        model = getattr(tvseg, tv_name)(weights=None, weights_backbone=None, num_classes=num_classes).eval()

        class Adapter(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m
                self.lraspp = isinstance(m, tvseg.LRASPP)

            def forward(self, x: torch.Tensor):
                feats = self.m.backbone(x)
                out = self.m.classifier(feats if self.lraspp else feats["out"])
                return {"logits": out}

        return Adapter(model).eval()


@dataclass
class PreparedModel:
    spec: ModelSpec
    label: str
    files: dict = field(default_factory=dict)       # size name -> model file (clipseg models)
    network: Any = None                             # deploy network (torch-raw rows; tv adapter)
    onnx_bytes: bytes | None = None                 # tv models
    mean: list | None = None
    std: list | None = None
    params: int | None = None
    note: str = ""
    error: str | None = None
    native: bool = False                            # default-native: keeps the file's input size


class ModelFactory:
    """Exports each selected model once (per architecture), then derives one file per size."""

    def __init__(self, workdir: Path, want_onnx: bool, default_path: Path | None, log: Callable[[str], None]):
        self.workdir = Path(workdir)
        self.want_onnx = want_onnx
        self.log = log
        self.class_names, self.palette = _class_names_palette()
        self._base: dict[tuple, Path] = {}
        self.default_path, self.default_label, self.stand_in = self._default(default_path)

    # the default model -------------------------------------------------------------------
    def _default(self, override: Path | None):
        if override is not None:
            from .model_file import ModelFile, ModelFileError

            p = Path(override)
            if not p.is_file():
                raise BenchError(f"--model {p}: no such file")
            try:
                label = str(ModelFile(p).meta.provenance.get("bench_label", ""))
            except ModelFileError as exc:
                raise BenchError(str(exc)) from None
            if label.startswith("untrained stand-in"):     # a stand-in kept by an earlier run
                return p, "default (untrained stand-in)", True
            return p, f"default ({p.name})", False
        if PACKAGED_DEFAULT.is_file():
            return PACKAGED_DEFAULT, "default (packaged)", False
        return None, "default (untrained stand-in)", True

    def default_model_file(self) -> Path:
        """The default model file (exporting the stand-in on first use)."""
        if self.default_path is None:
            base = self._export("mobilenetv2", TEXT_DIM)
            self.default_path = with_input_size(
                base, self.workdir / "default-stand-in.clipseg", DEFAULT_INPUT_HW,
                label="untrained stand-in: random MobileNetV2 enhanced, 11 CamVid classes")
            self.log(f"no default model at {PACKAGED_DEFAULT}: using an untrained stand-in "
                     "(random MobileNetV2 enhanced, 11 classes, input 360x480)")
        return self.default_path

    # clipseg exports -----------------------------------------------------------------------
    def _export(self, arch: str, text_dim: int | None) -> Path:
        key = (arch, text_dim)
        if key not in self._base:
            import torch

            from .model_file import save_model_file

            torch.manual_seed(0)
            net = _random_network(arch, text_dim, len(self.class_names))
            path = self.workdir / f"{arch}-{'enh' if text_dim else 'base'}.clipseg"
            t0 = time.perf_counter()
            save_model_file(path, net, self.class_names, palette=self.palette,
                            input_size=list(DEFAULT_INPUT_HW), onnx=self.want_onnx,
                            provenance={"bench": "random weights"})
            self.log(f"exported {path.name} ({time.perf_counter() - t0:.1f} s)")
            self._base[key] = path
        return self._base[key]

    def prepare(self, spec: ModelSpec, sizes: list[tuple[int, int]]) -> PreparedModel:
        from .model_file import ModelFile

        if spec.tv:
            return self._prepare_tv(spec)
        if spec.key in ("default", "default-native"):
            base, label = self.default_model_file(), self.default_label
        else:
            base, label = self._export(spec.arch, spec.text_dim), spec.key
        pm = PreparedModel(spec, label)
        mf = ModelFile(base)
        pm.mean, pm.std = mf.meta.mean, mf.meta.std
        if spec.key in ("default", "default-native"):
            pm.note = "untrained stand-in" if self.stand_in else ""
            if self.want_onnx and mf.onnx_bytes is None:
                pm.note = (pm.note + "; " if pm.note else "") + "file has no ONNX graph"
        if spec.key == "default-native":
            hw = mf.meta.input_size
            pm.label = f"{label} native {hw[1]}x{hw[0]}" if hw else f"{label} native"
            pm.native = True
            for wh in sizes:
                pm.files[size_name(wh)] = base
        else:
            for wh in sizes:
                dst = self.workdir / f"{spec.key}-{size_name(wh)}.clipseg"
                pm.files[size_name(wh)] = with_input_size(base, dst, (wh[1], wh[0]))
        if mf.has_torch_weights:
            pm.network = mf.build_network()
            pm.params = int(sum(p.numel() for p in pm.network.parameters()))
        return pm

    def _prepare_tv(self, spec: ModelSpec) -> PreparedModel:
        import torch

        from .model_file import export_onnx_bytes
        from .networks import DeployWrapper

        torch.manual_seed(0)
        pm = PreparedModel(spec, spec.key, note="torchvision, random weights")
        pm.network = _TVAdapter.build(spec.tv, len(self.class_names))
        pm.params = int(sum(p.numel() for p in pm.network.parameters()))
        pm.mean, pm.std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
        if self.want_onnx:
            t0 = time.perf_counter()
            try:
                pm.onnx_bytes = export_onnx_bytes(DeployWrapper(pm.network, pm.mean, pm.std).eval(),
                                                  DEFAULT_INPUT_HW)
                self.log(f"exported {spec.key} to ONNX ({time.perf_counter() - t0:.1f} s)")
            except Exception as exc:  # noqa: BLE001 - reported in the rows
                pm.note += f"; ONNX export failed: {exc}"
        return pm


# --------------------------------------------------------------------------------------------
# runners: one callable per row
# --------------------------------------------------------------------------------------------

class Skip(Exception):
    """This row cannot run here (reason in the message)."""


@dataclass
class Runner:
    call: Callable[[], Any]
    info: dict = field(default_factory=dict)
    close: Callable[[], None] | None = None


def _torch_device(device: str):
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Skip(f"device {device} requested but PyTorch sees no CUDA device")
    return torch.device(device)


def make_runner(pm: PreparedModel, backend: str, wh: tuple[int, int], frame: np.ndarray,
                opts: argparse.Namespace) -> Runner:
    """Build the timed callable of one row; raises Skip with the reason when it cannot run."""
    from .segmenter import Segmenter, SegmenterConfigError

    device = "cuda:0" if opts.device == "cuda" else "cpu"
    try:
        if backend == RAW:
            return _raw_runner(pm, wh, device, opts)
        if pm.spec.tv:
            return _tv_runner(pm, backend, frame, device, opts)
        seg = Segmenter(pm.files[size_name(wh)], device=device, backend=backend,
                        precision=opts.precision, threads=opts.threads, trt_cache_dir=opts.trt_cache)
        info = {"backend_detail": seg.description}
        if backend == "onnxruntime":
            info["providers"] = list(seg._backend.providers)
        return Runner(lambda: seg(frame), info)
    except SegmenterConfigError as exc:
        raise Skip(str(exc)) from None


def _tv_runner(pm: PreparedModel, backend: str, frame: np.ndarray, device: str, opts) -> Runner:
    # The Segmenter's own backend classes, so the session options / wrapper are the node's.
    from .segmenter import _OnnxBackend, _TorchBackend

    if backend == "torch":
        fake = SimpleNamespace(build_network=lambda: pm.network,
                               meta=SimpleNamespace(mean=pm.mean, std=pm.std))
        be = _TorchBackend(fake, device, opts.precision, opts.threads)
        return Runner(lambda: be(frame, False), {"backend_detail": f"torch on {device} ({opts.precision})"})
    if pm.onnx_bytes is None:
        raise Skip("no ONNX graph (" + (pm.note.split("; ", 1)[-1] or "export not requested") + ")")
    fake = SimpleNamespace(onnx_bytes=pm.onnx_bytes, path=pm.spec.key)
    be = _OnnxBackend(fake, device, opts.precision, opts.threads, opts.trt_cache)
    return Runner(lambda: be(frame, False),
                  {"backend_detail": f"onnxruntime [{','.join(be.providers)}] on {device}",
                   "providers": list(be.providers)})


def _raw_runner(pm: PreparedModel, wh, device: str, opts) -> Runner:
    import torch

    if pm.network is None:
        raise Skip("model file has no PyTorch weights")
    if getattr(pm, "native", False):
        raise Skip("native input size: the bare forward is the default row's at that size")
    dev = _torch_device(device)
    from .networks import inference_network

    net = inference_network(pm.network).to(dev)     # as DeployWrapper runs it (guidance folded)
    dtype = torch.float16 if opts.precision == "fp16" else torch.float32
    net = net.to(dtype)
    # Same layout as DeployWrapper feeds the network: the NHWC frame permuted to NCHW, i.e.
    # channels-last strides (a contiguous NCHW tensor is measurably slower on CPU).
    x = torch.randn(1, wh[1], wh[0], 3, device=dev, dtype=dtype).permute(0, 3, 1, 2)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def call():
        with torch.inference_mode():
            out = net(x)["logits"]
        sync()
        return out

    def close():
        pm.network = net.float().cpu()

    return Runner(call, {"backend_detail": f"bare network forward on {device} ({opts.precision})"}, close)


# --------------------------------------------------------------------------------------------
# section 1: model latency
# --------------------------------------------------------------------------------------------

def _row_base(pm: PreparedModel, backend: str, wh, opts) -> dict:
    spec = pm.spec
    return {
        "kind": "latency", "model": spec.key, "label": pm.label, "family": spec.family,
        "variant": spec.variant, "twin": spec.twin, "backend": backend, "device": opts.device,
        "precision": opts.precision, "size": size_name(wh), "width": wh[0], "height": wh[1],
        "pixels": wh[0] * wh[1], "params": pm.params, "note": pm.note, "status": "ok",
    }


def time_group(runners: list[tuple[dict, Runner]], opts, progress) -> None:
    """Warm up, then time the runners of one group (interleaved unless --no-interleave).

    Each row is one unit of the progress bar, advanced per call and completed when the row ends.
    """
    total = opts.warmup + opts.iters
    samples = {id(r): [] for _, r in runners}
    spent = {id(r): 0.0 for _, r in runners}
    shown = {id(r): 0.0 for _, r in runners}

    def one(runner, record):
        t0 = time.perf_counter()
        runner.call()
        dt = time.perf_counter() - t0
        if record:
            samples[id(runner)].append(dt)
            spent[id(runner)] += dt
        shown[id(runner)] += 1.0 / total
        progress.update(1.0 / total)

    def done(runner) -> bool:
        n = len(samples[id(runner)])
        return n >= opts.iters or (n >= 3 and spent[id(runner)] > opts.max_row_seconds)

    def finish(runner):
        progress.update(max(0.0, 1.0 - shown[id(runner)]))
        shown[id(runner)] = 1.0

    def fail(row, runner, exc):
        row["status"], row["note"] = "error", f"{type(exc).__name__}: {exc}"
        runners.remove((row, runner))
        finish(runner)

    if opts.interleave and len(runners) > 1:
        for row, runner in list(runners):
            try:
                for _ in range(opts.warmup):
                    one(runner, False)
            except Exception as exc:  # noqa: BLE001 - one bad row does not stop the group
                fail(row, runner, exc)
        settle_s = opts.settle_ms / 1000.0
        while runners and not all(done(r) for _, r in runners):
            for row, runner in list(runners):
                if done(runner):
                    continue
                try:
                    # Untimed calls first: the previous row's thread pool may still be spinning
                    # (ONNX Runtime spins tens of ms after a run) and this row's caches are cold.
                    t0 = time.perf_counter()
                    runner.call()
                    while time.perf_counter() - t0 < settle_s:
                        runner.call()
                    for _ in range(opts.block):
                        if done(runner):
                            break
                        one(runner, True)
                except Exception as exc:  # noqa: BLE001
                    fail(row, runner, exc)
    else:
        for row, runner in list(runners):
            try:
                for _ in range(opts.warmup):
                    one(runner, False)
                while not done(runner):
                    one(runner, True)
            except Exception as exc:  # noqa: BLE001
                fail(row, runner, exc)
    for row, runner in runners:
        s = samples[id(runner)]
        row.update(stats_ms(s))
        row["fps"] = round(1000.0 / row["median_ms"], 2) if row["median_ms"] else None
        row["samples_ms"] = [round(v * 1000.0, 4) for v in s]
        if len(s) < opts.iters:
            row["note"] = ((row["note"] + "; ") if row["note"] else "") + \
                f"stopped after {len(s)} iterations (--max-row-seconds)"
        finish(runner)


def run_latency(models: list[PreparedModel], sizes, backends, opts, progress, log) -> list[dict]:
    rows: list[dict] = []
    for wh in sizes:
        frame = synthetic_frame(*wh, seed=1)
        for backend in backends:
            group: list[tuple[dict, Runner]] = []
            for pm in models:
                row = _row_base(pm, backend, wh, opts)
                rows.append(row)
                if pm.error:
                    row.update(status="error", note=pm.error)
                    progress.update(1)
                    continue
                try:
                    runner = make_runner(pm, backend, wh, frame, opts)
                    row.update(runner.info)
                    group.append((row, runner))
                except Skip as exc:
                    row.update(status="skipped", note=str(exc))
                    progress.update(1)
                except Exception as exc:  # noqa: BLE001 - one bad row does not stop the run
                    row.update(status="error", note=f"{type(exc).__name__}: {exc}")
                    progress.update(1)
            progress.set_description(f"{size_name(wh)} {backend}")
            time_group(group, opts, progress)
            for _, runner in group:
                if runner.close:
                    runner.close()
            del group
    return rows


# --------------------------------------------------------------------------------------------
# section 2: per-frame node overhead
# --------------------------------------------------------------------------------------------

def _timeit(fn: Callable[[], Any], iters: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _msg_classes():
    try:
        from sensor_msgs.msg import CompressedImage, Image

        return Image, CompressedImage, None
    except ImportError as exc:
        def image():
            return SimpleNamespace(header=None, height=0, width=0, encoding="", is_bigendian=0,
                                   step=0, data=b"")

        def compressed():
            return SimpleNamespace(header=None, format="", data=b"")

        return image, compressed, f"sensor_msgs not importable ({exc}); duck-typed messages used"


class _RosPublishBench:
    """A node publishing Image messages to a subscriber in the same process (own context)."""

    def __init__(self, topic_prefix: str = "/clipseg_bench"):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.node = rclpy.create_node("clipseg_bench_publisher", context=self.context)
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
            self.received = 0
            self.arrived = threading.Event()
            self.arrived_at = 0.0
            self.pubs = {}
            self._subs = []
            for name in ("labels", "color", "overlay"):
                topic = f"{topic_prefix}/{name}"
                self.pubs[name] = self.node.create_publisher(Image, topic, qos)
                self._subs.append(self.node.create_subscription(Image, topic, self._on_msg, qos))
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self.thread = threading.Thread(target=self._spin, daemon=True)
            self.thread.start()
            deadline = time.monotonic() + 10.0
            while any(p.get_subscription_count() < 1 for p in self.pubs.values()):
                if time.monotonic() > deadline:
                    raise BenchError("in-process subscriber was not matched within 10 s")
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise

    def _on_msg(self, _msg) -> None:
        self.received += 1
        self.arrived_at = time.perf_counter()
        self.arrived.set()

    def delivery(self, name: str, msg) -> float | None:
        """Seconds from publish() to the in-process subscriber's callback (None on timeout)."""
        self.arrived.clear()
        t0 = time.perf_counter()
        self.pubs[name].publish(msg)
        if not self.arrived.wait(2.0):
            return None
        return self.arrived_at - t0

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.1)
        except Exception:  # noqa: BLE001 - shutdown races end the thread
            pass

    def close(self) -> None:
        try:
            if self.context.ok():
                self.rclpy.shutdown(context=self.context)
        except Exception:  # noqa: BLE001
            pass
        if getattr(self, "thread", None) is not None:
            self.thread.join(timeout=2.0)
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(timeout_sec=1.0)
        if getattr(self, "node", None) is not None:
            try:
                self.node.destroy_node()
            except Exception:  # noqa: BLE001
                pass


def run_overhead(default_file: Path, wh, backends, opts, log) -> dict:
    """Time the node's per-frame steps besides inference at ``wh`` (default 640x480).

    Two views: each step **isolated** (a tight loop of the one call: decode variants, colorize,
    overlay, message fills, publishes) and the steps **in the pipeline**: decode rgb8 -> Segmenter
    (preprocess, inference, postprocess) -> colorize -> overlay -> 3 fills -> 3 publishes, frame
    after frame, as the node runs them (the in-process subscriber takes each frame's messages
    before the next frame starts, untimed, as subscriber processes would).  In the pipeline the
    steps start with cold caches, so they are slower than isolated; the overhead percentage uses
    the pipeline numbers.
    """
    import cv2

    from .image_codec import array_to_image, compressed_to_rgb, encode_compressed, fill_image, image_to_rgb
    from .model_file import ModelFile
    from .segmenter import Segmenter
    from .visualize import Colorizer, overlay

    iters = opts.overhead_iters
    Image, CompressedImage, msg_note = _msg_classes()
    notes = [msg_note] if msg_note else []
    w, h = wh
    rgb = synthetic_frame(w, h, seed=2)
    steps: list[dict] = []

    def add(name, group, samples, **extra):
        steps.append({"step": name, "group": group, **stats_ms(samples), **extra})

    pb = None
    if not opts.publish:
        notes.append("publish not measured (--no-publish)")
    elif msg_note:
        notes.append("publish not measured: " + msg_note)
    else:
        try:
            pb = _RosPublishBench()
        except Exception as exc:  # noqa: BLE001 - ROS missing or DDS trouble: note it, go on
            notes.append(f"publish not measured: {type(exc).__name__}: {exc}")
    try:
        # ---- decoding (isolated) ----
        msg_rgb = array_to_image(rgb, "rgb8", msg_cls=Image)
        msg_bgr = array_to_image(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "bgr8", msg_cls=Image)
        fmt, payload = encode_compressed(rgb, "jpeg", 90)
        msg_jpg = CompressedImage()
        msg_jpg.format = fmt
        if isinstance(msg_jpg, SimpleNamespace):
            msg_jpg.data = payload
        else:
            import array as _array

            buf = _array.array("B")
            buf.frombytes(payload)
            msg_jpg.data = buf
        add("decode rgb8 (image_to_rgb)", "decode", _timeit(lambda: image_to_rgb(msg_rgb), iters))
        add("decode bgr8 (image_to_rgb)", "decode", _timeit(lambda: image_to_rgb(msg_bgr), iters))
        add("decode jpeg (compressed_to_rgb)", "decode", _timeit(lambda: compressed_to_rgb(msg_jpg), iters),
            jpeg_kb=round(len(payload) / 1024, 1))

        palette = np.asarray(ModelFile(default_file).meta.palette, np.uint8)
        colorizer = Colorizer(palette)
        color = np.empty((h, w, 3), np.uint8)
        blended = np.empty((h, w, 3), np.uint8)

        # ---- the pipeline, per backend ----
        device = "cuda:0" if opts.device == "cuda" else "cpu"
        inference: dict[str, dict] = {}
        pipeline: dict[str, dict] = {}
        labels = None
        model_hw = None
        for backend in backends:
            try:
                seg = Segmenter(default_file, device=device, backend=backend, precision=opts.precision,
                                threads=opts.threads, trt_cache_dir=opts.trt_cache)
            except Exception as exc:  # noqa: BLE001
                inference[backend] = {"status": "skipped", "note": str(exc)}
                continue
            model_hw = seg.input_size
            names = ["decode rgb8", "preprocess", "inference", "postprocess", "colorize", "overlay",
                     "fill labels", "fill color", "fill overlay"]
            if pb is not None:
                names += ["publish labels", "publish color", "publish overlay"]
            times: dict[str, list] = {n: [] for n in names}
            warm = max(2, opts.warmup)
            for i in range(warm + iters):
                rec = i >= warm
                t0 = time.perf_counter()
                frame = image_to_rgb(msg_rgb)
                t1 = time.perf_counter()
                res = seg(frame)
                t2 = time.perf_counter()
                colorizer.colorize(res.labels, out=color)
                t3 = time.perf_counter()
                overlay(frame, color, 0.5, out=blended)
                t4 = time.perf_counter()
                msgs = {}
                fills = []
                for name, arr, enc in (("labels", res.labels, "mono8"), ("color", color, "rgb8"),
                                       ("overlay", blended, "rgb8")):
                    ta = time.perf_counter()
                    msgs[name] = fill_image(Image(), arr, enc)
                    fills.append(time.perf_counter() - ta)
                pubs = []
                if pb is not None:
                    target = pb.received + 3
                    for name in ("labels", "color", "overlay"):
                        ta = time.perf_counter()
                        pb.pubs[name].publish(msgs[name])
                        pubs.append(time.perf_counter() - ta)
                    # Untimed: let the in-process subscriber take the three messages before the
                    # next frame.  Their deserialization is the subscribers' work (other processes
                    # for the real node), and on 2 cores it would otherwise land in the next
                    # frame's preprocess (measured: 1.4 ms instead of 0.2 ms).
                    deadline = time.perf_counter() + 0.5
                    while pb.received < target and time.perf_counter() < deadline:
                        time.sleep(0.0002)
                if rec:
                    for name, v in (("decode rgb8", t1 - t0), ("preprocess", res.timings["preprocess"]),
                                    ("inference", res.timings["inference"]),
                                    ("postprocess", res.timings["postprocess"]),
                                    ("colorize", t3 - t2), ("overlay", t4 - t3),
                                    ("fill labels", fills[0]), ("fill color", fills[1]),
                                    ("fill overlay", fills[2])):
                        times[name].append(v)
                    for name, v in zip(("publish labels", "publish color", "publish overlay"), pubs):
                        times[name].append(v)
            labels = res.labels
            inference[backend] = {"status": "ok", "backend_detail": seg.description, **stats_ms(times["inference"])}
            med = {n: stats_ms(v) for n, v in times.items()}
            other = round(sum(m["median_ms"] for n, m in med.items() if n != "inference"), 4)
            pipeline[backend] = {"steps": med, "overhead_ms": other,
                                 "percent_of_inference": round(100.0 * other / med["inference"]["median_ms"], 2)}
            del seg
        if labels is None:
            labels = np.random.default_rng(0).integers(0, 11, (h, w), dtype=np.uint8)
            notes.append("no backend ran: the Segmenter steps were not measured, random labels used")
        else:
            mhw = f"{model_hw[1]}x{model_hw[0]}" if model_hw else "native"
            first = next(iter(pipeline.values()))["steps"]
            steps.append({"step": f"preprocess (resize {w}x{h} -> {mhw})", "group": "segmenter",
                          **first["preprocess"], "source": "pipeline, first backend"})
            steps.append({"step": f"postprocess (label resize {mhw} -> {w}x{h})", "group": "segmenter",
                          **first["postprocess"], "source": "pipeline, first backend"})

        # ---- visualisation and messages (isolated) ----
        add("colorize", "visualize", _timeit(lambda: colorizer.colorize(labels, out=color), iters))
        add("overlay (alpha 0.5)", "visualize", _timeit(lambda: overlay(rgb, color, 0.5, out=blended), iters))
        add("overlay keeping unlabeled pixels", "visualize",
            _timeit(lambda: overlay(rgb, color, 0.5, out=blended, labels=labels), iters), optional=True)
        out_msgs = {}

        def filler(name, arr, enc):
            def fn():
                out_msgs[name] = fill_image(Image(), arr, enc)
            return fn

        add("fill labels msg (mono8)", "messages", _timeit(filler("labels", labels, "mono8"), iters))
        add("fill color msg (rgb8)", "messages", _timeit(filler("color", color, "rgb8"), iters))
        add("fill overlay msg (rgb8)", "messages", _timeit(filler("overlay", blended, "rgb8"), iters))
        if pb is not None:
            for name in ("labels", "color", "overlay"):
                msg, pub = out_msgs[name], pb.pubs[name]
                add(f"publish {name} (rclpy, 1 local subscriber)", "publish",
                    _timeit(lambda: pub.publish(msg), iters))
            n_deliver = max(3, iters // 2)
            lat = []
            for _ in range(n_deliver):
                time.sleep(0.005)
                d = pb.delivery("overlay", out_msgs["overlay"])
                if d is not None:
                    lat.append(d)
            add(f"deliver {w}x{h} rgb8: publish -> subscriber callback in this process", "delivery", lat,
                optional=True, lost=n_deliver - len(lat))
    finally:
        if pb is not None:
            pb.close()

    med = {s["step"]: s["median_ms"] or 0.0 for s in steps}
    common = sum(s["median_ms"] or 0.0 for s in steps
                 if s["group"] in ("segmenter", "visualize", "messages", "publish") and not s.get("optional"))
    decodes = {"rgb8": med["decode rgb8 (image_to_rgb)"], "bgr8": med["decode bgr8 (image_to_rgb)"],
               "jpeg": med["decode jpeg (compressed_to_rgb)"]}
    totals = {f"{enc} input": round(common + d, 4) for enc, d in decodes.items()}
    isolated_pct = {}
    for backend, inf in inference.items():
        if inf.get("status") == "ok" and inf.get("median_ms"):
            isolated_pct[backend] = {k: round(100.0 * v / inf["median_ms"], 2) for k, v in totals.items()}
    return {"size": size_name(wh), "iters": iters, "model_input": list(model_hw) if model_hw else None,
            "steps": steps, "inference": inference, "pipeline": pipeline,
            "percent_of_inference": {b: p["percent_of_inference"] for b, p in pipeline.items()},
            "isolated_totals_ms": totals, "isolated_percent_of_inference": isolated_pct, "notes": notes,
            "included_in_totals": "decode + preprocess + postprocess + colorize + overlay + 3 fills"
                                  + (" + 3 publishes" if pb is not None else "")}


# --------------------------------------------------------------------------------------------
# section 3: node peak memory
# --------------------------------------------------------------------------------------------

def _proc_status(pid: int) -> dict:
    vals = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "VmPeak", "Threads"):
            parts = rest.split()
            vals[key] = int(parts[0]) if parts else None
    return vals


def node_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("clipseg_ros.node") is not None


def run_node_memory(get_default: Callable[[], Path], opts, out_dir: Path, log) -> dict:
    if not opts.memory:
        return {"status": "skipped", "note": "--no-memory"}
    if opts.node_executable is None and not node_available():
        return {"status": "skipped",
                "note": "clipseg_ros/node.py does not exist yet: node peak-memory row skipped"}
    log("seg_node peak memory")
    default_file = get_default()
    try:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from .bag.live import NodeProcess, node_command
        from .image_codec import array_to_image
    except ImportError as exc:
        return {"status": "skipped", "note": f"cannot start the node: {exc}"}

    node_name = f"clipseg_bench_node_{os.getpid()}"
    in_topic = f"/{node_name}_in/image"
    cmd = node_command(model=str(default_file), topic=in_topic, compressed=False,
                       device="cuda" if opts.device == "cuda" else "cpu", backend=opts.node_backend,
                       precision=opts.precision, threads=opts.threads, node_name=node_name,
                       executable=opts.node_executable)
    w, h = parse_size(opts.overhead_size)
    frame = synthetic_frame(w, h, seed=3)
    result: dict = {"status": "error", "command": cmd, "frame": size_name((w, h)),
                    "log": str(out_dir / "seg_node.log")}
    ctx = Context()
    rclpy.init(context=ctx)
    proc = NodeProcess(cmd, out_dir / "seg_node.log")
    got = threading.Event()
    arrivals: list[float] = []
    node = executor = spin = None
    try:
        node = rclpy.create_node("clipseg_bench_feeder", context=ctx)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        pub = node.create_publisher(Image, in_topic, qos)

        def on_labels(_msg):
            arrivals.append(time.perf_counter())
            got.set()

        node.create_subscription(Image, f"/{node_name}/labels", on_labels, qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)

        def spin_loop():
            try:
                while ctx.ok():
                    executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001
                pass

        spin = threading.Thread(target=spin_loop, daemon=True)
        spin.start()
        msg = array_to_image(frame, "rgb8", msg_cls=Image)
        t_start = time.perf_counter()
        proc.start()
        # readiness: keep sending until the first labels come back
        deadline = time.monotonic() + opts.node_startup_timeout
        while not got.is_set():
            if proc.returncode() is not None:
                raise BenchError(f"seg_node exited with code {proc.returncode()}: {proc.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"seg_node gave no labels within {opts.node_startup_timeout:.0f} s: "
                                 f"{proc.log_tail()}")
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            got.wait(0.5)
        result["startup_s"] = round(time.perf_counter() - t_start, 2)
        # closed loop for node_seconds
        lat = []
        frames = 0
        rss_samples = []
        t_end = time.perf_counter() + opts.node_seconds
        while time.perf_counter() < t_end:
            got.clear()
            t0 = time.perf_counter()
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            if got.wait(5.0):
                frames += 1
                lat.append(arrivals[-1] - t0)
            rss_samples.append(_proc_status(proc.pid).get("VmRSS"))
            if proc.returncode() is not None:
                raise BenchError(f"seg_node exited with code {proc.returncode()}: {proc.log_tail()}")
        status = _proc_status(proc.pid)
        elapsed = opts.node_seconds
        result.update(
            status="ok", pid=proc.pid, frames=frames, fps=round(frames / elapsed, 2),
            peak_rss_mb=round(status.get("VmHWM", 0) / 1024, 1),
            rss_end_mb=round(status.get("VmRSS", 0) / 1024, 1),
            rss_max_sampled_mb=round(max((r or 0) for r in rss_samples) / 1024, 1) if rss_samples else None,
            threads=status.get("Threads"),
            roundtrip=stats_ms(lat),
        )
    except Exception as exc:  # noqa: BLE001 - reported in the results
        result["note"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.stop()
        try:
            rclpy.shutdown(context=ctx)
        except Exception:  # noqa: BLE001
            pass
        if spin is not None:
            spin.join(timeout=2.0)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
    return result


# --------------------------------------------------------------------------------------------
# ratios and reports
# --------------------------------------------------------------------------------------------

def _vs_lraspp(ok: dict, sizes: list[str], model: str, label: str | None) -> dict:
    """``model``'s best CPU/GPU backend row over LRASPP PyTorch at the first size where both ran."""
    for size in sizes:
        lr = ok.get(("lraspp-mbv3", "torch", size))
        best_rows = [ok[k] for k in ok if k[0] == model and k[2] == size and k[1] in BACKEND_CHOICES]
        if lr and best_rows:
            best = min(best_rows, key=lambda r: r["median_ms"])
            out = {"size": size, "status": "ok", "default": label or best["label"],
                   "default_backend": best["backend"], "default_ms": best["median_ms"],
                   "lraspp_torch_ms": lr["median_ms"], "ratio": round(best["median_ms"] / lr["median_ms"], 4)}
            if size != REFERENCE_SIZE:
                out["note"] = f"{REFERENCE_SIZE} not measured; compared at {size}"
            return out
    return {"size": REFERENCE_SIZE, "status": "not measured",
            "note": f"needs {model} and lraspp-mbv3 (torch) at a common size"}


def compute_ratios(rows: list[dict], overhead: dict | None, default_spec_label: str) -> dict:
    ok = {(r["model"], r["backend"], r["size"]): r for r in rows if r["status"] == "ok" and r.get("median_ms")}
    twins = []
    for r in rows:
        if r["variant"] != "enhanced" or r["status"] != "ok":
            continue
        base = ok.get((r["twin"], r["backend"], r["size"]))
        if not base:
            continue
        ratio = r["median_ms"] / base["median_ms"]
        n = min(len(r.get("samples_ms", [])), len(base.get("samples_ms", [])))
        paired = None
        if n:   # interleaved rows: iteration i of both ran back to back
            paired = float(np.median(np.asarray(r["samples_ms"][:n]) / np.asarray(base["samples_ms"][:n])))
        twins.append({"family": r["family"], "backend": r["backend"], "size": r["size"],
                      "enhanced": r["model"], "baseline": r["twin"],
                      "enhanced_ms": r["median_ms"], "baseline_ms": base["median_ms"],
                      "ratio": round(ratio, 4), "paired_ratio": round(paired, 4) if paired else None,
                      "overhead_pct": round(100 * (ratio - 1), 2)})
        r["ratio_vs_twin"] = round(ratio, 4)

    # The default model on its best backend (torch / onnxruntime) vs LRASPP PyTorch, at 480x360
    # when measured, else at the first size where both ran (noted): at the frame size ("default")
    # and as the node runs it, at its own input size ("default-native").
    sizes = list(dict.fromkeys([REFERENCE_SIZE] + [r["size"] for r in rows]))
    cmp = _vs_lraspp(ok, sizes, "default", default_spec_label)
    deployed = _vs_lraspp(ok, sizes, "default-native", None)
    # every row against LRASPP PyTorch at its size (a column in bench.md)
    for r in rows:
        ref = ok.get(("lraspp-mbv3", "torch", r["size"]))
        if r["status"] == "ok" and ref:
            r["ratio_vs_lraspp_torch"] = round(r["median_ms"] / ref["median_ms"], 4)

    node_pct = overhead.get("percent_of_inference") if overhead else None
    return {"twins": twins, "default_vs_lraspp": cmp, "deployed_default_vs_lraspp": deployed,
            "node_overhead_percent": node_pct}


def _fmt(v, digits=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def format_table(rows: list[dict]) -> str:
    head = ["model", "variant", "backend", "size", "median ms", "p90 ms", "fps", "x twin", "x lraspp", "note"]
    lines = [head]
    for r in rows:
        lines.append([r["label"] if r["model"].startswith("default") else r["model"], r["variant"], r["backend"],
                      r["size"], _fmt(r.get("median_ms")), _fmt(r.get("p90_ms")), _fmt(r.get("fps")),
                      _fmt(r.get("ratio_vs_twin"), 3), _fmt(r.get("ratio_vs_lraspp_torch"), 2),
                      r["status"] if r["status"] != "ok" else (r.get("note") or "")])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head) - 1)]
    out = []
    for i, line in enumerate(lines):
        cells = [str(c).rjust(widths[j]) if 4 <= j <= 8 else str(c).ljust(widths[j])
                 for j, c in enumerate(line[:-1])]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_overhead(ov: dict) -> str:
    if not ov:
        return ""
    lines = [f"node per-frame work besides inference at {ov['size']}, isolated (median / p90 ms):"]
    for st in ov["steps"]:
        lines.append(f"  {st['step']:<58} {_fmt(st['median_ms'], 3):>8} {_fmt(st['p90_ms'], 3):>8}")
    for enc, v in ov["isolated_totals_ms"].items():
        pct = ", ".join(f"{p[enc]:.1f}% of {b}" for b, p in ov["isolated_percent_of_inference"].items())
        lines.append(f"  isolated total, {enc:<10} {v:8.3f} ms ({pct or 'no inference measured'})")
    lines.append(f"in the pipeline (rgb8 input; {ov['included_in_totals']}):")
    for backend, pl in ov["pipeline"].items():
        st = pl["steps"]
        parts = ", ".join(f"{n} {m['median_ms']:.2f}" for n, m in st.items() if n != "inference")
        lines.append(f"  {backend}: inference {st['inference']['median_ms']:.2f} ms; overhead "
                     f"{pl['overhead_ms']:.2f} ms = {pl['percent_of_inference']:.1f}% of inference")
        lines.append(f"    ({parts})")
    for backend, inf in ov["inference"].items():
        if inf.get("status") != "ok":
            lines.append(f"  {backend}: {inf.get('note')}")
    for n in ov["notes"]:
        lines.append(f"  note: {n}")
    return "\n".join(lines)


def write_markdown(path: Path, result: dict) -> None:
    m, s = result["machine"], result["settings"]
    L = ["# clipseg-bench results", ""]
    L.append(f"- date: {m['date']}; CPU: {m['cpu_model']} ({m['logical_cores']} logical cores, "
             f"{m['usable_cores']} usable); GPU: {m.get('gpu') or 'none'}")
    L.append(f"- torch {m['versions'].get('torch')}, onnxruntime {m['versions'].get('onnxruntime')}, "
             f"numpy {m['versions'].get('numpy')}, opencv {m['versions'].get('opencv')}; threads {s['threads']}; "
             f"load average at start {m.get('loadavg_start')}, end {m.get('loadavg_end')}")
    L.append(f"- device {s['device']} ({s['precision']}), batch 1, warm-up {s['warmup']}, "
             f"iterations {s['iters']}, interleaved {s['interleave']} (blocks of {s['block']}, "
             f"settle {s['settle_ms']:.0f} ms)")
    dm = result["default_model"]
    L.append(f"- default model: {dm['label']} — `{dm['path']}`"
             + (" — **untrained stand-in: latency only, labels are meaningless**" if dm["stand_in"] else ""))
    L += ["", "## Latency", "",
          "| model | variant | backend | size | median ms | p90 ms | FPS | × twin baseline | × LRASPP torch | note |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        note = r.get("note") or ""
        if r["status"] != "ok":
            note = f"{r['status']}: {note}"
        L.append(f"| {r['label'] if r['model'] == 'default' else r['model']} | {r['variant']} | {r['backend']} | "
                 f"{r['size']} | {_fmt(r.get('median_ms'))} | {_fmt(r.get('p90_ms'))} | {_fmt(r.get('fps'))} | "
                 f"{_fmt(r.get('ratio_vs_twin'), 3)} | {_fmt(r.get('ratio_vs_lraspp_torch'), 2)} | "
                 f"{note.replace('|', '/')} |")
    ratios = result["ratios"]
    L += ["", "## Enhanced / baseline twins", "",
          "| family | backend | size | enhanced ms | baseline ms | ratio | paired ratio |",
          "|---|---|---|---:|---:|---:|---:|"]
    for t in ratios["twins"]:
        L.append(f"| {t['family']} | {t['backend']} | {t['size']} | {_fmt(t['enhanced_ms'])} | "
                 f"{_fmt(t['baseline_ms'])} | {t['ratio']:.3f} | {_fmt(t['paired_ratio'], 3)} |")
    c = ratios["default_vs_lraspp"]
    L += ["", f"## Default model vs LRASPP-MobileNetV3 (PyTorch) at {c['size']}", ""]
    for what, c in (("at the frame size", c), ("as deployed (its own input size, frame resized)",
                                              ratios.get("deployed_default_vs_lraspp") or {"status": "-"})):
        if c["status"] == "ok":
            L.append(f"- {what}: {c['default']} on {c['default_backend']}: {c['default_ms']:.1f} ms; "
                     f"LRASPP PyTorch: {c['lraspp_torch_ms']:.1f} ms; ratio **{c['ratio']:.3f}**"
                     + (f" ({c['note']})" if c.get("note") else ""))
        else:
            L.append(f"- {what}: not measured ({c.get('note')})")
    ov = result.get("overhead")
    L += ["", "## Node per-frame overhead (besides inference)", ""]
    if ov:
        L += [f"Frame {ov['size']}, default model input {ov['model_input']} (height, width).", "",
              "| step | median ms | p90 ms |", "|---|---:|---:|"]
        for st in ov["steps"]:
            L.append(f"| {st['step']} | {_fmt(st['median_ms'], 3)} | {_fmt(st['p90_ms'], 3)} |")
        for b, inf in ov["inference"].items():
            if inf.get("status") == "ok":
                L.append(f"| *inference ({b})* | {_fmt(inf['median_ms'], 3)} | {_fmt(inf['p90_ms'], 3)} |")
        pct = ov["isolated_percent_of_inference"]
        L += ["", f"Isolated totals ({ov['included_in_totals']}):", "",
              "| input | overhead ms |" + "".join(f" % of {b} inference |" for b in pct),
              "|---|---:|" + "---:|" * len(pct)]
        for k, v in ov["isolated_totals_ms"].items():
            L.append(f"| {k} | {v:.3f} |" + "".join(f" {p[k]:.1f}% |" for p in pct.values()))
        if ov["pipeline"]:
            names = [n for n in next(iter(ov["pipeline"].values()))["steps"]]
            L += ["", "In the pipeline (rgb8 input, steps run frame after frame as in the node; median ms):", "",
                  "| backend | " + " | ".join(names) + " | overhead | % of inference |",
                  "|---|" + "---:|" * (len(names) + 2)]
            for b, pl in ov["pipeline"].items():
                L.append(f"| {b} | " + " | ".join(_fmt(pl["steps"][n]["median_ms"], 3) for n in names)
                         + f" | {pl['overhead_ms']:.3f} | **{pl['percent_of_inference']:.1f}%** |")
        for n in ov["notes"]:
            L.append(f"\n_note: {n}_")
    else:
        L.append("not measured (--no-overhead)")
    mem = result["memory"]
    L += ["", "## Node process memory", ""]
    if mem.get("status") == "ok":
        L.append(f"peak RSS (VmHWM) **{mem['peak_rss_mb']} MB**, RSS at end {mem['rss_end_mb']} MB; "
                 f"{mem['frames']} frames of {mem['frame']} in {result['settings']['node_seconds']} s "
                 f"({mem['fps']} FPS closed loop, round trip median {_fmt(mem['roundtrip']['median_ms'])} ms); "
                 f"startup {mem['startup_s']} s")
    else:
        L.append(f"{mem.get('status')}: {mem.get('note')}")
    L.append("")
    path.write_text("\n".join(L))


def write_plot(path: Path, rows: list[dict]) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    series: dict[tuple, list] = {}
    ticks: dict[int, str] = {}
    for r in rows:
        if r["status"] == "ok" and r.get("median_ms"):
            name = r["label"] if r["model"].startswith("default") else r["model"]
            series.setdefault((name, r["backend"]), []).append((r["pixels"], r["median_ms"]))
            ticks[r["pixels"]] = r["size"]
    fig, ax = plt.subplots(figsize=(10, 6), dpi=100)
    models = sorted({k[0] for k in series})
    cmap = plt.get_cmap("tab10")
    styles = {"torch": "-", "onnxruntime": "--", RAW: ":"}
    markers = {"torch": "o", "onnxruntime": "s", RAW: "^"}
    for (model, backend), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle=styles.get(backend, "-"),
                marker=markers.get(backend, "o"), color=cmap(models.index(model) % 10),
                label=f"{model} / {backend}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    if ticks:
        ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{ticks[k]}\n{k / 1e6:.2f} MP" for k in sorted(ticks)], fontsize=8)
    ax.set_xlabel("input pixels (width x height)")
    ax.set_ylabel("median latency, ms (log)")
    ax.set_title("clipseg-bench: median latency vs input size (batch 1)")
    ax.grid(True, which="both", alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipseg-bench",
        description="Latency of the clipseg segmenters (PyTorch / ONNX Runtime) against torchvision "
                    "references, the node's per-frame overhead and the node's peak memory. "
                    "Creates ROS contexts for the publish and memory sections but does not set any "
                    "DDS variable: `make bench` keeps DDS on this machine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", action="store_true",
                   help="training throughput instead (clipseg-bench --train --help for its options)")
    p.add_argument("--sizes", default=None, help=f"frame = model input sizes WxH (default {DEFAULT_SIZES}; "
                   f"--quick: {QUICK_SIZES})")
    p.add_argument("--models", default=None,
                   help=f"subset: {', '.join(MODEL_SPECS)} or groups {', '.join(MODEL_ALIASES)} "
                        f"(default all; --quick: {QUICK_MODELS})")
    p.add_argument("--model", type=Path, default=None,
                   help=f"default model file (default {PACKAGED_DEFAULT}, or an untrained stand-in)")
    p.add_argument("--backends", default="torch,onnxruntime", help="comma list of torch, onnxruntime")
    p.add_argument("--no-raw", dest="raw", action="store_false", help="skip the bare network forward rows")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default 3; --quick 1)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per row (default 20; --quick 3)")
    p.add_argument("--max-row-seconds", type=float, default=30.0,
                   help="stop timing a row after this much time (at least 3 iterations)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for PyTorch and ONNX Runtime (default: usable cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("fp32", "fp16"), default=None,
                   help="default fp32 on cpu, fp16 on cuda (fp16 needs cuda)")
    p.add_argument("--trt-cache", default=None,
                   help="TensorRT engine cache dir (default: the Segmenter's, ~/.cache/clipseg_ros/trt)")
    p.add_argument("--no-interleave", dest="interleave", action="store_false",
                   help="time rows one after another instead of round robin")
    p.add_argument("--block", type=int, default=5,
                   help="interleaved: timed calls per row per turn (back to back)")
    p.add_argument("--settle-ms", type=float, default=50.0,
                   help="interleaved: untimed calls at the start of each turn for at least this long")
    p.add_argument("--overhead-size", default="640x480", help="frame size of the node-overhead section")
    p.add_argument("--overhead-iters", type=int, default=None, help="timed calls per step (default 50; --quick 10)")
    p.add_argument("--no-overhead", dest="overhead", action="store_false", help="skip the node-overhead section")
    p.add_argument("--no-publish", dest="publish", action="store_false",
                   help="do not publish through rclpy in the overhead section (no ROS context)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the seg_node memory row")
    p.add_argument("--node-seconds", type=float, default=None, help="how long to feed seg_node (default 5; --quick 2)")
    p.add_argument("--node-backend", default="auto", help="backend parameter for seg_node")
    p.add_argument("--node-startup-timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    p.add_argument("--node-executable", default=None, help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few models and iterations: a smoke test, not a measurement")
    p.add_argument("--out", type=Path, default=None, help="output folder (default bench_results/<timestamp>)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(None if argv is None else [str(v) for v in argv])
    q = a.quick
    a.sizes = a.sizes or (QUICK_SIZES if q else DEFAULT_SIZES)
    a.models = a.models or (QUICK_MODELS if q else "all")
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 3)
    a.iters = a.iters if a.iters is not None else (3 if q else 20)
    a.overhead_iters = a.overhead_iters if a.overhead_iters is not None else (10 if q else 50)
    a.node_seconds = a.node_seconds if a.node_seconds is not None else (2.0 if q else 5.0)
    a.precision = a.precision or ("fp16" if a.device == "cuda" else "fp32")
    if a.precision == "fp16" and a.device != "cuda":
        p.error("--precision fp16 needs --device cuda")
    if a.warmup < 0 or a.iters < 1 or a.overhead_iters < 1 or a.block < 1 or a.settle_ms < 0:
        p.error("--warmup and --settle-ms must be >= 0, --iters, --overhead-iters and --block >= 1")
    if a.threads is None:
        try:
            a.threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            a.threads = os.cpu_count() or 1
    try:
        a.size_list = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
        parse_size(a.overhead_size)
        a.model_keys = resolve_models(a.models)
    except BenchError as exc:
        p.error(str(exc))
    a.backend_list = [b.strip() for b in a.backends.split(",") if b.strip()]
    bad = [b for b in a.backend_list if b not in BACKEND_CHOICES]
    if bad or not a.backend_list:
        p.error(f"--backends: {', '.join(bad) or 'empty'}; choose from {', '.join(BACKEND_CHOICES)}")
    if a.out is None:
        a.out = Path("bench_results") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return a


class _NullBar:
    def update(self, n=1):
        pass

    def set_description(self, s):
        pass

    def close(self):
        pass


def _progress(total: float):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} rows [{elapsed}<{remaining}]")


def run_bench(opts: argparse.Namespace) -> dict:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[clipseg-bench] {msg}", file=sys.stderr, flush=True)

    import torch

    torch.set_num_threads(opts.threads)
    if opts.device == "cuda":
        problem = cuda_problem()
        if problem:
            log(problem)
    if (opts.publish or opts.memory) and "FASTDDS_BUILTIN_TRANSPORTS" not in os.environ:
        log("note: FASTDDS_BUILTIN_TRANSPORTS is not set, so the ROS parts use the default DDS transports "
            "(network); `make bench` restricts them to this machine")
    machine = machine_info(opts.threads)
    want_onnx = "onnxruntime" in opts.backend_list
    backends = list(opts.backend_list) + ([RAW] if opts.raw else [])
    result: dict = {"schema": SCHEMA, "machine": machine}
    with tempfile.TemporaryDirectory(prefix="clipseg_bench_") as tmp:
        factory = ModelFactory(Path(tmp), want_onnx, opts.model, log)
        log(f"preparing {len(opts.model_keys)} model(s) at {len(opts.size_list)} size(s)")
        prepared = []
        for key in opts.model_keys:
            spec = MODEL_SPECS[key]
            try:
                prepared.append(factory.prepare(spec, opts.size_list))
            except BenchError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep going, the rows say why
                prepared.append(PreparedModel(spec, spec.key, error=f"preparation failed: "
                                              f"{type(exc).__name__}: {exc}"))
        n_rows = len(prepared) * len(opts.size_list) * len(backends)
        bar = _progress(n_rows)
        try:
            rows = run_latency(prepared, opts.size_list, backends, opts, bar, log)
        finally:
            bar.close()
        overhead = None
        if opts.overhead:
            log(f"node per-frame overhead at {opts.overhead_size}")
            overhead = run_overhead(factory.default_model_file(), parse_size(opts.overhead_size),
                                    opts.backend_list, opts, log)
        kept: list[Path] = []

        def default_for_node() -> Path:
            # the stand-in is kept next to the results, so the node row can be reproduced
            path = factory.default_model_file()
            if factory.stand_in:
                if not kept:
                    kept.append(out / "default-stand-in.clipseg")
                    kept[0].write_bytes(Path(path).read_bytes())
                return kept[0]
            return path

        memory = run_node_memory(default_for_node, opts, out, log)
        if factory.stand_in and factory.default_path is not None:
            default_for_node()
        default_path = str(kept[0] if kept else factory.default_path) if factory.default_path else None
    machine["loadavg_end"] = _loadavg()
    result.update(
        settings={"sizes": [size_name(s) for s in opts.size_list], "models": opts.model_keys,
                  "backends": backends, "device": opts.device, "precision": opts.precision,
                  "threads": opts.threads, "warmup": opts.warmup, "iters": opts.iters,
                  "interleave": opts.interleave, "block": opts.block, "settle_ms": opts.settle_ms,
                  "max_row_seconds": opts.max_row_seconds,
                  "overhead_size": opts.overhead_size, "overhead_iters": opts.overhead_iters,
                  "node_seconds": opts.node_seconds, "quick": opts.quick, "trt_cache": opts.trt_cache,
                  "argv": sys.argv[1:]},
        default_model={"label": factory.default_label, "stand_in": factory.stand_in, "path": default_path},
        rows=rows, overhead=overhead, memory=memory,
    )
    result["ratios"] = compute_ratios(rows, overhead, factory.default_label)
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    write_markdown(out / "bench.md", result)
    if opts.plot:
        write_plot(out / "latency_vs_size.png", rows)
    return result


def print_summary(result: dict, out: Path) -> None:
    print(format_table(result["rows"]))
    r = result["ratios"]
    if r["twins"]:
        print("\nenhanced / baseline (median):")
        for t in r["twins"]:
            print(f"  {t['family']:<12} {t['backend']:<12} {t['size']:<9} {t['ratio']:.3f}"
                  + (f"  (paired {t['paired_ratio']:.3f})" if t["paired_ratio"] else ""))
    for c in (r["default_vs_lraspp"], r.get("deployed_default_vs_lraspp") or {"status": "-"}):
        if c["status"] == "ok":
            print(f"\n{c['default']} ({c['default_backend']}) / LRASPP torch at {c['size']}: {c['ratio']:.3f}"
                  + (f" ({c['note']})" if c.get("note") else ""))
        else:
            print(f"\ndefault / LRASPP: {c.get('note')}")
    if result.get("overhead"):
        print("\n" + format_overhead(result["overhead"]))
    mem = result["memory"]
    if mem.get("status") == "ok":
        print(f"\nseg_node peak RSS (VmHWM): {mem['peak_rss_mb']} MB ({mem['frames']} frames, {mem['fps']} FPS)")
    else:
        print(f"\nseg_node memory: {mem.get('status')}: {mem.get('note')}")
    if result["default_model"]["stand_in"]:
        print("\nNOTE: the default model is an UNTRAINED STAND-IN (random MobileNetV2 enhanced): "
              "latency only.")
    written = [out / "bench.json", out / "bench.md", out / "latency_vs_size.png"]
    print("\nwrote " + ", ".join(str(p) for p in written if p.exists()))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train" in argv:
        # Training throughput lives with the training code (a robot installs only the runtime;
        # this import happens only for --train).
        argv.remove("--train")
        try:
            from clipseg_training.train_bench import main as train_main
        except ImportError as exc:
            print(f"clipseg-bench --train needs the training package (pip install '.[train]'): {exc}",
                  file=sys.stderr)
            return 2
        return train_main(argv)
    opts = parse_args(argv)
    try:
        result = run_bench(opts)
    except BenchError as exc:
        print(f"clipseg-bench: error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, Path(opts.out))
    if result["rows"] and all(r["status"] != "ok" for r in result["rows"]):
        print("clipseg-bench: no latency row could run (see the notes above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
