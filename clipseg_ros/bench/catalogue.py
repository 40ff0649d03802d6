"""The benchmark's model catalogue: row names, families, twins and the groups ``--models`` accepts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..conventions import DEFAULT_MODEL
from ..segmenter import BACKENDS


SCHEMA = "clipseg-bench/1"
DEFAULT_SIZES = "480x360,640x480,1024x512"
QUICK_SIZES = "256x192"
QUICK_MODELS = "default,default-native,mobilenetv2,lraspp"
TEXT_DIM = 1024                        # CLIP RN50 text width
REFERENCE_SIZE = "480x360"             # where default / LRASPP is compared
PACKAGED_DEFAULT = DEFAULT_MODEL
REPO = Path(__file__).resolve().parents[2]


def shown_path(path) -> str:
    """``path`` relative to the repository when it lies inside it, else its name: result files
    carry no paths of the machine they were made on."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else Path(path).name


@dataclass(frozen=True)
class ModelSpec:
    key: str                   # row name
    family: str                # stdc1 / stdc2 / mobilenetv2 / default / torchvision
    variant: str               # guided / baseline / default / reference
    arch: str | None = None    # clipseg_ros.networks.create_model name
    text_dim: int | None = None
    twin: str | None = None    # key of the baseline twin (guided rows)
    tv: str | None = None      # torchvision builder
    feat32: int | None = None  # MobileNetV2's widened 1/32 feature (the faithful variant)
    precision: str | None = None   # this row's precision, whatever --precision says (deployed rows)
    skip4: bool = False        # MobileNetV2's stride-4 refinement branch (model.skip4)


MODEL_SPECS: dict[str, ModelSpec] = {s.key: s for s in (
    ModelSpec("default", "default", "default"),
    # as deployed: the file's own input size; the frame is resized to it and the labels back
    ModelSpec("default-native", "default", "deployed"),
    # the same, at the node's other CPU precisions: bf16 autocast (PyTorch rows only) and the
    # file's int8 graph (ONNX Runtime rows only; skipped when the file has none)
    ModelSpec("default-native-bf16", "default", "deployed", precision="bf16"),
    ModelSpec("default-native-int8", "default", "deployed", precision="int8"),
    ModelSpec("stdc1-guided", "stdc1", "guided", "stdc1", TEXT_DIM, twin="stdc1-base"),
    ModelSpec("stdc1-base", "stdc1", "baseline", "stdc1", None),
    ModelSpec("stdc2-guided", "stdc2", "guided", "stdc2", TEXT_DIM, twin="stdc2-base"),
    ModelSpec("stdc2-base", "stdc2", "baseline", "stdc2", None),
    ModelSpec("mobilenetv2-guided", "mobilenetv2", "guided", "mobilenetv2", TEXT_DIM, twin="mobilenetv2-base"),
    ModelSpec("mobilenetv2-base", "mobilenetv2", "baseline", "mobilenetv2", None),
    # the faithful variant (the decisive experiment's network): the 1/32 feature widened to the
    # text width inside the backbone of both twins, so the guidance's projection is an identity
    ModelSpec("mobilenetv2f-guided", "mobilenetv2f", "guided", "mobilenetv2", TEXT_DIM,
              twin="mobilenetv2f-base", feat32=TEXT_DIM),
    ModelSpec("mobilenetv2f-base", "mobilenetv2f", "baseline", "mobilenetv2", None, feat32=TEXT_DIM),
    # the same baseline with the stride-4 refinement branch (model.skip4: logits at 1/4)
    ModelSpec("mobilenetv2f-skip4-base", "mobilenetv2f-skip4", "baseline", "mobilenetv2", None,
              feat32=TEXT_DIM, skip4=True),
    # the peer network users would build instead: torchvision's LR-ASPP head on our ImageNet
    # MobileNetV2 (clipseg_ros.networks.lraspp), exported through the same model file path
    ModelSpec("lraspp-mbv2-peer", "lraspp_mobilenetv2", "peer", "lraspp_mobilenetv2", None),
    ModelSpec("lraspp-mbv3", "torchvision", "reference", tv="lraspp_mobilenet_v3_large"),
    ModelSpec("deeplabv3-mbv3", "torchvision", "reference", tv="deeplabv3_mobilenet_v3_large"),
)}

MODEL_ALIASES = {
    "all": list(MODEL_SPECS),
    "defaults": ["default", "default-native"],
    "deployed": ["default-native", "default-native-bf16", "default-native-int8"],
    "stdc1": ["stdc1-guided", "stdc1-base"],
    "stdc2": ["stdc2-guided", "stdc2-base"],
    "stdc": ["stdc1-guided", "stdc1-base", "stdc2-guided", "stdc2-base"],
    "mobilenetv2": ["mobilenetv2-guided", "mobilenetv2-base"],
    "mbv2": ["mobilenetv2-guided", "mobilenetv2-base"],
    "mobilenetv2f": ["mobilenetv2f-guided", "mobilenetv2f-base"],
    "twins": ["stdc1-guided", "stdc1-base", "stdc2-guided", "stdc2-base", "mobilenetv2-guided", "mobilenetv2-base",
              "mobilenetv2f-guided", "mobilenetv2f-base"],
    "lraspp": ["lraspp-mbv3"],
    "skip4": ["mobilenetv2f-skip4-base"],
    "peer": ["lraspp-mbv2-peer"],
    "deeplabv3": ["deeplabv3-mbv3"],
    "torchvision": ["lraspp-mbv3", "deeplabv3-mbv3"],
    # the keys before the guided twins were called guided (results files up to 0.1.0 use them)
    "stdc1-enh": ["stdc1-guided"], "stdc2-enh": ["stdc2-guided"], "mobilenetv2-enh": ["mobilenetv2-guided"],
}

BACKEND_CHOICES = tuple(b for b in BACKENDS if b != "auto")     # the rows' backends
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
