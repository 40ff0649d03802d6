"""The context-path segmenter (STDC-Seg / BiSeNet layout) with optional textual guidance.

A baseline and its guided twin differ only by ``text_dim``: with guidance, the score map S
(K channels) is concatenated onto the 1/32 feature and feeds the last ARM and the global
context pooling (Lin, Chen & Wu, APSIPA 2024).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .layers import AttentionRefinementModule, ConvBNReLU, FeatureFusionModule, SegHead, TrainingOnlyHeads
from .text_guidance import TextGuidance


@dataclass
class HeadWidths:
    context: int = 128     # ARM / context-path width
    fuse: int = 256        # FFM output width
    head_mid: int = 256    # main head hidden width
    aux_mid: int = 64      # auxiliary / detail head hidden width


class ContextPathSegmenter(TrainingOnlyHeads, nn.Module):
    """Backbone (1/8, 1/16, 1/32 features) + context path + FFM + FCN head.

    ``skip4``: add a stride-4 refinement (for thin classes such as poles): a 3x3 conv-BN-ReLU and a
    1x1 classifier on the backbone's 1/4 feature, added to the bilinearly upsampled 1/8 logits
    (LR-ASPP's low-level classifier, one stride finer).  The logits are then at 1/4 scale.

    ``forward`` returns a dict: ``logits`` (1/8 scale, 1/4 with ``skip4``) always; in training mode also ``aux16``,
    ``aux32`` (auxiliary heads on the ARM outputs), ``detail`` (1/8 boundary logits, when the
    detail head is enabled) and ``score_map`` (1/32, when guided).
    """

    #: The auxiliary and detail heads are training-only: the exported network is built without them.
    TRAINING_ONLY = ("aux16", "aux32", "detail")

    def __init__(self, backbone: nn.Module, num_classes: int, text_dim: int | None = None,
                 widths: HeadWidths | None = None, detail_head: bool = True,
                 aux_heads: bool = True, text_proj: str = "learned", skip4: bool = False):
        super().__init__()
        w = widths or HeadWidths()
        c8, c16, c32 = backbone.channels
        self.backbone = backbone
        self.num_classes = num_classes
        self.text_dim = text_dim
        if text_dim:
            self.text_guidance: TextGuidance | None = TextGuidance(c32, text_dim, num_classes, text_proj)
            c32_in = c32 + num_classes
        else:
            self.text_guidance = None
            c32_in = c32
        self.arm16 = AttentionRefinementModule(c16, w.context)
        self.arm32 = AttentionRefinementModule(c32_in, w.context)
        self.conv_avg = ConvBNReLU(c32_in, w.context, 1)
        self.conv_head32 = ConvBNReLU(w.context, w.context, 3)
        self.conv_head16 = ConvBNReLU(w.context, w.context, 3)
        self.ffm = FeatureFusionModule(c8 + w.context, w.fuse)
        self.head = SegHead(w.fuse, w.head_mid, num_classes)
        if skip4:
            c4 = getattr(backbone, "channels4", None)
            if c4 is None:
                raise ValueError(f"skip4 needs a backbone with a 1/4 feature; {type(backbone).__name__} has none")
            self.skip4: nn.Module | None = SegHead(c4, w.aux_mid // 2, num_classes)
        else:
            self.skip4 = None
        # Training-only heads; the exported network is built without them.
        self.aux16 = SegHead(w.context, w.aux_mid, num_classes) if aux_heads else None
        self.aux32 = SegHead(w.context, w.aux_mid, num_classes) if aux_heads else None
        self.detail = SegHead(c8, w.aux_mid, 1) if detail_head else None

    def forward(self, x: torch.Tensor, text_embeddings: torch.Tensor | None = None) -> dict:
        if self.skip4 is not None:
            feat4, feat8, feat16, feat32 = self.backbone(x, return4=True)
        else:
            feat8, feat16, feat32 = self.backbone(x)
        out: dict[str, torch.Tensor] = {}
        if self.text_guidance is not None:
            score = self.text_guidance(feat32, text_embeddings)
            feat32 = torch.cat([feat32, score], dim=1)
            out["score_map"] = score
        # Global context, ARM on 1/32, upsample, ARM on 1/16, upsample (STDC-Seg context path).
        avg = self.conv_avg(feat32.mean(dim=(2, 3), keepdim=True))
        feat32_sum = self.arm32(feat32) + avg
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, size=feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, size=feat8.shape[2:], mode="nearest"))
        fused = self.ffm(feat8, feat16_up)
        logits = self.head(fused)
        if self.skip4 is not None:
            logits = F.interpolate(logits, size=feat4.shape[2:], mode="bilinear", align_corners=False)
            logits = logits + self.skip4(feat4)
        out["logits"] = logits
        if self.training:
            if self.aux16 is not None:
                out["aux16"] = self.aux16(feat16_up)
                out["aux32"] = self.aux32(feat32_up)
            if self.detail is not None:
                out["detail"] = self.detail(feat8)
        return out
