"""Losses of the method: OHEM cross-entropy, STDC detail loss, and the textual loss.

- OHEM CE (mmsegmentation's OHEMPixelSampler semantics): keep pixels whose ground-truth
  probability is below ``thresh`` (0.7), and at least ``min_kept`` hardest pixels.
- Detail loss (STDC, Fan et al.): boundary targets from a Laplacian of the label map at strides
  1, 2, 4 fused by a fixed 1x1 conv, BCE + Dice against the detail head's logits.
- Textual loss: the score map ``S / tau`` (tau = 0.07) upsampled to label size, OHEM CE.
- Class weights (``loss.class_weight``, off by default as in the paper): per-class weights on
  every cross-entropy term, from the training split's label statistics
  (:func:`class_weights`: SegNet's median-frequency balancing, or ENet's ``1 / ln(1.02 + p)``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clipseg_ros.conventions import IGNORE_INDEX

from .config import CLASS_WEIGHT_RULES


def class_weights(rule, counts, present=None) -> np.ndarray:
    """Per-class loss weights (float32, K).

    ``rule``: ``"median_frequency"`` (Eigen & Fergus / SegNet: ``f_c`` = pixels of class c over the
    pixels of the images c appears in, ``w_c = median(f) / f_c``), ``"inverse_log"`` (ENet:
    ``w_c = 1 / ln(1.02 + p_c)``, ``p_c`` the class's share of all labelled pixels), or a sequence
    of K positive numbers used as given.  ``counts`` / ``present``: from
    ``SegmentationDataset.class_pixel_counts``.  A class with no training pixel gets weight 1 (it
    never enters the loss)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = len(counts)
    if not isinstance(rule, str):
        w = np.asarray(rule, dtype=np.float64)
        if w.shape != (k,) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"loss.class_weight must list {k} positive numbers (one per class), got {rule!r}")
        return w.astype(np.float32)
    seen = counts > 0
    if not seen.any():
        raise ValueError("loss.class_weight: the training split has no labelled pixels")
    w = np.ones(k)
    if rule == "median_frequency":
        present = np.asarray(present, dtype=np.float64)
        freq = counts[seen] / present[seen]
        w[seen] = np.median(freq) / freq
    elif rule == "inverse_log":
        w[seen] = 1.0 / np.log(1.02 + counts[seen] / counts.sum())
    else:
        raise ValueError(f"loss.class_weight {rule!r} is not one of {', '.join(CLASS_WEIGHT_RULES)}, "
                         "a list of per-class numbers, or null")
    return w.astype(np.float32)


class OhemCrossEntropy(nn.Module):
    def __init__(self, thresh: float = 0.7, min_kept_div: int = 16, ignore_index: int = IGNORE_INDEX,
                 weight: torch.Tensor | None = None):
        super().__init__()
        self.thresh = thresh
        self.min_kept_div = min_kept_div
        self.ignore_index = ignore_index
        self.register_buffer("weight", None if weight is None else torch.as_tensor(weight, dtype=torch.float32),
                             persistent=False)

    def _mean(self, pixel_loss: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Mean over the kept pixels; with class weights, weighted by the target's class (as
        ``F.cross_entropy(weight=...)`` reduces: sum of w*loss over sum of w)."""
        if self.weight is None:
            return pixel_loss[keep].mean()
        w = self.weight.to(pixel_loss.device)[target[keep]]
        return (pixel_loss[keep] * w).sum() / w.sum().clamp_min(1e-12)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        # unweighted per-pixel CE: OHEM selects on the ground-truth probability; weights come in the mean
        pixel_loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        n_valid = int(valid.sum())
        if n_valid == 0:
            return logits.sum() * 0.0
        min_kept = max(1, target.numel() // self.min_kept_div)
        if min_kept >= n_valid:          # every valid pixel is kept: plain cross-entropy
            return self._mean(pixel_loss, target, valid)
        with torch.no_grad():
            # the ground-truth class's probability is exp(-CE): no second softmax over K x H x W
            gt_prob = torch.exp(-pixel_loss.detach())
            gt_prob[~valid] = 1.0 + 1.0  # never selected
            kth = torch.kthvalue(gt_prob.flatten(), min_kept).values
            keep = valid & ((gt_prob < self.thresh) | (gt_prob <= kth))
        if not keep.any():
            return self._mean(pixel_loss, target, valid)
        return self._mean(pixel_loss, target, keep)


_LAPLACIAN = torch.tensor([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=torch.float32).view(1, 1, 3, 3)


def boundary_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """STDC detail ground truth: (B,1,H,W) float in {0,1}.

    The Laplacian ``[[-1,-1,-1],[-1,8,-1],[-1,-1,-1]]`` (zero padding) at strides 1, 2 and 4 is
    computed as ``9 x - (3x3 sum)``, the sum by an average pool (a 1-channel convolution is slow
    on CPUs); the label values are small integers, so both forms give the same numbers exactly.
    """
    lab = labels.unsqueeze(1).float()
    lab = torch.where(lab == ignore_index, torch.zeros_like(lab), lab)
    size = labels.shape[-2:]
    maps = []
    for stride in (1, 2, 4):
        box = F.avg_pool2d(lab, 3, stride=stride, padding=1, count_include_pad=True) * 9.0
        b = (9.0 * lab[..., ::stride, ::stride] - box).clamp(min=0)
        b = (b > 0.1).float()
        if stride > 1:
            b = F.interpolate(b, size=size, mode="nearest")
        maps.append(b)
    fused = 0.6 * maps[0] + 0.3 * maps[1] + 0.1 * maps[2]
    return (fused > 0.1).float()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    union = prob.sum(1) + target.sum(1)
    return (1 - (2 * inter + smooth) / (union + smooth)).mean()


class DetailLoss(nn.Module):
    def forward(self, detail_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = boundary_targets(labels)
        logits = F.interpolate(detail_logits.float(), size=labels.shape[-2:], mode="bilinear",
                               align_corners=False)
        return F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)


class SegmentationCriterion(nn.Module):
    """All losses of a training step, each weighted (1 by default, as in the paper)."""

    def __init__(self, thresh=0.7, min_kept_div=16, aux_weight=1.0, detail_weight=1.0,
                 text_weight=1.0, tau=0.07, ignore_index=IGNORE_INDEX, class_weight=None):
        super().__init__()
        self.ohem = OhemCrossEntropy(thresh, min_kept_div, ignore_index, class_weight)
        self.detail = DetailLoss()
        self.aux_weight = aux_weight
        self.detail_weight = detail_weight
        self.text_weight = text_weight
        self.tau = tau

    def forward(self, outputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        parts = {"seg": self.ohem(outputs["logits"], labels)}
        if "aux16" in outputs and self.aux_weight:
            parts["aux16"] = self.aux_weight * self.ohem(outputs["aux16"], labels)
            parts["aux32"] = self.aux_weight * self.ohem(outputs["aux32"], labels)
        if "detail" in outputs and self.detail_weight:
            parts["detail"] = self.detail_weight * self.detail(outputs["detail"], labels)
        if "score_map" in outputs and self.text_weight:
            parts["text"] = self.text_weight * self.textual_loss(outputs["score_map"], labels)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def textual_loss(self, score_map: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """OHEM CE of the score map divided by the temperature, upsampled to label size."""
        return self.ohem(score_map.float() / self.tau, labels)
