"""``~/labels/compressed``: label images as lossless PNG in a sensor_msgs/CompressedImage.

The format string follows image_transport's compressed transport (``"<encoding>; png
compressed"``), so ``image_transport`` subscribers and RViz decode it.  Never JPEG: it changes
label values at class edges (autoware_universe PR #7905).  Plain numpy + OpenCV.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["LABELS_PNG_FORMAT", "PNG_LEVEL", "encode_labels_png", "decode_labels_png"]

LABELS_PNG_FORMAT = "mono8; png compressed"
#: zlib level: 1 is the fastest; label images are flat regions and compress well at any level.
PNG_LEVEL = 1


def encode_labels_png(labels: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """``(H, W)`` uint8 labels -> PNG bytes (8-bit grayscale, lossless)."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.dtype != np.uint8 or not lab.size:
        raise ValueError(f"encode_labels_png: need a non-empty HxW uint8 array, got {lab.shape} {lab.dtype}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(lab), [cv2.IMWRITE_PNG_COMPRESSION, int(level)])
    if not ok:
        raise ValueError("encode_labels_png: OpenCV could not encode the labels")
    return buf.tobytes()


def decode_labels_png(data) -> np.ndarray:
    """PNG bytes (a CompressedImage's ``data``) -> ``(H, W)`` uint8 labels, exactly as encoded."""
    buf = np.frombuffer(bytes(data), np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None or img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError("decode_labels_png: not an 8-bit single-channel PNG")
    return img
