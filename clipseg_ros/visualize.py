"""Palettes, color masks, overlays, contact sheets and legends (numpy + cv2 only).

All images are RGB ``uint8`` arrays (``H x W x 3``); label images are ``H x W`` ``uint8`` with
:data:`IGNORE_LABEL` (255) for "no label / ignored".  The per-frame helpers (:class:`Colorizer`,
:func:`overlay`) take an optional preallocated ``out`` buffer so that a node can run without
per-frame allocations.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from .atomic_files import atomic_write_bytes

# The dataset label sets live in label_sets; re-exported here for existing callers.
from .label_sets import CAMVID_CLASSES, CAMVID_PALETTE, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_PALETTE",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "IGNORE_LABEL",
    "Colorizer",
    "confidence_to_image",
    "contact_sheet",
    "default_palette",
    "legend",
    "overlay",
    "save_png",
]

#: Label value meaning "ignored / void"; always drawn with the ignore color.
IGNORE_LABEL = 255


def _voc_color(i: int) -> tuple[int, int, int]:
    """PASCAL VOC bit-interleaved color map entry ``i`` (256 distinct colors)."""
    r = g = b = 0
    c = i
    for j in range(8):
        r |= ((c >> 0) & 1) << (7 - j)
        g |= ((c >> 1) & 1) << (7 - j)
        b |= ((c >> 2) & 1) << (7 - j)
        c >>= 3
    return r, g, b


def _build_default_palette() -> np.ndarray:
    colors: list[tuple[int, int, int]] = [tuple(int(v) for v in c) for c in CITYSCAPES_PALETTE]
    seen = set(colors) | {(0, 0, 0)}  # black is the default ignore color
    for i in range(1, 256):
        c = _voc_color(i)
        if c not in seen:
            colors.append(c)
            seen.add(c)
    rng = np.random.default_rng(20240601)
    while len(colors) < 256:
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        if c not in seen:
            colors.append(c)
            seen.add(c)
    pal = np.array(colors[:256], dtype=np.uint8)
    pal.setflags(write=False)
    return pal


_DEFAULT_PALETTE = _build_default_palette()


def default_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` ``uint8`` distinct, deterministic colors; never black.

    The first 19 are the Cityscapes colors, then the PASCAL VOC color map (skipping repeats),
    then seeded random colors.  ``num_classes`` must be in 0..256.
    """
    n = int(num_classes)
    if not 0 <= n <= 256:
        raise ValueError(f"default_palette: num_classes must be in 0..256, got {num_classes}")
    return _DEFAULT_PALETTE[:n].copy()


def _as_color(value: Sequence[int], what: str) -> np.ndarray:
    c = np.asarray(value)
    if c.shape != (3,) or not np.all((c >= 0) & (c <= 255)):
        raise ValueError(f"{what} must be 3 values in 0..255, got {value!r}")
    return c.astype(np.uint8)


