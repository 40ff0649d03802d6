"""Network definitions, one of each, shared by training, export and the PyTorch backend.

``create_model("stdc1" | "stdc2" | "mobilenetv2", num_classes, text_dim=None)`` builds the
baseline (``text_dim=None``) or its textually guided twin.  ``arch_spec`` / ``build_from_spec``
round-trip the architecture through the model file's metadata.
"""
from __future__ import annotations

from .deploy import DeployWrapper, inference_network
from .lraspp import LRASPPSegmenter
from .mobilenetv2 import MobileNetV2Backbone
from .context_path import ContextPathSegmenter, HeadWidths
from .stdc import STDCNet, load_stdc_pretrained, map_stdc_state_dict, stdc1, stdc2
from .text_guidance import TextGuidance

_BACKBONES = {
    "stdc1": (stdc1, HeadWidths()),
    "stdc2": (stdc2, HeadWidths()),
    "mobilenetv2": (MobileNetV2Backbone, HeadWidths(context=128, fuse=128, head_mid=128, aux_mid=64)),
}
# torchvision's LR-ASPP head on the same MobileNetV2: the peer row (no guidance, no extra heads)
PEER_ARCHITECTURES = ("lraspp_mobilenetv2",)

ARCHITECTURES = tuple(_BACKBONES)          # context-path segmenters (baseline and guided twins)
ALL_ARCHITECTURES = ARCHITECTURES + PEER_ARCHITECTURES
_STDC_LAYERS = {"stdc1": (2, 2, 2), "stdc2": (4, 5, 3)}


def create_model(name: str, num_classes: int, text_dim: int | None = None, pretrained=None,
                 detail_head: bool = True, aux_heads: bool = True, feat32_channels: int | None = None,
                 text_proj: str = "learned", skip4: bool = False) -> ContextPathSegmenter:
    """Build a segmenter.

    ``pretrained``: backbone ImageNet weights; for ``mobilenetv2`` a local torchvision file or
    ``"download"``; for STDC a local STDCNet checkpoint in the STDC-Seg or mmsegmentation naming,
    or ``"download"``.  ``feat32_channels`` (MobileNetV2 only): widen the backbone's 1/32 output to
    this width inside the backbone (both twins); with the text width it makes the guidance's
    projection an identity, as in STDC.  ``text_proj``: ``learned`` or ``orthonormal`` (fixed).
    ``skip4`` (MobileNetV2 only): the stride-4 refinement branch (see ``ContextPathSegmenter``).
    """
    key = name.lower()
    if key not in ALL_ARCHITECTURES:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(ALL_ARCHITECTURES)}")
    if num_classes < 1 or num_classes > 255:
        raise ValueError(f"num_classes must be in 1..255 (labels are mono8, 255 = unlabeled), got {num_classes}")
    if text_dim is not None and text_dim < 1:
        raise ValueError(f"text_dim must be positive or None, got {text_dim}")
    factory, widths = _BACKBONES["mobilenetv2" if key == "lraspp_mobilenetv2" else key]
    if key == "lraspp_mobilenetv2" and text_dim is not None:
        raise ValueError("lraspp_mobilenetv2 is the unguided peer network; it takes no text_dim")
    if skip4 and key != "mobilenetv2":
        raise ValueError(f"skip4 is a MobileNetV2 option; {name} has no 1/4 feature output")
    if feat32_channels is not None:
        if key != "mobilenetv2":
            raise ValueError(f"feat32_channels is a MobileNetV2 option; {name}'s 1/32 feature is fixed")
        if int(feat32_channels) < 1:
            raise ValueError(f"feat32_channels must be positive, got {feat32_channels}")
        backbone = factory(int(feat32_channels))
    else:
        backbone = factory()
    if pretrained:
        if key in ("mobilenetv2", "lraspp_mobilenetv2"):
            backbone.load_imagenet(pretrained)
        else:
            _load_stdc_pretrained(backbone, pretrained, key)
    if key == "lraspp_mobilenetv2":
        model = LRASPPSegmenter(backbone, num_classes)
        model.arch_name = key
        return model
    model = ContextPathSegmenter(backbone, num_classes, text_dim, widths, detail_head=detail_head,
                                 aux_heads=aux_heads, text_proj=text_proj, skip4=skip4)
    model.arch_name = key
    return model


def arch_spec(model: ContextPathSegmenter) -> dict:
    spec = {
        "name": getattr(model, "arch_name", None),
        "num_classes": model.num_classes,
        "text_dim": model.text_dim,
        "detail_head": model.detail is not None,
        "aux_heads": model.aux16 is not None,
    }
    widen = getattr(model.backbone, "widen32", None)
    if widen is not None:
        spec["feat32_channels"] = int(model.backbone.channels[2])
    if model.text_guidance is not None and getattr(model.text_guidance, "proj_mode", "learned") == "orthonormal":
        spec["text_proj"] = "orthonormal"
    if getattr(model, "skip4", None) is not None:
        spec["skip4"] = True
    return spec


def deploy_spec(model) -> dict:
    """``arch_spec(model)`` for the deployed network: built without the training-only heads."""
    return dict(arch_spec(model), detail_head=False, aux_heads=False)


_SPEC_KEYS = {"name", "num_classes", "text_dim", "detail_head", "aux_heads", "feat32_channels", "text_proj",
              "skip4"}


def build_from_spec(spec: dict) -> ContextPathSegmenter:
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"unknown architecture keys {sorted(unknown)}")
    return create_model(spec["name"], int(spec["num_classes"]), spec.get("text_dim"),
                        detail_head=bool(spec.get("detail_head", True)),
                        aux_heads=bool(spec.get("aux_heads", True)),
                        feat32_channels=spec.get("feat32_channels"),
                        text_proj=spec.get("text_proj", "learned"),
                        skip4=bool(spec.get("skip4", False)))


def _load_stdc_pretrained(backbone: STDCNet, path, name: str) -> None:
    load_stdc_pretrained(backbone, path, _STDC_LAYERS[name], name)


__all__ = [
    "ALL_ARCHITECTURES", "ARCHITECTURES", "PEER_ARCHITECTURES", "ContextPathSegmenter", "DeployWrapper",
    "HeadWidths", "MobileNetV2Backbone",
    "inference_network", "LRASPPSegmenter",
    "STDCNet", "TextGuidance", "arch_spec", "build_from_spec", "create_model", "deploy_spec", "load_stdc_pretrained",
    "map_stdc_state_dict",
]
