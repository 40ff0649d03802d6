"""Joint image/label transforms on NumPy arrays (OpenCV), and the train / eval presets.

Every transform is a callable ``t(image, label, rng=None) -> (image, label)`` where ``image`` is
``H x W x 3`` uint8 RGB and ``label`` ``H x W`` uint8 (uint16 is accepted too) until
:class:`Normalize` / :class:`ToTensor` turn them into ``float32`` ``C x H x W`` and ``int64``
``H x W`` tensors.  Work stays in NumPy/OpenCV until the very end because that is much faster
than per-op tensor conversions.

Randomness
----------
Random transforms draw only from a ``numpy.random.Generator``: the one passed as ``rng`` (the
trainer passes one seeded per item, see ``clipseg_training.sampling.SeededItems``), otherwise the
process-wide generator from :func:`default_rng`.  That generator is seeded from
``torch.initial_seed()``, which a ``DataLoader`` sets per worker (``base_seed + worker_id``);
pass :func:`seed_worker` as ``worker_init_fn`` (and a seeded ``generator=`` to the loader) to make
the seeding explicit.  Nothing here uses the global ``random`` / ``np.random`` state, so two runs
with the same seeds produce the same augmentations.

Presets (kept apart from the transforms, like torchvision's references):
:func:`train_preset` = RandomScale -> RandomCrop -> RandomHorizontalFlip -> PhotometricDistortion
-> Normalize -> ToTensor, :func:`eval_preset` = [Resize image only] -> Normalize -> ToTensor.
"""
from __future__ import annotations

import os
import random
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from clipseg_ros.conventions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD",
    "Compose", "RandomScale", "RandomCrop", "RandomHorizontalFlip", "PhotometricDistortion",
    "Resize", "Normalize", "ToTensor",
    "train_preset", "eval_preset", "seed_worker", "default_rng",
]

# --------------------------------------------------------------------------------- randomness
_DEFAULT: dict = {"key": None, "rng": None}


def default_rng() -> np.random.Generator:
    """The process's augmentation generator, (re)seeded from ``torch.initial_seed()``.

    It is recreated whenever ``torch.initial_seed()`` or the process id changed (a new
    ``torch.manual_seed`` in the main process, a forked DataLoader worker), so it always follows
    torch's seeding.
    """
    key = (torch.initial_seed(), os.getpid())
    if _DEFAULT["key"] != key:
        _DEFAULT["key"] = key
        _DEFAULT["rng"] = np.random.default_rng(key[0])
    return _DEFAULT["rng"]


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for ``DataLoader``: seed this worker's augmentation generator (and, for
    third-party code, ``random`` and ``np.random``) from ``torch.initial_seed()``."""
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    _DEFAULT["key"] = (seed, os.getpid())
    _DEFAULT["rng"] = np.random.default_rng(seed)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return default_rng() if rng is None else rng


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


# --------------------------------------------------------------------------------- transforms
class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label, rng: np.random.Generator | None = None):
        rng = _rng(rng)
        for t in self.transforms:
            image, label = t(image, label, rng)
        return image, label

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {t!r},\n" for t in self.transforms) + ")"


class RandomScale:
    """Rescale by a factor drawn uniformly from ``[min_scale, max_scale]`` (image bilinear, label
    nearest, so labels keep only their original values)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0, step: float | None = None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        if step is not None and step <= 0:
            raise ValueError(f"scale step must be positive, got {step}")
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.step = None if step is None else float(step)

    def __call__(self, image, label, rng=None):
        if self.step is None:
            s = float(_rng(rng).uniform(self.min_scale, self.max_scale))
        else:   # mmseg's scale_step_size: one of min, min + step, ..., max
            n = int(np.floor((self.max_scale - self.min_scale) / self.step + 1e-9)) + 1
            s = self.min_scale + self.step * int(_rng(rng).integers(0, n))
        h, w = label.shape[:2]
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        if (nh, nw) == (h, w):
            return image, label
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
        return image, label

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale}" + (f", step={self.step})" if self.step else ")")


