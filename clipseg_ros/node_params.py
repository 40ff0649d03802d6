"""The parameter table of ``seg_node``: names, defaults, types, ranges, validation and descriptors.

ROS-light: only ``rcl_interfaces`` messages (for the descriptors) and ``rclpy.parameter``'s type enum;
:mod:`clipseg_ros.node` declares the parameters from :data:`PARAMETERS`, and
:mod:`clipseg_ros.node_help` renders the same table for ``--help`` and the docs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

from . import image_codec
from .conventions import DEFAULT_MODEL
from .segmenter import BACKENDS, PRECISIONS, SegmenterConfigError, check_input_size

__all__ = ["DEFAULT_MODEL", "NodeConfig", "PARAMETERS", "PARAMETER_NAMES", "RELIABILITY_NAMES",
           "RUNTIME_PARAMETERS", "validate_parameter"]

#: The package's default model file (used when ``model`` is empty).

_DEVICE_RE = re.compile(r"auto|cpu|cuda|cuda:\d+")
#: The accepted values of qos_reliability / output_qos_reliability.
RELIABILITY_NAMES = ("best_effort", "reliable")


@dataclass(frozen=True)
class _Param:
    name: str
    default: object            # a value, or a Parameter.Type for "no default"
    ptype: int                 # rcl_interfaces ParameterType
    description: str
    read_only: bool = False
    float_range: tuple | None = None
    int_range: tuple | None = None
    constraints: str = ""


_T = ParameterType
PARAMETERS: tuple[_Param, ...] = (
    _Param("model", "", _T.PARAMETER_STRING,
           "Path of the .clipseg model file; empty = the package's default model", read_only=True),
    _Param("device", "auto", _T.PARAMETER_STRING,
           "Inference device; auto = the first CUDA device if there is one, else cpu", read_only=True,
           constraints="auto | cpu | cuda | cuda:N"),
    _Param("backend", "auto", _T.PARAMETER_STRING,
           "Inference backend; auto on CPU = OpenVINO in bf16 where the CPU has native bf16 (AVX512-BF16 / "
           "AMX) and openvino is installed, else ONNX Runtime; on a GPU PyTorch or ONNX Runtime (CUDA / "
           "TensorRT)", read_only=True,
           constraints="auto | torch | onnxruntime | openvino"),
    _Param("precision", "auto", _T.PARAMETER_STRING,
           "Inference precision: fp16 needs CUDA; bf16 runs on PyTorch or OpenVINO (fast on CPUs with native "
           "bf16: AVX512-BF16 / AMX); int8 needs a model file with an int8 graph (CPU, "
           "ONNX Runtime); auto = bf16 where backend auto picks OpenVINO, else fp32, or int8 on a CPU "
           "with ONNX Runtime when the file records it within 0.5 val mIoU of fp32 and it measures "
           "faster at start-up", read_only=True,
           constraints="auto | fp32 | fp16 | bf16 | int8"),
    _Param("threads", 0, _T.PARAMETER_INTEGER, "CPU threads for inference; 0 = library default",
           read_only=True, int_range=(0, 256)),
    _Param("input_size", Parameter.Type.INTEGER_ARRAY, _T.PARAMETER_INTEGER_ARRAY,
           "Network input [height, width]: frames are resized to it, labels come back at the frame's "
           "size; smaller is faster and less accurate; unset or [] = the model file's input_size",
           read_only=True, constraints="[height, width], each >= 32"),
    _Param("input_compressed", False, _T.PARAMETER_BOOL,
           "Subscribe to image/compressed (CompressedImage, jpeg/png) instead of image", read_only=True),
    _Param("qos_reliability", "best_effort", _T.PARAMETER_STRING, "Input subscription reliability",
           read_only=True, constraints="best_effort | reliable"),
    _Param("qos_depth", 1, _T.PARAMETER_INTEGER, "Input subscription queue depth (keep last)",
           read_only=True, int_range=(1, 1000)),
    _Param("output_qos_reliability", "reliable", _T.PARAMETER_STRING,
           "Reliability of the output publishers (keep last, depth 1)", read_only=True,
           constraints="best_effort | reliable"),
    _Param("diagnostics_period", 1.0, _T.PARAMETER_DOUBLE, "Seconds between /diagnostics messages",
           read_only=True, float_range=(0.05, 3600.0)),
    _Param("overlay_alpha", 0.5, _T.PARAMETER_DOUBLE,
           "Weight of the color mask in ~/overlay: 0 = the camera image, 1 = the color mask",
           float_range=(0.0, 1.0)),
    _Param("publish_color", True, _T.PARAMETER_BOOL, "Publish ~/color (when subscribed)"),
    _Param("publish_overlay", True, _T.PARAMETER_BOOL, "Publish ~/overlay (when subscribed)"),
    _Param("publish_confidence", False, _T.PARAMETER_BOOL, "Publish ~/confidence (when subscribed)"),
    _Param("palette", Parameter.Type.INTEGER_ARRAY, _T.PARAMETER_INTEGER_ARRAY,
           "Color override: flat r,g,b list, 3 values (0..255) per model class; unset or [] = the "
           "model's palette", constraints="length 3*K, values 0..255"),
    _Param("max_image_pixels", 0, _T.PARAMETER_INTEGER,
           "Reject input images with more pixels than this, before decoding (compressed: from the "
           "PNG/JPEG header); 0 = the codec's limit (64 Mpx)",
           int_range=(0, image_codec.MAX_PIXELS)),
    _Param("autostart", True, _T.PARAMETER_BOOL,
           "Walk the lifecycle to active at start-up; false: wait in unconfigured for "
           "configure / activate through ~/change_state", read_only=True),
    _Param("label_groups", "", _T.PARAMETER_STRING,
           "YAML file mapping model classes to groups for ~/groups and ~/groups/color; "
           "empty = no groups", read_only=True, constraints="path or empty"),
    _Param("cameras", Parameter.Type.STRING_ARRAY, _T.PARAMETER_STRING_ARRAY,
           "Image topics of several cameras served by one model (per-camera mailboxes, outputs "
           "under ~/<camera>/ where <camera> is the topic's namespace: /front/image_raw -> "
           "~/front/labels; frames ready together are batched); unset or [] = the single image "
           "topic", read_only=True, constraints="distinct topics in distinct namespaces"),
)
PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)
_BY_NAME = {p.name: p for p in PARAMETERS}
#: Parameters that take effect while the node runs (the others need a restart).
RUNTIME_PARAMETERS = tuple(p.name for p in PARAMETERS if not p.read_only)


@dataclass(frozen=True)
class NodeConfig:
    """The node's parameters as plain values."""

    model: str = ""
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    threads: int = 0
    input_size: tuple = field(default_factory=tuple)
    input_compressed: bool = False
    qos_reliability: str = "best_effort"
    qos_depth: int = 1
    output_qos_reliability: str = "reliable"
    diagnostics_period: float = 1.0
    overlay_alpha: float = 0.5
    publish_color: bool = True
    publish_overlay: bool = True
    publish_confidence: bool = False
    palette: tuple = field(default_factory=tuple)
    max_image_pixels: int = 0
    label_groups: str = ""
    autostart: bool = True
    cameras: tuple = field(default_factory=tuple)

    def model_path(self) -> Path:
        return Path(self.model).expanduser() if self.model else DEFAULT_MODEL


