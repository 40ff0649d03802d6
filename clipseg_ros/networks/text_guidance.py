"""Textual guidance: class text embeddings scored against the 1/32 feature map.

Score map ``S[b,k,h,w] = <normalize(T_k), normalize(P f[b,:,h,w])>`` where ``P`` is a 1x1
projection when the feature width C differs from the text width D (identity otherwise, as for
STDC's C = 1024 and CLIP RN50's D = 1024).  At training time ``T`` is either a fixed buffer
(stage 1) or produced by the prompt learner (stage 2) and passed in; at export the current ``T``
is baked into the buffer so no text encoder is needed at inference.

For inference, :func:`fold_text_guidance` rewrites the block exactly: with ``P = Q R`` (reduced
QR, ``Q`` with orthonormal columns), ``T̂·P f = (T̂ Q)(R f)`` and ``||P f|| = ||R f||``, so the
D x C projection (D = 1024 for CLIP RN50) becomes a C x C one plus a K x C classifier.  For the
MobileNetV2 segmenter (C = 320) that is 3.2x fewer multiply-adds in the guidance.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


TEXT_PROJ_MODES = ("learned", "orthonormal")


def orthonormal_weight(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A fixed ``rows x cols`` matrix with orthonormal columns (rows >= cols) or rows (rows < cols),
    from the QR decomposition of a seeded Gaussian matrix."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(max(rows, cols), min(rows, cols), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a, mode="reduced")            # (max, min), orthonormal columns
    return (q if rows >= cols else q.T).float().contiguous()


class TextGuidance(nn.Module):
    """``proj``: ``learned`` (a trainable 1x1 projection C -> D when the widths differ) or
    ``orthonormal`` (a FIXED random projection with orthonormal columns, not trained: the
    feature geometry is preserved, ``||P f|| = ||f||``, so the CLIP geometry of T cannot be
    learned away by the projection).  Identity whenever C == D."""

    def __init__(self, in_channels: int, text_dim: int, num_classes: int, proj: str = "learned"):
        super().__init__()
        if proj not in TEXT_PROJ_MODES:
            raise ValueError(f"text projection {proj!r} is not one of {', '.join(TEXT_PROJ_MODES)}")
        self.in_channels = in_channels
        self.text_dim = text_dim
        self.num_classes = num_classes
        self.proj_mode = proj if in_channels != text_dim else "identity"
        if in_channels != text_dim:
            self.proj: nn.Module = nn.Conv2d(in_channels, text_dim, 1, bias=False)
            if proj == "orthonormal":
                with torch.no_grad():
                    self.proj.weight.copy_(orthonormal_weight(text_dim, in_channels)[:, :, None, None])
                self.proj.weight.requires_grad_(False)
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
        if torch.is_autocast_enabled(feat.device.type):
            # Mixed-precision training: the projection, both normalisations and the cosine
            # scores run in fp32 (S / tau is a temperature-scaled logit; bf16's 8-bit mantissa
            # would quantise cosines to ~0.004, i.e. ~0.06 logit units at tau = 0.07).
            with torch.autocast(feat.device.type, enabled=False):
                return self._scores(feat.float(), text_embeddings)
        return self._scores(feat, text_embeddings)

    def _scores(self, feat: torch.Tensor, text_embeddings: torch.Tensor | None) -> torch.Tensor:
        text = self.text_embeddings if text_embeddings is None else text_embeddings
        text = F.normalize(text, dim=-1)
        proj = F.normalize(self.proj(feat), dim=1)
        # (B,D,h,w) x (K,D) -> (B,K,h,w): a 1x1 convolution with the normalised text as weights.
        return F.conv2d(proj, text[:, :, None, None].to(proj.dtype))


class FoldedTextGuidance(nn.Module):
    """Inference-only :class:`TextGuidance` with the projection folded into ``R`` and ``T̂ Q``.

    Same output as the unfolded block (up to float rounding); the text is baked in, so passing
    ``text_embeddings`` is an error.
    """

    def __init__(self, reduce_weight: torch.Tensor, text_folded: torch.Tensor):
        super().__init__()
        c = reduce_weight.shape[0]
        self.reduce = nn.Conv2d(reduce_weight.shape[1], c, 1, bias=False)
        with torch.no_grad():
            self.reduce.weight.copy_(reduce_weight[:, :, None, None])
        self.register_buffer("text_folded", text_folded[:, :, None, None].clone())

    def forward(self, feat: torch.Tensor, text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        if text_embeddings is not None:
            raise RuntimeError("folded text guidance has its text embeddings baked in")
        g = self.reduce(feat)
        num = F.conv2d(g, self.text_folded.to(g.dtype))
        # F.normalize's eps: max(||g||, 1e-12)
        return num / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def fold_text_guidance(block: TextGuidance) -> nn.Module:
    """The cheaper equivalent of ``block`` for inference, or ``block`` itself when folding would
    not save work (no projection, or a projection that does not widen: D <= C)."""
    if not isinstance(block, TextGuidance) or not isinstance(block.proj, nn.Conv2d):
        return block
    w = block.proj.weight
    d, c = w.shape[0], w.shape[1]
    if d <= c:
        return block
    p = w.reshape(d, c).double()
    q, r = torch.linalg.qr(p, mode="reduced")            # (D, C), (C, C)
    t = F.normalize(block.text_embeddings.double(), dim=-1) @ q     # (K, C)
    folded = FoldedTextGuidance(r.to(w.dtype), t.to(w.dtype)).to(w.device)
    return folded.train(block.training)