class RandomCrop:
    """Random ``h x w`` crop; smaller inputs are first padded bottom/right (image with 0, label with
    ``ignore_index``).  With ``cat_max_ratio`` (mmseg), up to 10 crops are tried until no single
    class covers more than that fraction of the crop's labelled pixels."""

    def __init__(self, height: int, width: int, ignore_index: int = IGNORE_INDEX,
                 cat_max_ratio: float | None = None):
        self.height, self.width = int(height), int(width)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"crop size must be positive, got {height}x{width}")
        self.ignore_index = int(ignore_index)
        self.cat_max_ratio = cat_max_ratio

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        ch, cw = self.height, self.width
        h, w = label.shape[:2]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=self.ignore_index)
            h, w = label.shape[:2]
        y, x = self._offset(h, w, rng)
        if self.cat_max_ratio is not None and self.cat_max_ratio < 1.0:
            for _ in range(10):
                values, cnt = np.unique(label[y:y + ch, x:x + cw], return_counts=True)
                cnt = cnt[values != self.ignore_index]
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                y, x = self._offset(h, w, rng)
        return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]

    def _offset(self, h, w, rng):
        y = int(rng.integers(0, h - self.height + 1))
        x = int(rng.integers(0, w - self.width + 1))
        return y, x

    def __repr__(self) -> str:
        return (f"RandomCrop({self.height}, {self.width}, ignore_index={self.ignore_index}, "
                f"cat_max_ratio={self.cat_max_ratio})")


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, label, rng=None):
        if _rng(rng).random() < self.p:
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class PhotometricDistortion:
    """Light mmseg-style colour jitter on uint8 RGB, each part applied with probability ``p``:
    brightness (+delta), contrast (xalpha; before or after the HSV part, at random), saturation
    (xalpha), hue (+delta, OpenCV hue units of 2 degrees).  Labels are untouched."""

    def __init__(self, brightness_delta: float = 16, contrast_range=(0.75, 1.25),
                 saturation_range=(0.75, 1.25), hue_delta: int = 9, p: float = 0.5):
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(float(v) for v in contrast_range)
        self.saturation_range = tuple(float(v) for v in saturation_range)
        self.hue_delta = int(hue_delta)
        self.p = float(p)

    def __call__(self, image, label, rng=None):
        rng = _rng(rng)
        # draw every random number in a fixed order, whatever is applied (reproducible streams)
        do = rng.random(4) < self.p
        contrast_first = bool(rng.random() < 0.5)
        beta = float(rng.uniform(-self.brightness_delta, self.brightness_delta))
        alpha = float(rng.uniform(*self.contrast_range))
        sat = float(rng.uniform(*self.saturation_range))
        hue = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
        x = np.arange(256, dtype=np.float32)
        if do[0]:                                         # brightness
            x = np.clip(x + beta, 0, 255)
        if do[1] and contrast_first:
            x = np.clip(x * alpha, 0, 255)
        if do[0] or (do[1] and contrast_first):
            image = cv2.LUT(image, x.astype(np.uint8))
        if do[2] or (do[3] and hue != 0):
            hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
            if do[2]:
                s_lut = np.clip(np.arange(256, dtype=np.float32) * sat, 0, 255).astype(np.uint8)
                hsv[..., 1] = s_lut[hsv[..., 1]]
            if do[3] and hue != 0:
                h_lut = ((np.arange(256) + hue) % 180).astype(np.uint8)
                hsv[..., 0] = h_lut[hsv[..., 0]]
            image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if do[1] and not contrast_first:
            image = cv2.LUT(image, np.clip(np.arange(256, dtype=np.float32) * alpha, 0, 255).astype(np.uint8))
        return image, label

    def __repr__(self) -> str:
        return (f"PhotometricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta}, p={self.p})")


class Resize:
    """Resize to ``height x width`` (image bilinear; label nearest, or kept at its native size
    with ``resize_label=False`` so that evaluation compares at label resolution)."""

    def __init__(self, height: int, width: int, resize_label: bool = True):
        self.height, self.width = int(height), int(width)
        self.resize_label = bool(resize_label)

    def __call__(self, image, label, rng=None):
        size = (self.width, self.height)
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        if self.resize_label and label is not None and label.shape[:2] != (self.height, self.width):
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        return image, label

    def __repr__(self) -> str:
        return f"Resize({self.height}, {self.width}, resize_label={self.resize_label})"


class Normalize:
    """``(image - mean) / std`` per RGB channel -> float32 ``H x W x 3`` (0..255-scale mean/std)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1)
        self.inv_std = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 1, -1)

    def __call__(self, image, label, rng=None):
        image = (image.astype(np.float32) - self.mean) * self.inv_std
        return image, label

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.ravel().tolist()}, std={(1 / self.inv_std).ravel().tolist()})"


class ToTensor:
    """``H x W x C`` image -> float32 ``C x H x W`` tensor (values unchanged); label -> int64."""

    def __call__(self, image, label, rng=None):
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        lab = None if label is None else torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        return img, lab

    def __repr__(self) -> str:
        return "ToTensor()"


# --------------------------------------------------------------------------------- presets
def train_preset(crop_size=(360, 480), scale_range=(0.5, 2.0), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 ignore_index: int = IGNORE_INDEX, flip_prob: float = 0.5, photometric: bool = True,
                 cat_max_ratio: float | None = None, scale_step: float | None = None) -> Compose:
    """Training augmentation: random scale, random crop (padded with ignore), flip, light
    photometric distortion, normalisation."""
    ch, cw = _hw(crop_size)
    lo, hi = scale_range
    ts: list = [RandomScale(lo, hi, scale_step), RandomCrop(ch, cw, ignore_index, cat_max_ratio)]
    if flip_prob > 0:
        ts.append(RandomHorizontalFlip(flip_prob))
    if photometric:
        ts.append(PhotometricDistortion())
    ts += [Normalize(mean, std), ToTensor()]
    return Compose(ts)


def eval_preset(size=None, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """Evaluation: native resolution by default; with ``size`` (h, w) only the image is resized
    (the label stays native, predictions are upsampled to it)."""
    ts: list = []
    if size is not None:
        h, w = _hw(size)
        ts.append(Resize(h, w, resize_label=False))
    ts += [Normalize(mean, std), ToTensor()]
    return Compose(ts)
