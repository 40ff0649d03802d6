"""STDC backbones (Short-Term Dense Concatenate network, Fan et al., CVPR 2021).

STDC1 = STDCNet813 (layers 2-2-2), STDC2 = STDCNet1446 (layers 4-5-3); base width 64, four
convolutions per STDC module.  Outputs the 1/8, 1/16 and 1/32 features (256, 512, 1024 channels).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU


class STDCModule(nn.Module):
    """CatBottleneck: progressively narrower convs whose outputs are concatenated."""

    def __init__(self, in_ch: int, out_ch: int, block_num: int = 4, stride: int = 1):
        super().__init__()
        assert block_num > 1 and stride in (1, 2)
        self.stride = stride
        convs = []
        for idx in range(block_num):
            if idx == 0:
                convs.append(ConvBNReLU(in_ch, out_ch // 2, 1))
            elif idx == 1 and block_num == 2:
                convs.append(ConvBNReLU(out_ch // 2, out_ch // 2, 3))
            elif idx == 1:
                convs.append(ConvBNReLU(out_ch // 2, out_ch // 4, 3))
            elif idx < block_num - 1:
                convs.append(ConvBNReLU(out_ch // 2 ** idx, out_ch // 2 ** (idx + 1), 3))
            else:
                convs.append(ConvBNReLU(out_ch // 2 ** idx, out_ch // 2 ** idx, 3))
        self.conv_list = nn.ModuleList(convs)
        if stride == 2:
            self.avd_layer = nn.Sequential(
                nn.Conv2d(out_ch // 2, out_ch // 2, 3, 2, 1, groups=out_ch // 2, bias=False),
                nn.BatchNorm2d(out_ch // 2),
            )
            self.skip = nn.AvgPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv_list[0](x)
        outs = []
        out = out1
        for idx, conv in enumerate(self.conv_list[1:]):
            if idx == 0 and self.stride == 2:
                out = conv(self.avd_layer(out1))
            else:
                out = conv(out)
            outs.append(out)
        if self.stride == 2:
            out1 = self.skip(out1)
        return torch.cat([out1] + outs, dim=1)


class STDCNet(nn.Module):
    """STDC backbone returning (feat8, feat16, feat32)."""

    def __init__(self, layers: tuple[int, ...], base: int = 64, block_num: int = 4):
        super().__init__()
        self.x2 = ConvBNReLU(3, base // 2, 3, 2)
        self.x4 = ConvBNReLU(base // 2, base, 3, 2)
        stages = []
        in_ch = base
        for i, n in enumerate(layers):
            out_ch = base * 4 * 2 ** i
            blocks = [STDCModule(in_ch, out_ch, block_num, 2)]
            blocks += [STDCModule(out_ch, out_ch, block_num, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.x8, self.x16, self.x32 = stages
        self.channels = (base * 4, base * 8, base * 16)

    def forward(self, x: torch.Tensor):
        feat4 = self.x4(self.x2(x))
        feat8 = self.x8(feat4)
        feat16 = self.x16(feat8)
        feat32 = self.x32(feat16)
        return feat8, feat16, feat32


def stdc1() -> STDCNet:
    return STDCNet((2, 2, 2))


def stdc2() -> STDCNet:
    return STDCNet((4, 5, 3))
