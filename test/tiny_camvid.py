"""A tiny CamVid (SegNet layout) built from the shipped sample bag, for tests on a fresh clone.

The sample bag (``data/sample_bag/camvid_val_sample``, CC BY-NC 4.0, see its README) holds the 101
real CamVid val frames as JPEG with their mono8 ground truth (255 = unlabelled).  This writes the
first ``n_val`` of them as the ``val`` split and the next ``n_train`` as the ``train`` split,
downscaled to ``size`` (INTER_AREA for images, nearest for labels), with unlabelled written back as
CamVid's void id 11, ``train.txt``/``val.txt`` in the SegNet tutorial's ``/SegNet/CamVid/...`` form:
the same layout as the real dataset, so every loader path runs.  Both splits are val frames of one
sequence: good for exercising code, meaningless as a score.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BAG = REPO / "data" / "sample_bag" / "camvid_val_sample"
VOID = 11


def make_tiny_camvid(root: Path, n_val: int = 32, n_train: int = 16, size: tuple[int, int] = (160, 120),
                     bag: Path = SAMPLE_BAG) -> Path:
    """Write the tree under ``root`` and return it.  ``size`` is (width, height)."""
    from clipseg_ros.bag.reader import open_bag

    root = Path(root)
    splits = ["val"] * n_val + ["train"] * n_train
    listing = {"val": [], "train": []}
    for split in listing:
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    with open_bag(bag) as b:
        b.select_topics()
        frames = list(b.frames(limit=len(splits)))
    if len(frames) < len(splits):
        raise RuntimeError(f"{bag}: {len(frames)} frames, {len(splits)} wanted")
    for i, (frame, split) in enumerate(zip(frames, splits)):
        if frame.gt is None:
            raise RuntimeError(f"{bag}: {frame.where} has no ground truth")
        rgb = cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
        lab = cv2.resize(frame.gt, size, interpolation=cv2.INTER_NEAREST)
        lab = np.where(lab == 255, VOID, lab).astype(np.uint8)
        name = f"0016E5_{i:05d}.png"
        assert cv2.imwrite(str(root / split / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(root / f"{split}annot" / name), lab)
        listing[split].append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
    for split, lines in listing.items():
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
