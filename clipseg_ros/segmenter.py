"""The segmenter: one model file in, labels (and confidence) for an RGB frame out.

Plain Python, no ROS.  Three backends run the same deploy graph (uint8 RGB in; uint8 labels and
float confidence out, normalisation/upsampling/argmax inside the graph):

- ``torch``: the network from ``clipseg_ros.networks`` with the file's weights; CPU or CUDA,
  fp32, fp16 (CUDA only) or bf16 (autocast with channels-last tensors; on CPUs with native bf16,
  AVX512-BF16 or AMX, the fastest CPU route: elsewhere it runs emulated and slower than fp32).
  The uint8 frame crosses to the GPU once and the labels come back once.
- ``onnxruntime``: the file's ONNX graph with the CPU, CUDA or TensorRT execution provider
  (TensorRT engines cached on disk).
- ``openvino``: the same ONNX graph compiled by OpenVINO for the CPU (``pip install openvino``),
  fp32 or bf16 (OpenVINO's bf16 inference precision; on CPUs with native bf16, AVX512-BF16 or AMX,
  the fastest CPU route measured here).

``backend="auto"`` on CPU picks OpenVINO in bf16 when OpenVINO is installed, the file has an ONNX
graph and the CPU has native bf16 (AVX512-BF16 or AMX; the fastest CPU route measured, at fp32's
val mIoU), else ONNX Runtime when it is installed; on CUDA it picks PyTorch (TensorRT when its
provider is installed).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from . import devices
from .devices import cuda_available as _cuda_available
from .model_file import ONNX_INPUT, ONNX_OUTPUTS, ModelFile, ModelFileError

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
#: auto: bf16 where backend auto picks OpenVINO (a CPU with native bf16); else fp32, except on a
#: CPU with ONNX Runtime when the file's int8 graph is within ``quantize.AUTO_MAX_MIOU_DROP`` mIoU
#: of fp32 (its own record) and measures faster here.  bf16 runs on the torch or openvino
#: backend: ONNX Runtime has no bf16 CPU kernels.
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")


class SegmenterConfigError(ValueError):
    """An impossible device/backend/precision combination."""


@dataclass
class SegmentationResult:
    labels: np.ndarray                      # HxW uint8 at the input resolution, 255 = unlabeled
    confidence: np.ndarray | None = None    # HxW float32 max softmax probability, or None
    timings: dict = field(default_factory=dict)   # preprocess / inference / postprocess, seconds


def _torch_installed() -> bool:
    import importlib.util

    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda:0`` when PyTorch or ONNX Runtime sees a GPU, else ``cpu`` (see
    :func:`clipseg_ros.devices.resolve_device`); an unknown name is a SegmenterConfigError."""
    try:
        return devices.resolve_device(device)
    except devices.DeviceError as exc:
        raise SegmenterConfigError(str(exc)) from None


class TorchBackend:
    """The deploy wrapper around ``network`` (a ``clipseg_ros.networks`` model, or anything
    returning ``{"logits": ...}``), normalised with ``mean`` / ``std`` (0..255 scale)."""

    name = "torch"

    def __init__(self, network, mean, std, device: str, precision: str, threads: int | None):
        import torch

        from .networks import DeployWrapper

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise SegmenterConfigError(f"device {device} requested but PyTorch sees no CUDA device")
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device)
        wrapper = DeployWrapper(network, mean, std).eval()
        if precision == "fp16":
            wrapper = wrapper.half()
        if precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise SegmenterConfigError(f"precision bf16: the GPU of {device} has no bf16 support; use fp16")
        # bf16: autocast per operation (weights stay fp32, batch-norm folded into fp32 statistics),
        # channels-last so oneDNN / cuDNN take their blocked bf16 kernels
        self.autocast = precision == "bf16"
        if self.autocast:
            wrapper = wrapper.to(memory_format=torch.channels_last)
        self.module = wrapper.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    batchable = True

    def __call__(self, image: np.ndarray, want_confidence: bool):
        labels, conf = self.run_batch(image[None], want_confidence)
        return labels[0], (conf[0] if conf is not None else None)

    def run_batch(self, images: np.ndarray, want_confidence: bool):
        """``images``: (N, H, W, 3) uint8 -> labels (N, H, W) uint8, confidence (N, H, W) or None."""
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
            labels, conf = self.module(x)
            labels = labels.cpu().numpy()
            conf = conf.float().cpu().numpy() if want_confidence else None
        return labels, conf


