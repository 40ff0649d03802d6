"""The peer network users would otherwise build: torchvision's LR-ASPP head
(``torchvision.models.segmentation.lraspp.LRASPPHead``, Howard et al., "Searching for
MobileNetV3") on the same ImageNet MobileNetV2 backbone as our context-path segmenter, with the
1/8 feature (32 ch) as its low-level input and the 1/32 feature (320 ch) as its high-level one.

It shares the segmenters' interface (a backbone with ``channels``, a ``logits`` output at 1/8
scale, no text guidance, no training-only heads), so the same training loop, losses, export,
model file and node run it: accuracy AND latency against the same data, schedule and resolution.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import TrainingOnlyHeads


class LRASPPSegmenter(TrainingOnlyHeads, nn.Module):
    TRAINING_ONLY = ()  # no training-only heads

    def __init__(self, backbone: nn.Module, num_classes: int, inter_channels: int = 128):
        super().__init__()
        from torchvision.models.segmentation.lraspp import LRASPPHead

        c8, _, c32 = backbone.channels
        self.backbone = backbone
        self.num_classes = num_classes
        self.text_dim = None
        self.text_guidance = None
        self.aux16 = self.aux32 = self.detail = None
        self.head = LRASPPHead(c8, c32, num_classes, inter_channels)

    def forward(self, x: torch.Tensor, text_embeddings: torch.Tensor | None = None) -> dict:
        if text_embeddings is not None:
            raise ValueError("the LR-ASPP peer has no textual guidance")
        feat8, _, feat32 = self.backbone(x)
        return {"logits": self.head({"low": feat8, "high": feat32})}
