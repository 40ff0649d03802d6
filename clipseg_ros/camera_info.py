"""camera_info for the label images: the sibling topic, and K / P / ROI scaled to the label size.

The node subscribes to the camera's ``camera_info`` by the image_transport convention (the
sibling of the image topic: ``/cam/image_raw`` or ``/cam/image_raw/compressed`` ->
``/cam/camera_info``) and republishes it as ``~/camera_info`` with each labels message's header.
``~/labels`` has the input's resolution today, so the intrinsics are copied unchanged; should
the published size differ from the input, :func:`scale_camera_info` scales them the way
image_proc's resize does: ``width``, ``K[0..2]``, ``P[0..3]`` and the ROI's x / width by
``sx = out_w / in_w``; ``height``, ``K[4..5]``, ``P[5..7]`` and the ROI's y / height by
``sy = out_h / in_h``.  Distortion, R and binning stay (they do not depend on the pixel scale:
binning still relates the calibration to the image).  Plain Python on message-like objects.
"""
from __future__ import annotations

import copy

__all__ = ["camera_info_topic", "scale_camera_info", "for_labels"]


def camera_info_topic(image_topic: str, compressed: bool = False) -> str:
    """The ``camera_info`` topic next to ``image_topic`` (a fully qualified name)."""
    base = image_topic.rstrip("/")
    if compressed and base.endswith("/compressed"):
        base = base[: -len("/compressed")]
    parent = base.rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def _scaled(values, factors) -> list[float]:
    return [float(v) * f for v, f in zip(values, factors)]


def scale_camera_info(info, sx: float, sy: float):
    """``info`` (a CameraInfo-like object) scaled in place by ``sx`` (x) and ``sy`` (y); returns it.

    ``sx == sy == 1`` leaves every field exactly as it was."""
    if not (sx > 0 and sy > 0):
        raise ValueError(f"scale_camera_info: scale factors must be positive, got {sx}, {sy}")
    if sx == 1 and sy == 1:
        return info
    info.width = int(round(int(info.width) * sx))
    info.height = int(round(int(info.height) * sy))
    k = list(info.k)
    if len(k) == 9:
        info.k = _scaled(k, (sx, sx, sx, 1, sy, sy, 1, 1, 1))
    p = list(info.p)
    if len(p) == 12:
        info.p = _scaled(p, (sx, sx, sx, sx, 1, sy, sy, sy, 1, 1, 1, 1))
    roi = info.roi
    roi.x_offset = int(round(int(roi.x_offset) * sx))
    roi.width = int(round(int(roi.width) * sx))
    roi.y_offset = int(round(int(roi.y_offset) * sy))
    roi.height = int(round(int(roi.height) * sy))
    return info


def for_labels(info, header, in_size: tuple[int, int], out_size: tuple[int, int]):
    """A copy of ``info`` for a label image of ``out_size`` (w, h) made from an input image of
    ``in_size`` (w, h), with ``header`` (the labels message's header)."""
    out = copy.deepcopy(info)
    out.header = header
    (in_w, in_h), (out_w, out_h) = in_size, out_size
    return scale_camera_info(out, out_w / in_w, out_h / in_h)