def labels_only_graph(onnx_bytes: bytes) -> bytes | None:
    """The deploy graph without its ``confidence`` output and the nodes only that output needs, or
    None when the ``onnx`` package is missing, the bytes do not parse, or the graph is not exactly
    the deploy graph's interface (then the full graph is loaded and its check reports what is
    wrong).  Labels are bit-identical: the kept nodes are the same nodes."""
    try:
        import onnx
        from onnx import TensorProto
    except ImportError:
        return None
    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception:  # noqa: BLE001 - DecodeError and friends: let ONNX Runtime report it
        return None
    g = model.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in g.output}
    ins = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    dims = ins[0].type.tensor_type.shape.dim if len(ins) == 1 else []
    if (len(ins) != 1 or ins[0].name != ONNX_INPUT or ins[0].type.tensor_type.elem_type != TensorProto.UINT8
            or len(dims) != 4 or dims[3].dim_value != 3
            or [v.name for v in g.output] != list(ONNX_OUTPUTS)
            or elem[ONNX_OUTPUTS[0]] != TensorProto.UINT8 or elem[ONNX_OUTPUTS[1]] != TensorProto.FLOAT):
        return None
    needed, kept = {ONNX_OUTPUTS[0]}, []
    for node in reversed(g.node):           # ONNX graphs are stored in topological order
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    labels_out = [v for v in g.output if v.name == ONNX_OUTPUTS[0]]
    del g.output[:]
    g.output.extend(labels_out)
    del g.node[:]
    g.node.extend(reversed(kept))
    unused = [t for t in g.initializer if t.name not in needed]
    for t in unused:
        g.initializer.remove(t)
    return model.SerializeToString()