def validate_parameter(name: str, value, num_classes: int | None = None) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None when it is)."""
    spec = _BY_NAME.get(name)
    if spec is None:
        return None        # not ours (use_sim_time, ...)
    if name == "device":
        if not isinstance(value, str) or not _DEVICE_RE.fullmatch(value.strip().lower()):
            return f"device {value!r} is not one of auto, cpu, cuda, cuda:N"
    elif name == "backend":
        if value not in BACKENDS:
            return f"backend {value!r} is not one of {', '.join(BACKENDS)}"
    elif name == "precision":
        if value not in PRECISIONS:
            return f"precision {value!r} is not one of {', '.join(PRECISIONS)}"
    elif name in ("qos_reliability", "output_qos_reliability"):
        if value not in RELIABILITY_NAMES:
            return f"{name} {value!r} is not one of best_effort, reliable"
    elif name == "palette":
        vals = list(value or [])
        if not vals:
            return None
        if len(vals) % 3:
            return f"palette has {len(vals)} values, not a multiple of 3 (r,g,b per class)"
        if num_classes is not None and len(vals) != 3 * num_classes:
            return (f"palette has {len(vals) // 3} colors but the model has {num_classes} classes "
                    f"(give {3 * num_classes} values)")
        bad = [v for v in vals if not 0 <= int(v) <= 255]
        if bad:
            return f"palette values must be in 0..255, got {bad[:3]}"
    elif name == "input_size":
        vals = list(value or [])
        if not vals:
            return None
        try:
            check_input_size(vals)
        except SegmenterConfigError as exc:
            return str(exc)
    elif name == "cameras":
        vals = list(value or [])
        for i, v in enumerate(vals):
            if not isinstance(v, str) or not v.strip():
                return f"cameras[{i}] is {v!r}, not an image topic name"
        seen = {}
        for i, v in enumerate(vals):
            if v.strip() in seen:
                return f"cameras[{i}] {v!r} repeats cameras[{seen[v.strip()]}]"
            seen[v.strip()] = i
    elif spec.float_range is not None:
        lo, hi = spec.float_range
        if not isinstance(value, (int, float)) or math.isnan(value) or not lo <= value <= hi:
            return f"{name} must be in [{lo:g}, {hi:g}], got {value!r}"
    elif spec.int_range is not None:
        lo, hi = spec.int_range
        if not isinstance(value, int) or not lo <= value <= hi:
            return f"{name} must be an integer in [{lo}, {hi}], got {value!r}"
    return None


def _descriptor(p: _Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=p.name, type=p.ptype, description=p.description,
                            additional_constraints=p.constraints, read_only=p.read_only)
    if p.float_range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.float_range[0]),
                                                     to_value=float(p.float_range[1]), step=0.0)]
    if p.int_range is not None:
        d.integer_range = [IntegerRange(from_value=int(p.int_range[0]), to_value=int(p.int_range[1]),
                                        step=1)]
    return d
