"""The deployed graph: uint8 RGB image in, labels and confidence out.

Normalisation, the network, bilinear upsampling to the input size, softmax-max and argmax all
live inside the graph, so a frame crosses to the device once (uint8) and comes back once
(uint8 labels + optional float confidence).  Used for TorchScript-free PyTorch inference and for
ONNX export alike.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from .text_guidance import TextGuidance, fold_text_guidance


def inference_network(network: nn.Module) -> nn.Module:
    """``network`` ready for inference: the textual guidance folded (see ``fold_text_guidance``).
    Returns a copy when something was folded; the caller's network is never modified."""
    block = getattr(network, "text_guidance", None)
    if not isinstance(block, TextGuidance):
        return network
    folded = fold_text_guidance(block)
    if folded is block:
        return network
    net = copy.deepcopy(network)
    net.text_guidance = folded
    return net


class DeployWrapper(nn.Module):
    def __init__(self, network: nn.Module, mean, std):
        super().__init__()
        self.network = inference_network(network)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor):
        """``image``: (N, H, W, 3) uint8 RGB.  Returns (labels (N,H,W) uint8, confidence (N,H,W) float)."""
        x = image.permute(0, 3, 1, 2).to(self.mean.dtype)
        x = (x - self.mean) * self.inv_std
        logits = self.network(x)["logits"]
        logits = F.interpolate(logits, size=image.shape[1:3], mode="bilinear", align_corners=False)
        # max softmax probability = 1 / sum(exp(l - max l)), computed without the full softmax
        top, labels = logits.max(dim=1)
        confidence = 1.0 / torch.exp(logits - top.unsqueeze(1)).sum(dim=1)
        return labels.to(torch.uint8), confidence.float()