class OnnxBackend:
    """An ONNX Runtime session over ``onnx_bytes`` (the deploy graph).  ``source``: the file the
    graph came from; it names the graph in errors and keys the TensorRT engine cache (without it,
    no TensorRT provider is used)."""

    name = "onnxruntime"

    def __init__(self, onnx_bytes: bytes | None, device: str, precision: str, threads: int | None,
                 trt_cache_dir: str | None = None, source: str | os.PathLike | None = None,
                 spin: bool = False, log=None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise SegmenterConfigError("backend onnxruntime requested but onnxruntime is not installed "
                                       "(pip install onnxruntime, or onnxruntime-gpu on CUDA)") from exc
        if onnx_bytes is None:
            raise SegmenterConfigError(f"model file {source} has no ONNX graph; use backend torch")
        self.source = source
        available = ort.get_available_providers()
        providers: list = []
        self.trt_cache = None
        self.trt_build = False
        self.engine_note: str | None = None
        if device.startswith("cuda"):
            dev_id = int(device.split(":")[1]) if ":" in device else 0
            if "TensorrtExecutionProvider" in available and source is not None:
                from .tensorrt_cache import tensorrt_cache

                self.trt_cache = tensorrt_cache(source, trt_cache_dir)
                self.trt_build = not self.trt_cache.has_engine
                providers.append(("TensorrtExecutionProvider",
                                  self.trt_cache.provider_options(dev_id, precision == "fp16")))
            if "CUDAExecutionProvider" in available:
                providers.append(("CUDAExecutionProvider", {"device_id": dev_id}))
            if not providers:
                raise SegmenterConfigError(
                    f"device {device} requested but ONNX Runtime has no CUDA/TensorRT provider "
                    f"(available: {', '.join(available)}); install onnxruntime-gpu or use device cpu")
        elif precision == "fp16":
            raise SegmenterConfigError("precision fp16 needs a CUDA device")
        providers.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spin:
            # ORT's idle worker threads otherwise busy-wait for tens of ms after every run(),
            # taking the cores the node's decode/colorize/publish work (and everything else on a
            # small robot computer) needs.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._ort, self._opts, self._providers = ort, opts, providers
        self._onnx_bytes = onnx_bytes
        t0 = time.perf_counter()
        if self.trt_build and log is not None:
            log(self.trt_cache.build_notice())
        # On the CPU provider, frames that want no confidence run a copy of the graph without the
        # confidence branch (ONNX Runtime computes every output whatever run() asks for; the
        # branch is ~7-10 % of the default model's time).  The full graph is then built on the
        # first confidence request, or at start-up through want_confidence_soon().
        labels_only = labels_only_graph(onnx_bytes) if not device.startswith("cuda") else None
        if labels_only is None:
            self.session = self._new_session(onnx_bytes)
            self.providers = self.session.get_providers()
            self._check_io()
            self._labels_session = self.session
        else:
            self.session = None
            self._labels_session = self._new_session(labels_only)
            self.providers = self._labels_session.get_providers()
        #: "labels-only graph when no confidence is asked for" (CPU) or None (one graph for both)
        self.graph_note = "labels-only graph without confidence" if labels_only is not None else None
        if self.trt_cache is not None and "TensorrtExecutionProvider" in self.providers:
            how = "built" if self.trt_build else "loaded from cache"
            self.engine_note = f"{how} in {time.perf_counter() - t0:.1f} s ({self.trt_cache.folder})"

    def _new_session(self, onnx_bytes: bytes):
        return self._ort.InferenceSession(onnx_bytes, sess_options=self._opts, providers=self._providers)

    def want_confidence_soon(self) -> None:
        """Build the full graph's session now (the node calls this at start-up when it publishes
        confidence, so the first such frame does not pay for it)."""
        if self.session is None:
            self.session = self._new_session(self._onnx_bytes)
            self._check_io()

    def _session_for(self, want_confidence: bool):
        if not want_confidence:
            return self._labels_session
        self.want_confidence_soon()
        return self.session

    def _check_io(self) -> None:
        """The graph must take and give what the deploy graph does (its class count was checked
        against the metadata when the file was opened)."""
        ins = self.session.get_inputs()
        outs = {o.name: o for o in self.session.get_outputs()}
        if (len(ins) != 1 or ins[0].name != ONNX_INPUT or ins[0].type != "tensor(uint8)"
                or len(ins[0].shape) != 4 or ins[0].shape[3] != 3):
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in ins)
            raise ModelFileError(self.source, f"model.onnx takes {got}, not one uint8 tensor "
                                 f"{ONNX_INPUT!r} of shape (N, H, W, 3)")
        for name, want in zip(ONNX_OUTPUTS, ("tensor(uint8)", "tensor(float)")):
            if name not in outs or outs[name].type != want:
                got = ", ".join(f"{o.name} {o.type}" for o in outs.values())
                raise ModelFileError(self.source, f"model.onnx outputs {got}; expected {name!r} as {want}")

    @property
    def batchable(self) -> bool:
        """True when the graph's batch dimension is dynamic (files exported since batching came;
        older files have a fixed batch of 1 and run frame by frame)."""
        dim = self._labels_session.get_inputs()[0].shape[0]
        return not isinstance(dim, int)

    def __call__(self, image: np.ndarray, want_confidence: bool):
        names = list(ONNX_OUTPUTS) if want_confidence else [ONNX_OUTPUTS[0]]
        outs = self._session_for(want_confidence).run(names, {ONNX_INPUT: image[None]})
        return outs[0][0], (outs[1][0] if want_confidence else None)

    def run_batch(self, images: np.ndarray, want_confidence: bool):
        names = list(ONNX_OUTPUTS) if want_confidence else [ONNX_OUTPUTS[0]]
        outs = self._session_for(want_confidence).run(names, {ONNX_INPUT: np.ascontiguousarray(images)})
        return outs[0], (outs[1] if want_confidence else None)


_OPENVINO_CORE = None


def openvino_core():
    """The process's one ``openvino.Core``, created on first use and kept until exit.

    OpenVINO's CPU plugin gives the thread that creates it an alternate signal stack of its own
    (``mmap``'d; openvinotoolkit/openvino#11894, for AMX) and, when the plugin is destroyed, puts
    back the stack it found only if its own is still the current one.  Two ``Core`` objects freed in
    the order they were made therefore leave the thread's alternate stack pointing at unmapped
    memory, and the next signal whose handler runs on that stack kills the process with SIGSEGV
    (``si_code`` SI_KERNEL): every Python signal handler is installed with ``SA_ONSTACK``, and
    PyTorch's DataLoader installs one for SIGCHLD, so a later child process exiting was enough
    (reproduced with two backends, a SIGCHLD handler and ``subprocess.run``).  One Core for the
    whole process means one plugin, created once and never freed before exit."""
    global _OPENVINO_CORE
    if _OPENVINO_CORE is None:
        import openvino as ov

        _OPENVINO_CORE = ov.Core()
    return _OPENVINO_CORE


