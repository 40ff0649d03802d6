"""The label sets of the supported datasets: class names (in label order) and RGB palettes.

One home for these facts (mmsegmentation ``METAINFO`` style): each dataset has a
:class:`LabelSet` with its ``classes`` and ``palette``; the module-level names
(:data:`CAMVID_CLASSES`, :data:`CAMVID_PALETTE`, ...) are the same objects, for direct import.
The runtime (:mod:`clipseg_ros.visualize`) and the training package
(``clipseg_training.datasets``) both import from here.  numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = [
    "ADE20K", "ADE20K_CLASSES", "CAMVID", "CAMVID_CLASSES", "CAMVID_PALETTE", "CITYSCAPES",
    "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "LABEL_SETS", "LabelSet",
]


def _palette(rows) -> np.ndarray:
    pal = np.array(rows, dtype=np.uint8)
    pal.setflags(write=False)
    return pal


@dataclass(frozen=True, eq=False)
class LabelSet:
    """A dataset's classes (in label order) and, where one is defined, its ``(K, 3)`` ``uint8``
    read-only RGB palette (one row per class)."""

    name: str
    classes: tuple[str, ...]
    palette: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.palette is not None and self.palette.shape != (len(self.classes), 3):
            raise ValueError(f"LabelSet {self.name}: palette shape {self.palette.shape} does not match "
                             f"{len(self.classes)} classes")


#: The 11 CamVid classes of the SegNet benchmark, in label order.
CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist",
)
#: The standard SegNet CamVid colors (RGB), one row per class of :data:`CAMVID_CLASSES`.
CAMVID_PALETTE = _palette(
    [
        (128, 128, 128),  # Sky
        (128, 0, 0),      # Building
        (192, 192, 128),  # Pole
        (128, 64, 128),   # Road
        (60, 40, 222),    # Pavement
        (128, 128, 0),    # Tree
        (192, 128, 128),  # SignSymbol
        (64, 64, 128),    # Fence
        (64, 0, 128),     # Car
        (64, 64, 0),      # Pedestrian
        (0, 128, 192),    # Bicyclist
    ]
)

#: The 19 Cityscapes evaluation classes, in train-id order.
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
#: The Cityscapes colors (RGB) for the 19 train ids.
CITYSCAPES_PALETTE = _palette(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ]
)

#: The 150 ADE20K (SceneParse150) classes, in label order (raw label ``v`` is class ``v - 1``).
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair",
    "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box",
    "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace",
    "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet",
    "flower", "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light",
    "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower",
    "radiator", "glass", "clock", "flag")

CAMVID = LabelSet("camvid", CAMVID_CLASSES, CAMVID_PALETTE)
CITYSCAPES = LabelSet("cityscapes", CITYSCAPES_CLASSES, CITYSCAPES_PALETTE)
#: No ADE20K palette is defined (the runtime falls back to :func:`clipseg_ros.visualize.default_palette`).
ADE20K = LabelSet("ade20k", ADE20K_CLASSES)

#: Every label set by dataset name.
LABEL_SETS = {s.name: s for s in (CAMVID, CITYSCAPES, ADE20K)}
