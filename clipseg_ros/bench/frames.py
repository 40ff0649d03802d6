"""Synthetic camera-like frames for the benchmark."""
from __future__ import annotations

import numpy as np


def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth, camera-like RGB frame (gradients, shapes, mild noise): JPEG sizes stay realistic."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 90 + 110 * (x / width)
    img[..., 1] = 120 + 60 * np.sin(y / max(height, 1) * 3.0)
    img[..., 2] = 200 - 120 * (y / height)
    img = img.astype(np.uint8)
    for _ in range(12):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.rectangle(img, p1, p2, c, -1)
        cv2.circle(img, p2, int(rng.integers(4, max(5, width // 8))), c[::-1], -1)
    noise = rng.integers(-6, 7, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