class OpenVinoBackend:
    """The file's ONNX graph compiled by OpenVINO for the CPU, fp32 or bf16 (OpenVINO's
    ``INFERENCE_PRECISION_HINT``).  As on ONNX Runtime's CPU provider, frames that want no
    confidence run the labels-only copy of the graph; the full graph is compiled on the first
    confidence request (or by :meth:`want_confidence_soon`)."""

    name = "openvino"

    def __init__(self, onnx_bytes: bytes | None, device: str, precision: str, threads: int | None,
                 source: str | os.PathLike | None = None):
        try:
            import openvino  # noqa: F401 - the check; openvino_core() holds the one Core
        except ImportError as exc:
            raise SegmenterConfigError("backend openvino requested but openvino is not installed "
                                       "(pip install openvino)") from exc
        if onnx_bytes is None:
            raise SegmenterConfigError(f"model file {source} has no ONNX graph; use backend torch")
        if device.startswith("cuda"):
            raise SegmenterConfigError(f"backend openvino runs on the CPU; device is {device} "
                                       f"(use backend torch or onnxruntime on CUDA, or device cpu)")
        if precision not in ("fp32", "bf16"):
            raise SegmenterConfigError(f"backend openvino runs fp32 or bf16, not {precision}")
        self.source = source
        self._core = openvino_core()
        caps = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        #: OpenVINO's CPU plugin reports BF16 on CPUs with native bf16 (else it computes in f32)
        self.native_bf16 = "BF16" in caps
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                        "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self._config["INFERENCE_NUM_THREADS"] = int(threads)
        self._onnx_bytes = onnx_bytes
        labels_only = labels_only_graph(onnx_bytes)
        self._full = None
        try:
            if labels_only is None:
                self._full = self._compile(onnx_bytes)
                self._labels = self._full
            else:
                self._labels = self._compile(labels_only)
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for a graph it cannot read
            raise ModelFileError(source, f"OpenVINO cannot compile model.onnx ({type(exc).__name__}: "
                                 f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc})") from None
        self.precision_used = self._labels[0].get_property("INFERENCE_PRECISION_HINT")

    def _compile(self, onnx_bytes: bytes):
        model = self._core.read_model(model=onnx_bytes)
        names = {n for i in model.inputs for n in i.get_names()}
        if ONNX_INPUT not in names or len(model.inputs) != 1:
            raise ModelFileError(self.source, f"model.onnx takes {sorted(names)}, not one tensor {ONNX_INPUT!r}")
        compiled = self._core.compile_model(model, "CPU", self._config)
        outs = {n: o for o in compiled.outputs for n in o.get_names()}
        return compiled, compiled.create_infer_request(), outs

    def want_confidence_soon(self) -> None:
        if self._full is None:
            self._full = self._compile(self._onnx_bytes)

    @property
    def batchable(self) -> bool:
        return self._labels[0].input(0).get_partial_shape()[0].is_dynamic

    def _infer(self, images: np.ndarray, want_confidence: bool):
        if want_confidence:
            self.want_confidence_soon()
        _, request, outs = self._full if want_confidence else self._labels
        request.infer({ONNX_INPUT: np.ascontiguousarray(images)})
        labels = request.get_tensor(outs[ONNX_OUTPUTS[0]]).data.copy()
        conf = request.get_tensor(outs[ONNX_OUTPUTS[1]]).data.copy() if want_confidence else None
        return labels, conf

    def run_batch(self, images: np.ndarray, want_confidence: bool):
        return self._infer(images, want_confidence)

    def __call__(self, image: np.ndarray, want_confidence: bool):
        labels, conf = self._infer(image[None], want_confidence)
        return labels[0], (conf[0] if conf is not None else None)


MIN_INPUT_SIDE = 32     # the network downsamples 32x: a smaller side leaves no 1/32 feature map


