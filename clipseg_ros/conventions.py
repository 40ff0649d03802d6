"""Facts shared by the runtime and training, defined once and imported everywhere else."""
from __future__ import annotations

from pathlib import Path

#: label value of unlabeled pixels (mono8 labels, losses, metrics, datasets, bags)
IGNORE_INDEX = 255

#: torchvision's ImageNet normalisation, RGB on the 0..255 scale
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

#: the model file shipped inside the package (the node's default ``model_path``)
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.clipseg"
