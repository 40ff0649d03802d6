"""STDC backbones (Short-Term Dense Concatenate network, Fan et al., CVPR 2021).

STDC1 = STDCNet813 (layers 2-2-2), STDC2 = STDCNet1446 (layers 4-5-3); base width 64, four
convolutions per STDC module.  Outputs the 1/8, 1/16 and 1/32 features (256, 512, 1024 channels).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConvBNReLU
from .pretrained import load_weights_file


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


# ----------------------------------------------------------------------------- official weights
def _stage_blocks(layers: tuple[int, ...]) -> list[tuple[str, int]]:
    """(our stage name, block index) of each official ``features.N`` (N >= 2)."""
    out = []
    for name, n in zip(("x8", "x16", "x32"), layers):
        out += [(name, j) for j in range(n)]
    return out


def map_stdc_state_dict(state: dict, layers: tuple[int, ...]) -> dict:
    """Rename an upstream STDCNet state dict onto :class:`STDCNet`'s names.

    Understood namings (prefixes ``module.``, ``cp.``, ``backbone.``, ``backbone_cfg.`` are
    stripped first; classifier keys such as ``conv_last``/``fc``/``linear`` are dropped):

    - the STDC-Seg release (``STDCNet813M_73.91.tar``, ``STDCNet1446_76.47.tar``):
      ``features.N.{conv,bn}``, ``features.N.conv_list.i.{conv,bn}``, ``features.N.avd_layer.{0,1}``;
    - mmsegmentation (``stdc1_20220308-5368626c.pth``, converted by its ``stdc2mmseg.py``):
      ``stages.{0,1}.{conv,bn}``, ``stages.S.J.layers.i.{conv,bn}``, ``stages.S.J.downsample.{conv,bn}``.
    """
    blocks = _stage_blocks(layers)
    stage_names = ("x8", "x16", "x32")
    out = {}
    for key, value in state.items():
        k = key
        for prefix in ("module.", "cp.", "backbone_cfg.", "backbone."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        parts = k.split(".")
        if parts[0] == "features" and len(parts) > 2 and parts[1].isdigit():
            n = int(parts[1])
            if n < 2:
                head, rest = ("x2", "x4")[n], parts[2:]
            elif n - 2 < len(blocks):
                stage, j = blocks[n - 2]
                head, rest = f"{stage}.{j}", parts[2:]
            else:
                head, rest = f"unmatched.features.{n}", parts[2:]
        elif parts[0] == "stages" and len(parts) > 2 and parts[1].isdigit():
            s = int(parts[1])
            if s < 2:
                head, rest = ("x2", "x4")[s], parts[2:]
            elif s - 2 < len(stage_names) and parts[2].isdigit():
                head, rest = f"{stage_names[s - 2]}.{parts[2]}", parts[3:]
            else:
                continue
        else:
            continue
        # module-level renames
        if rest[:1] == ["layers"]:
            rest = ["conv_list"] + rest[1:]
        if rest[:2] == ["downsample", "conv"]:
            rest = ["avd_layer", "0"] + rest[2:]
        elif rest[:2] == ["downsample", "bn"]:
            rest = ["avd_layer", "1"] + rest[2:]
        # ConvBNReLU is an nn.Sequential: conv -> 0, bn -> 1
        if rest and rest[0] in ("conv", "bn") and head in ("x2", "x4"):
            rest = ["0" if rest[0] == "conv" else "1"] + rest[1:]
        elif len(rest) > 2 and rest[0] == "conv_list" and rest[2] in ("conv", "bn"):
            rest = rest[:2] + ["0" if rest[2] == "conv" else "1"] + rest[3:]
        out[".".join([head] + rest)] = value
    return out


#: mmsegmentation's ImageNet STDC checkpoints (``model.pretrained: download``)
STDC_PRETRAINED_URLS = {
    "stdc1": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/stdc/stdc1_20220308-5368626c.pth",
    "stdc2": "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/stdc/stdc2_20220308-7dbd9127.pth",
}


def load_stdc_pretrained(backbone: STDCNet, source, layers: tuple[int, ...], name: str = "stdc",
                         min_fraction: float = 0.95) -> dict:
    """Load ImageNet STDCNet weights (a local file in either upstream naming, or ``"download"``).

    Fails naming the file when fewer than ``min_fraction`` of the backbone's tensors load (an
    unrelated or wrongly named file would otherwise load almost nothing, silently).  Returns
    ``{"loaded": n, "total": m}``.
    """
    import os

    if str(source) == "download":
        url = STDC_PRETRAINED_URLS.get(name)
        if url is None:
            raise ValueError(f"no download address for {name}; pass a local STDCNet checkpoint")
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=True)
        where = url
    else:
        where = os.fspath(source)
        state = load_weights_file(where, "STDC", "STDC pretrained weights")
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"{where} does not hold a state dict")
    own = backbone.state_dict()
    mapped = map_stdc_state_dict(state, layers)
    usable = {k: v for k, v in mapped.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    wrong_shape = sorted(k for k in mapped if k in own and k not in usable)
    extra = sorted(k for k in mapped if k not in own)
    fraction = len(usable) / max(len(own), 1)
    if len(extra) > (1.0 - min_fraction) * len(mapped):
        raise ValueError(
            f"STDC weights {where}: {len(extra)} of its {len(mapped)} backbone tensors have no place in "
            f"{name} (first: {extra[:3]}); is it a checkpoint of another STDC depth?")
    if fraction < min_fraction:
        missing = sorted(set(own) - set(usable))
        raise ValueError(
            f"STDC weights {where}: only {len(usable)} of the backbone's {len(own)} tensors "
            f"({100 * fraction:.0f} %) match by name and shape (need {100 * min_fraction:.0f} %); "
            f"first missing: {missing[:3]}" + (f"; wrong shape: {wrong_shape[:3]}" if wrong_shape else "")
            + ". Expected an ImageNet STDCNet checkpoint in the STDC-Seg (features.N...) or "
              "mmsegmentation (stages.N...) naming")
    backbone.load_state_dict(usable, strict=False)
    return {"loaded": len(usable), "total": len(own)}
