"""Textual guidance: class text embeddings scored against the 1/32 feature map.

Score map ``S[b,k,h,w] = <normalize(T_k), normalize(P f[b,:,h,w])>`` where ``P`` is a 1x1
projection when the feature width C differs from the text width D (identity otherwise, as for
STDC's C = 1024 and CLIP RN50's D = 1024).  At training time ``T`` is either a fixed buffer
(stage 1) or produced by the prompt learner (stage 2) and passed in; at export the current ``T``
is baked into the buffer so no text encoder is needed at inference.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TextGuidance(nn.Module):
    def __init__(self, in_channels: int, text_dim: int, num_classes: int):
        super().__init__()
        self.in_channels = in_channels
        self.text_dim = text_dim
        self.num_classes = num_classes
        if in_channels != text_dim:
            self.proj: nn.Module = nn.Conv2d(in_channels, text_dim, 1, bias=False)
        else:
            self.proj = nn.Identity()
        self.register_buffer("text_embeddings", torch.zeros(num_classes, text_dim))

    @torch.no_grad()
    def set_text_embeddings(self, embeddings: torch.Tensor) -> None:
        if tuple(embeddings.shape) != (self.num_classes, self.text_dim):
            raise ValueError(
                f"text embeddings have shape {tuple(embeddings.shape)}, expected "
                f"({self.num_classes}, {self.text_dim}) = (classes, text width)")
        if not torch.isfinite(embeddings).all():
            raise ValueError("text embeddings contain NaN or inf")
        self.text_embeddings.copy_(embeddings.to(self.text_embeddings))

    def forward(self, feat: torch.Tensor, text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        text = self.text_embeddings if text_embeddings is None else text_embeddings
        text = F.normalize(text, dim=-1)
        proj = F.normalize(self.proj(feat), dim=1)
        # (B,D,h,w) x (K,D) -> (B,K,h,w): a 1x1 convolution with the normalised text as weights.
        return F.conv2d(proj, text[:, :, None, None].to(proj.dtype))
