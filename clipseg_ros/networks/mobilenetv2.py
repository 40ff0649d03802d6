"""MobileNetV2 backbone (torchvision definition and ImageNet weights) for the context-path segmenter.

Outputs the 1/8 (32 ch), 1/16 (96 ch) and 1/32 (320 ch) features; the final 1x1 conv to 1280
channels of the classifier is dropped.  ``forward(x, return4=True)`` also returns the 1/4 feature
(24 ch, the output of torchvision's ``features[3]``) first, for the segmenter's ``skip4`` branch.

``out32=D`` widens the 1/32 output with a 1x1 conv-BN-ReLU (``widen32``, 320 -> D) inside the
backbone, so that a textually guided twin computes its score map S from the very feature the
context path reads, as in STDC (whose 1/32 feature already has CLIP RN50's width, 1024), with
no free projection in between; the baseline twin gets the same layer, hence the same capacity.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .pretrained import load_weights_file


class MobileNetV2Backbone(nn.Module):
    def __init__(self, out32: int | None = None):
        super().__init__()
        from torchvision.models import mobilenet_v2

        from .layers import ConvBNReLU

        features = mobilenet_v2(weights=None).features
        self.x8 = features[:7]
        self.x16 = features[7:14]
        self.x32 = features[14:18]
        self.widen32 = ConvBNReLU(320, int(out32), 1) if out32 else None
        self.channels = (32, 96, int(out32) if out32 else 320)
        self.channels4 = 24

    def forward(self, x: torch.Tensor, return4: bool = False):
        if return4:
            # x8 holds features[0:7]; features[3] ends at stride 4.  Walk the blocks (slicing the
            # Sequential would build new modules on every forward).
            feat8 = x
            for i, block in enumerate(self.x8):
                feat8 = block(feat8)
                if i == 3:
                    feat4 = feat8
        else:
            feat8 = self.x8(x)
        feat16 = self.x16(feat8)
        feat32 = self.x32(feat16)
        if self.widen32 is not None:
            feat32 = self.widen32(feat32)
        if return4:
            return feat4, feat8, feat16, feat32
        return feat8, feat16, feat32

    def load_imagenet(self, source: str | os.PathLike | None) -> None:
        """Load torchvision's ImageNet weights from a local file, or download when ``source`` is
        ``"download"`` (needs internet)."""
        if source is None:
            return
        if str(source) == "download":
            from torchvision.models import MobileNet_V2_Weights

            state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        else:
            state = load_weights_file(source, "MobileNetV2", "MobileNetV2 ImageNet weights")
        mapped = {}
        for key, value in state.items():
            if not key.startswith("features."):
                continue
            idx = int(key.split(".")[1])
            rest = key.split(".", 2)[2]
            # Sequential slices keep torchvision's indices as module names.
            if idx < 7:
                mapped[f"x8.{idx}.{rest}"] = value
            elif idx < 14:
                mapped[f"x16.{idx}.{rest}"] = value
            elif idx < 18:
                mapped[f"x32.{idx}.{rest}"] = value
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        missing = [k for k in missing if not k.startswith("widen32.")]   # new layer, not ImageNet
        if missing or unexpected:
            raise ValueError(
                f"MobileNetV2 weights {source} do not match the backbone: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}")
