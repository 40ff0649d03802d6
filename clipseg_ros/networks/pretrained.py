"""Reading a local pretrained (ImageNet) backbone checkpoint, with errors that name the file.

Shared by the STDC and MobileNetV2 backbones; mapping the loaded tensors onto a backbone stays
with each backbone.
"""
from __future__ import annotations

import os

import torch

__all__ = ["load_weights_file"]


def load_weights_file(source: str | os.PathLike, name: str, description: str):
    """``torch.load(source, weights_only=True)`` on CPU.

    A missing file raises ``FileNotFoundError("<description> not found: <path>")``; a file that
    cannot be read (truncated, not a torch file) raises
    ``ValueError("cannot read <name> weights from <path>: <reason>")``.
    """
    where = os.fspath(source)
    if not os.path.isfile(where):
        raise FileNotFoundError(f"{description} not found: {where}")
    try:
        return torch.load(where, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, or not a torch file
        raise ValueError(f"cannot read {name} weights from {where}: {exc}") from exc
