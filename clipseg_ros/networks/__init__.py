"""Network definitions, one of each, shared by training, export and the PyTorch backend.

``create_model("stdc1" | "stdc2" | "mobilenetv2", num_classes, text_dim=None)`` builds the
baseline (``text_dim=None``) or its textually guided twin.  ``arch_spec`` / ``build_from_spec``
round-trip the architecture through the model file's metadata.
"""
from __future__ import annotations

from .deploy import DeployWrapper, inference_network
from .mobilenetv2 import MobileNetV2Backbone
from .segmentor import ContextPathSegmenter, HeadWidths
from .stdc import STDCNet, stdc1, stdc2
from .text_guidance import TextGuidance

_BACKBONES = {
    "stdc1": (stdc1, HeadWidths()),
    "stdc2": (stdc2, HeadWidths()),
    "mobilenetv2": (MobileNetV2Backbone, HeadWidths(context=128, fuse=128, head_mid=128, aux_mid=64)),
}

ARCHITECTURES = tuple(_BACKBONES)


def create_model(name: str, num_classes: int, text_dim: int | None = None, pretrained=None,
                 detail_head: bool = True, aux_heads: bool = True) -> ContextPathSegmenter:
    """Build a segmenter.

    ``pretrained``: backbone ImageNet weights; for ``mobilenetv2`` a local torchvision file or
    ``"download"``; for STDC a local STDCNet checkpoint (state dict or {'state_dict': ...}).
    """
    key = name.lower()
    if key not in _BACKBONES:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    if num_classes < 1 or num_classes > 255:
        raise ValueError(f"num_classes must be in 1..255 (labels are mono8, 255 = unlabeled), got {num_classes}")
    if text_dim is not None and text_dim < 1:
        raise ValueError(f"text_dim must be positive or None, got {text_dim}")
    factory, widths = _BACKBONES[key]
    backbone = factory()
    if pretrained:
        if key == "mobilenetv2":
            backbone.load_imagenet(pretrained)
        else:
            _load_stdc_pretrained(backbone, pretrained)
    model = ContextPathSegmenter(backbone, num_classes, text_dim, widths, detail_head=detail_head,
                                 aux_heads=aux_heads)
    model.arch_name = key
    return model


def arch_spec(model: ContextPathSegmenter) -> dict:
    return {
        "name": getattr(model, "arch_name", None),
        "num_classes": model.num_classes,
        "text_dim": model.text_dim,
        "detail_head": model.detail is not None,
        "aux_heads": model.aux16 is not None,
    }


def build_from_spec(spec: dict) -> ContextPathSegmenter:
    unknown = set(spec) - {"name", "num_classes", "text_dim", "detail_head", "aux_heads"}
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}")
    return create_model(spec["name"], int(spec["num_classes"]), spec.get("text_dim"),
                        detail_head=bool(spec.get("detail_head", True)),
                        aux_heads=bool(spec.get("aux_heads", True)))


def _load_stdc_pretrained(backbone: STDCNet, path) -> None:
    import os

    import torch

    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"STDC pretrained weights not found: {path}")
    state = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    # Official STDCNet checkpoints name stages features.0..N; map them onto x2/x4/x8/x16/x32.
    own = backbone.state_dict()
    mapped = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not mapped:
        raise ValueError(f"no tensor in {path} matches the STDC backbone")
    backbone.load_state_dict(mapped, strict=False)


__all__ = [
    "ARCHITECTURES", "ContextPathSegmenter", "DeployWrapper", "HeadWidths", "MobileNetV2Backbone",
    "inference_network",
    "STDCNet", "TextGuidance", "arch_spec", "build_from_spec", "create_model",
]
