"""Building blocks shared by the segmenters: conv-BN-ReLU, ARM, FFM and FCN-style heads.

Follows STDC-Seg (Fan et al., CVPR 2021) / BiSeNet naming so that readers of those codebases
recognise every piece.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class AttentionRefinementModule(nn.Module):
    """ARM: 3x3 conv then channel attention from global average pooling."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = feat.mean(dim=(2, 3), keepdim=True)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(atten)))
        return feat * atten


class FeatureFusionModule(nn.Module):
    """FFM: fuse the spatial (1/8) feature with the upsampled context feature."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, 1)
        mid = max(out_ch // 4, 8)
        self.conv1 = nn.Conv2d(out_ch, mid, 1, bias=False)
        self.conv2 = nn.Conv2d(mid, out_ch, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = feat.mean(dim=(2, 3), keepdim=True)
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(atten), inplace=True)))
        return feat + feat * atten


class SegHead(nn.Module):
    """FCN head (BiSeNetOutput): 3x3 conv-BN-ReLU then 1x1 classifier."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class TrainingOnlyHeads:
    """Mixin for segmenters: which child modules exist only for training, and the state dict of
    the deployed network (without them).

    ``TRAINING_ONLY`` names the attributes (child modules) that the exported network is built
    without; :meth:`deploy_state_dict` drops their parameters and buffers.
    """

    TRAINING_ONLY: tuple[str, ...] = ()

    def deploy_state_dict(self) -> dict:
        """``state_dict()`` without the entries of the :attr:`TRAINING_ONLY` modules."""
        prefixes = tuple(f"{name}." for name in self.TRAINING_ONLY)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(prefixes)}