def check_input_size(value) -> tuple[int, int]:
    """``value`` as a ``(height, width)`` pair of ints of at least :data:`MIN_INPUT_SIDE`, or a
    :class:`SegmenterConfigError` that names it."""
    try:
        hw = tuple(int(v) for v in value)
        ok = all(float(a) == float(b) for a, b in zip(hw, value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise SegmenterConfigError(f"input_size {value!r} is not a pair [height, width] of integers")
    if len(hw) != 2:
        raise SegmenterConfigError(f"input_size has {len(hw)} values; give [height, width]")
    if min(hw) < MIN_INPUT_SIDE:
        raise SegmenterConfigError(f"input_size {list(hw)}: both sides must be at least {MIN_INPUT_SIDE} "
                                   f"pixels (the network downsamples 32x)")
    return hw


class Segmenter:
    """Run a ``.clipseg`` model on RGB frames.

    >>> seg = Segmenter("model.clipseg", device="auto", backend="auto")
    >>> result = seg(rgb)          # rgb: HxWx3 uint8
    >>> result.labels.shape == rgb.shape[:2]
    """

    def __init__(self, model_path, device: str = "auto", backend: str = "auto",
                 precision: str = "auto", threads: int | None = None,
                 trt_cache_dir: str | None = None, ort_spinning: bool = False, log=None,
                 input_size=None):
        """``log``: a callable for start-up notices (the node passes its logger), e.g. that a
        TensorRT engine is being built.  ``input_size``: ``(height, width)`` the network sees,
        instead of the file's own ``input_size`` (a smaller size is faster and less accurate; labels
        still come at each frame's size)."""
        self.model_path = Path(model_path)
        self.model = ModelFile(model_path)          # raises ModelFileError with the file's name
        self.meta = self.model.meta
        override = check_input_size(input_size) if input_size is not None else None
        #: (height, width) the network sees, or None for each frame's own size
        self.input_size = override or (tuple(self.meta.input_size) if self.meta.input_size else None)
        #: where input_size comes from: "model file", "requested" or None (each frame's own size)
        self.input_size_source = "requested" if override else ("model file" if self.input_size else None)
        if backend not in BACKENDS:
            raise SegmenterConfigError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise SegmenterConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        if precision == "fp16" and not self.device.startswith("cuda"):
            raise SegmenterConfigError("precision fp16 needs a CUDA device (device is cpu)")
        self.requested_precision = precision
        #: why this precision (auto's choice, with the numbers it was made on)
        self.precision_note = "" if precision == "auto" else "as requested"
        if backend == "auto" and precision in ("auto", "bf16") and self._openvino_bf16_fits():
            backend = "openvino"
            if precision == "auto":
                precision = "bf16"
                self.precision_note = ("auto: bf16 on openvino (this CPU has native bf16; the fastest CPU "
                                       "route measured, at fp32's val mIoU; backend onnxruntime or "
                                       "precision fp32 to opt out)")
        if precision == "bf16":
            backend = self._bf16_backend(backend)
        if backend == "auto":
            backend = self._auto_backend()
        if precision == "auto":
            precision, self.precision_note = self._auto_precision(backend, threads)
        elif precision == "int8":
            self._check_int8(backend)
        self.precision = precision
        if backend == "onnxruntime" and precision == "int8":
            try:
                self._backend = OnnxBackend(self.model.int8_bytes, self.device, "fp32", threads,
                                            source=self.model.path, spin=ort_spinning, log=log)
            except ModelFileError:
                raise
            except Exception as exc:  # noqa: BLE001 - ORT's InvalidGraph, Fail, ... for a bad member
                from .model_file import INT8_NAME

                raise ModelFileError(self.model.path, f"member {INT8_NAME} cannot be loaded by ONNX "
                                     f"Runtime ({type(exc).__name__}: {exc})") from None
        elif backend == "openvino":
            self._backend = OpenVinoBackend(self.model.onnx_bytes, self.device, precision, threads,
                                            source=self.model.path)
            if precision == "bf16" and not self._backend.native_bf16:
                self.precision_note = ("as requested; OpenVINO reports no native bf16 on this CPU "
                                       "(it computes in f32)")
        elif backend == "torch":
            self._backend = TorchBackend(self.model.build_network(), self.meta.mean, self.meta.std,
                                         self.device, precision, threads)
        else:
            self._backend = OnnxBackend(self.model.onnx_bytes, self.device, precision, threads, trt_cache_dir,
                                        source=self.model.path, spin=ort_spinning, log=log)
        self.backend = self._backend.name
        self.class_names = list(self.meta.class_names)
        self.palette = np.asarray(self.meta.palette, dtype=np.uint8)
        self._resized: np.ndarray | None = None

    def _openvino_bf16_fits(self) -> bool:
        """auto's CPU pick: OpenVINO bf16 when the device is the CPU, the file has an ONNX graph,
        OpenVINO is installed and the CPU has native bf16 kernels (without them OpenVINO computes
        bf16 in f32, and ONNX Runtime stays the pick)."""
        import importlib.util

        from .devices import cpu_has_native_bf16_flag

        if self.device.startswith("cuda") or self.model.onnx_bytes is None:
            return False
        if "openvino" not in sys.modules and importlib.util.find_spec("openvino") is None:
            return False
        return bool(cpu_has_native_bf16_flag())

    def _bf16_backend(self, backend: str) -> str:
        """bf16 runs on the torch backend (``auto`` becomes ``torch``); on a CPU without native bf16
        the note says it is emulated."""
        if backend == "onnxruntime":
            raise SegmenterConfigError("precision bf16 needs backend torch or openvino (ONNX Runtime has "
                                       "no bf16 CPU kernels); use backend torch, openvino or auto, or "
                                       "precision fp32")
        if backend == "openvino":
            if self.requested_precision == "bf16":      # auto's pick keeps auto's note
                self.precision_note = "as requested (OpenVINO bf16 inference precision)"
            return "openvino"
        if not self.model.has_torch_weights:
            raise SegmenterConfigError(f"precision bf16 runs on PyTorch, but model file {self.model_path} "
                                       f"has no PyTorch weights (ONNX only); use precision fp32")
        if not _torch_installed():
            raise SegmenterConfigError("precision bf16 runs on PyTorch, which is not installed")
        if not self.device.startswith("cuda"):
            from .devices import cpu_supports_bf16

            if not cpu_supports_bf16():
                self.precision_note = ("as requested; this CPU has no native bf16 (AVX512-BF16 or AMX): "
                                       "emulated, usually slower than fp32")
            else:
                self.precision_note = "as requested (this CPU has native bf16)"
        return "torch"

    def _check_int8(self, backend: str) -> None:
        from .model_file import INT8_NAME

        if self.device.startswith("cuda"):
            raise SegmenterConfigError("precision int8 is for CPUs (the int8 graph runs on ONNX Runtime's "
                                       "CPU provider); on CUDA use fp32 or fp16")
        if backend != "onnxruntime":
            raise SegmenterConfigError(f"precision int8 needs backend onnxruntime (got {backend})")
        if self.model.int8_bytes is None:
            raise SegmenterConfigError(
                f"precision int8: model file {self.model_path} has no {INT8_NAME} member; add one with "
                f"python -m clipseg_ros.quantize {self.model_path.name} --calib <images>")

    def _auto_precision(self, backend: str, threads: int | None) -> tuple[str, str]:
        """auto: (precision, why)."""
        if self.device.startswith("cuda"):
            return "fp32", "auto: fp32 on CUDA (fp16 on request)"
        if backend == "openvino":
            return "fp32", "auto: fp32 on openvino (bf16 on request)"
        if backend != "onnxruntime":
            return "fp32", f"auto: fp32 (int8 needs the onnxruntime backend, not {backend})"
        rec = self.meta.int8
        if self.model.int8_bytes is None or rec is None:
            return "fp32", "auto: fp32 (the model file has no int8 graph)"
        from .quantize import AUTO_MAX_MIOU_DROP, time_graphs

        m8, m32 = rec.get("val_miou"), rec.get("fp32_val_miou")
        if m8 is None or m32 is None:
            return "fp32", "auto: fp32 (the file records no val mIoU for its int8 graph)"
        if m32 - m8 > AUTO_MAX_MIOU_DROP:
            return "fp32", (f"auto: fp32 (int8 val mIoU {m8:.2f} is {m32 - m8:.2f} below fp32's {m32:.2f}; "
                            f"more than {AUTO_MAX_MIOU_DROP})")
        h, w = self.input_size or (256, 256)
        frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        try:
            ms = time_graphs({"fp32": self.model.onnx_bytes, "int8": self.model.int8_bytes}, frame,
                             threads or 0, rounds=10)
        except Exception as exc:  # noqa: BLE001 - a bad member: say so where int8 is asked for
            from .model_file import INT8_NAME

            raise ModelFileError(self.model.path, f"member {INT8_NAME} cannot be run by ONNX Runtime "
                                 f"({type(exc).__name__}: {exc})") from None
        faster = ms["int8"] < ms["fp32"]
        return ("int8" if faster else "fp32"), (
            f"auto: {'int8' if faster else 'fp32'} (int8 val mIoU {m8:.2f} vs fp32 {m32:.2f}; measured "
            f"here {ms['int8']:.1f} ms int8 vs {ms['fp32']:.1f} ms fp32)")

    def _auto_backend(self) -> str:
        have_ort = self.model.onnx_bytes is not None
        try:
            import onnxruntime as ort
            providers = ort.get_available_providers()
        except ImportError:
            have_ort, providers = False, []
        have_torch = self.model.has_torch_weights and _torch_installed()
        if self.device.startswith("cuda"):
            if have_ort and "TensorrtExecutionProvider" in providers:
                return "onnxruntime"
            if have_torch and _cuda_available():
                return "torch"
            if have_ort and "CUDAExecutionProvider" in providers:
                return "onnxruntime"
        if have_ort:
            return "onnxruntime"
        if have_torch:
            return "torch"
        raise SegmenterConfigError(
            f"no usable backend for {self.model_path}: install onnxruntime (file has ONNX: "
            f"{self.model.onnx_bytes is not None}) or torch (file has weights: {self.model.has_torch_weights})")

    @property
    def engine_note(self) -> str | None:
        """How the TensorRT engine came to be (built / loaded from cache, seconds, folder), or None."""
        return getattr(self._backend, "engine_note", None)

    @property
    def description(self) -> str:
        extra = ""
        if self.backend == "onnxruntime":
            extra = " [" + ",".join(self._backend.providers) + "]"
        return f"{self.backend}{extra} on {self.device} ({self.precision})"

    def want_confidence_soon(self) -> None:
        """Get ready to give confidence maps (ONNX Runtime on CPU builds its full graph now rather
        than on the first frame that asks for one)."""
        prepare = getattr(self._backend, "want_confidence_soon", None)
        if prepare is not None:
            prepare()

    @property
    def batchable(self) -> bool:
        """Whether :meth:`segment_batch` runs several frames in one inference call."""
        return bool(getattr(self._backend, "batchable", False))

    def segment_batch(self, frames: list, want_confidence: bool = False) -> list:
        """Segment several RGB frames (e.g. one per camera).  Frames that reach the network at the
        same size go through ONE inference call when the backend allows it (:attr:`batchable`);
        otherwise, and for a single frame, they run one by one.  Returns a
        :class:`SegmentationResult` per frame, in order; ``timings["inference"]`` is the batch's
        time and ``timings["batch"]`` its size."""
        if len(frames) <= 1 or not self.batchable:
            return [self(f, want_confidence) for f in frames]
        t0 = time.perf_counter()
        inputs = [self.preprocess(f).copy() for f in frames]      # preprocess reuses one buffer
        if len({x.shape for x in inputs}) != 1:
            return [self(f, want_confidence) for f in frames]
        t1 = time.perf_counter()
        labels, conf = self._backend.run_batch(np.stack(inputs), want_confidence)
        t2 = time.perf_counter()
        out = []
        for i, rgb in enumerate(frames):
            lab = labels[i]
            cf = conf[i] if conf is not None else None
            h, w = rgb.shape[:2]
            if lab.shape != (h, w):
                lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
                if cf is not None:
                    cf = cv2.resize(cf, (w, h), interpolation=cv2.INTER_LINEAR)
            out.append(SegmentationResult(lab, cf, {"preprocess": (t1 - t0) / len(frames),
                                                    "inference": t2 - t1, "postprocess": 0.0,
                                                    "batch": len(frames)}))
        return out

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
        if self.input_size is None or tuple(rgb.shape[:2]) == self.input_size:
            return np.ascontiguousarray(rgb)
        h, w = self.input_size
        if self._resized is None or self._resized.shape[:2] != (h, w):
            self._resized = np.empty((h, w, 3), np.uint8)
        cv2.resize(rgb, (w, h), dst=self._resized, interpolation=cv2.INTER_LINEAR)
        return self._resized

    def __call__(self, rgb: np.ndarray, want_confidence: bool = False) -> SegmentationResult:
        t0 = time.perf_counter()
        x = self.preprocess(rgb)
        t1 = time.perf_counter()
        labels, conf = self._backend(x, want_confidence)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            if conf is not None:
                conf = cv2.resize(conf, (w, h), interpolation=cv2.INTER_LINEAR)
        t3 = time.perf_counter()
        return SegmentationResult(labels, conf, {"preprocess": t1 - t0, "inference": t2 - t1,
                                                 "postprocess": t3 - t2})


__all__ = ["BACKENDS", "PRECISIONS", "ModelFileError", "OnnxBackend", "Segmenter", "SegmentationResult",
           "SegmenterConfigError", "TorchBackend", "resolve_device"]