class Colorizer:
    """Maps label images to RGB color masks through a 256-entry lookup table.

    Labels ``0..K-1`` get the palette colors; labels ``>= K`` and :data:`IGNORE_LABEL` (255, even
    when ``K == 256``) get ``ignore_color``.  Instances hold no per-frame state and can be shared
    between threads.
    """

    def __init__(self, palette: np.ndarray, ignore_color: Sequence[int] = (0, 0, 0)):
        pal = np.asarray(palette)
        if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] > 256:
            raise ValueError(f"Colorizer: palette must have shape (K, 3) with K <= 256, got {pal.shape}")
        if pal.size and (pal.min() < 0 or pal.max() > 255):
            raise ValueError("Colorizer: palette values must be in 0..255")
        self.num_classes = int(pal.shape[0])
        self.palette = pal.astype(np.uint8)
        self.ignore_color = _as_color(ignore_color, "Colorizer: ignore_color")
        lut = np.empty((256, 3), dtype=np.uint8)
        lut[:] = self.ignore_color
        lut[: self.num_classes] = self.palette
        lut[IGNORE_LABEL] = self.ignore_color
        lut.setflags(write=False)
        self.lut = lut
        self._lut_cv = np.ascontiguousarray(lut.reshape(256, 1, 3))

    def colorize(self, labels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``(H, W)`` labels -> ``(H, W, 3)`` ``uint8`` RGB; writes into ``out`` when given.

        ``uint8`` labels take the allocation-free path (``cv2.merge`` into ``out`` then an in-place
        ``cv2.LUT``, ~2x faster than ``np.take``).  Other integer/bool dtypes are accepted (values
        outside 0..255 count as ignored) at the cost of a temporary.
        """
        lab = np.asarray(labels)
        if lab.ndim != 2:
            raise ValueError(f"colorize: labels must be HxW, got shape {lab.shape}")
        if lab.dtype != np.uint8:
            if lab.dtype.kind not in "uib":
                raise ValueError(f"colorize: labels must be an integer array, got dtype {lab.dtype}")
            valid = (lab >= 0) & (lab <= 255)
            lab = np.where(valid, lab, IGNORE_LABEL).astype(np.uint8)
        h, w = lab.shape
        if out is None:
            out = np.empty((h, w, 3), dtype=np.uint8)
        elif out.shape != (h, w, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(
                f"colorize: out must be a C-contiguous ({h}, {w}, 3) uint8 array, got "
                f"{out.shape} {out.dtype}"
            )
        if h == 0 or w == 0:
            return out
        cv2.merge((lab, lab, lab), dst=out)
        cv2.LUT(out, self._lut_cv, dst=out)
        return out

    __call__ = colorize


def _check_rgb(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{what} must be an HxWx3 uint8 array, got shape {a.shape} dtype {a.dtype}")
    return a


def overlay(image_rgb: np.ndarray, color_mask: np.ndarray, alpha: float,
            out: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """Blend ``out = (1 - alpha) * image + alpha * color_mask`` (rounded, ``uint8``).

    ``alpha`` must be in [0, 1].  With ``labels`` (``H x W``), pixels labelled
    :data:`IGNORE_LABEL` keep the original image.  ``out`` may be a preallocated buffer, and may
    even be ``image_rgb`` itself (in-place blending).
    """
    img = _check_rgb(image_rgb, "overlay: image_rgb")
    col = _check_rgb(color_mask, "overlay: color_mask")
    if img.shape != col.shape:
        raise ValueError(f"overlay: image {img.shape} and color_mask {col.shape} differ in shape")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"overlay: alpha must be a number in [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha!r}")
    if out is None:
        out = np.empty_like(img)
    elif out.shape != img.shape or out.dtype != np.uint8:
        raise ValueError(f"overlay: out must be a {img.shape} uint8 array, got {out.shape} {out.dtype}")
    ignore = None
    kept = None
    if labels is not None:
        lab = np.asarray(labels)
        if lab.shape != img.shape[:2]:
            raise ValueError(f"overlay: labels shape {lab.shape} does not match image {img.shape[:2]}")
        ignore = lab == IGNORE_LABEL
        if np.shares_memory(out, img):
            kept = img[ignore]  # saved before the in-place blend overwrites them
    cv2.addWeighted(img, 1.0 - a, col, a, 0.0, dst=out)
    if ignore is not None:
        if kept is not None:
            out[ignore] = kept
        else:
            np.copyto(out, img, where=ignore[:, :, None])
    return out


def confidence_to_image(conf: np.ndarray) -> np.ndarray:
    """Validate an ``H x W`` confidence map for a ``32FC1`` message: ``float32``, clipped to [0, 1].

    NaN becomes 0, +inf 1, -inf 0.  Always returns a new C-contiguous array (the input is never
    modified).
    """
    c = np.asarray(conf)
    if c.ndim != 2:
        raise ValueError(f"confidence_to_image: expected an HxW array, got shape {c.shape}")
    if c.dtype.kind not in "fiub":
        raise ValueError(f"confidence_to_image: expected a real-valued array, got dtype {c.dtype}")
    out = np.array(c, dtype=np.float32, order="C", copy=True)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _to_rgb_tile(img: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        if a.dtype == np.uint16:
            a = cv2.convertScaleAbs(a, alpha=255.0 / 65535.0)
        elif a.dtype == np.bool_:
            a = a.astype(np.uint8) * 255
        elif a.dtype != np.uint8:
            raise ValueError(f"{what}: gray images must be uint8/uint16/bool, got {a.dtype}")
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_GRAY2RGB)
    if a.ndim == 3 and a.shape[2] == 4 and a.dtype == np.uint8:
        return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGBA2RGB)
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        return a
    raise ValueError(f"{what}: expected HxWx3 uint8 RGB (or gray), got shape {a.shape} dtype {a.dtype}")


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    # Area averaging when shrinking; nearest when enlarging so palette colors stay exact.
    shrink = img.shape[1] > w or img.shape[0] > h
    return cv2.resize(np.ascontiguousarray(img), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _fit_text(text: str, max_w: int, scale: float, thickness: int) -> str:
    """``text`` shortened with '..' until it fits in ``max_w`` pixels."""
    if cv2.getTextSize(text, _FONT, scale, thickness)[0][0] <= max_w:
        return text
    while len(text) > 1:
        text = text[:-1]
        if cv2.getTextSize(text + "..", _FONT, scale, thickness)[0][0] <= max_w:
            return text + ".."
    return text


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str] | None = None,
                  max_width: int = 1920, tile_width: int | None = None, pad: int = 4,
                  background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Tile images into one RGB ``uint8`` image: one list per row, optional column titles.

    Every image is resized to a common tile size: the first image's aspect ratio, its width (or
    ``tile_width``) capped so the sheet is at most ``max_width`` pixels wide.  Images may be RGB
    ``uint8`` (``H x W x 3``), RGBA, or gray ``uint8``/``uint16``/``bool``.  Short rows are padded
    with the background color.  ``titles`` (one per column) are drawn above the columns.
    """
    if not rows or not any(im is not None for r in rows for im in r):
        raise ValueError("contact_sheet: no images given")
    ncols = max(len(r) for r in rows)
    nrows = len(rows)
    if titles is not None and len(titles) != ncols:
        raise ValueError(f"contact_sheet: {len(titles)} titles for {ncols} columns")
    pad = int(pad)
    if pad < 0:
        raise ValueError(f"contact_sheet: pad must be >= 0, got {pad}")
    bg = _as_color(background, "contact_sheet: background")
    first = next(_to_rgb_tile(im, "contact_sheet") for r in rows for im in r if im is not None)
    fh, fw = first.shape[:2]
    if fh == 0 or fw == 0:
        raise ValueError(f"contact_sheet: empty image of shape {first.shape}")
    avail = (int(max_width) - pad * (ncols + 1)) // ncols
    if avail < 1:
        raise ValueError(f"contact_sheet: max_width={max_width} is too small for {ncols} columns")
    tw = min(int(tile_width) if tile_width else fw, avail)
    tw = max(tw, 1)
    th = max(1, int(round(tw * fh / fw)))

    title_h = 0
    scale, thick = 0.5, 1
    if titles is not None:
        scale = max(0.35, min(1.0, tw / 400.0))
        thick = 1 if scale < 0.8 else 2
        (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
        title_h = text_h + base + 2 * pad

    height = pad + title_h + nrows * (th + pad)
    width = pad + ncols * (tw + pad)
    sheet = np.empty((height, width, 3), dtype=np.uint8)
    sheet[:] = bg
    if titles is not None:
        text_color = (0, 0, 0) if int(bg.astype(int).sum()) > 3 * 128 else (255, 255, 255)
        (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thick)
        for c, title in enumerate(titles):
            text = _fit_text(str(title), tw, scale, thick)
            x = pad + c * (tw + pad)
            cv2.putText(sheet, text, (x, pad + text_h), _FONT, scale, text_color, thick, cv2.LINE_AA)
    for r, row in enumerate(rows):
        y = pad + title_h + r * (th + pad)
        for c, im in enumerate(row):
            if im is None:
                continue
            tile = _resize(_to_rgb_tile(im, f"contact_sheet[{r}][{c}]"), tw, th)
            x = pad + c * (tw + pad)
            sheet[y:y + th, x:x + tw] = tile
    return sheet


def legend(class_names: Sequence[str], palette: np.ndarray, swatch: int = 16, pad: int = 4,
           background: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A small RGB legend: one row per class, a color swatch followed by the class name."""
    names = [str(n) for n in class_names]
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"legend: palette must have shape (K, 3), got {pal.shape}")
    if pal.shape[0] < len(names):
        raise ValueError(f"legend: {len(names)} class names but only {pal.shape[0]} palette colors")
    if not names:
        raise ValueError("legend: no class names")
    swatch, pad = int(swatch), int(pad)
    if swatch < 4 or pad < 0:
        raise ValueError(f"legend: swatch must be >= 4 and pad >= 0, got swatch={swatch} pad={pad}")
    bg = _as_color(background, "legend: background")
    scale = swatch / 30.0
    thick = 1
    sizes = [cv2.getTextSize(n, _FONT, scale, thick) for n in names]
    text_w = max(s[0][0] for s in sizes)
    row_h = max(swatch, max(s[0][1] + s[1] for s in sizes)) + pad
    height = pad + len(names) * row_h
    width = pad + swatch + pad + text_w + pad
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = bg
    text_color = (0, 0, 0) if int(bg.astype(int).sum()) > 3 * 128 else (255, 255, 255)
    for i, name in enumerate(names):
        y = pad + i * row_h
        img[y:y + swatch, pad:pad + swatch] = pal[i].astype(np.uint8)
        (_, th), _ = sizes[i]
        baseline_y = y + (swatch + th) // 2
        cv2.putText(img, name, (pad + swatch + pad, baseline_y), _FONT, scale, text_color, thick,
                    cv2.LINE_AA)
    return img


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Write ``rgb`` as a PNG at ``path`` atomically (temp file in the same folder + ``os.replace``).

    Accepts ``H x W x 3`` RGB / ``H x W x 4`` RGBA ``uint8`` (converted to OpenCV's BGR order) and
    ``H x W`` ``uint8``/``uint16`` gray.  Raises ``OSError`` naming ``path`` when the file cannot be
    written and ``ValueError`` for arrays that cannot be stored.  Returns the path as a string.
    """
    target = os.fspath(path)
    a = np.asarray(rgb)
    if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
        img = cv2.cvtColor(a, cv2.COLOR_RGB2BGR)
    elif a.ndim == 3 and a.shape[2] == 4 and a.dtype == np.uint8:
        img = cv2.cvtColor(a, cv2.COLOR_RGBA2BGRA)
    elif a.ndim == 2 and a.dtype in (np.uint8, np.uint16):
        img = np.ascontiguousarray(a)
    else:
        raise ValueError(
            f"save_png({target!r}): expected HxWx3/HxWx4 uint8 or HxW uint8/uint16, got shape "
            f"{a.shape} dtype {a.dtype}"
        )
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"save_png({target!r}): empty image of shape {a.shape}")
    ok, enc = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover
        raise OSError(f"save_png: PNG encoding failed for {target!r}")
    try:
        atomic_write_bytes(target, enc.tobytes())
    except OSError as exc:
        raise OSError(exc.errno, f"save_png: cannot write {target!r}: {exc.strerror or exc}",
                      target) from exc
    return target
