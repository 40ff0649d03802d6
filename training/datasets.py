"""Segmentation datasets: an index of (image, label) file pairs, builders for the supported layouts,
and :func:`validate_index`, which checks every pair before training starts.

* :class:`SegmentationDataset` reads an image with OpenCV (BGR -> RGB, uint8 ``H x W x 3``) and its
  label (``IMREAD_UNCHANGED``, single channel), maps the raw label ids through a lookup table
  (e.g. CamVid 11 -> 255, ADE20K 0 -> 255 and ``v -> v - 1``), and applies the transform
  (``transform(image, label[, rng=...]) -> (float tensor C x H x W, int64 tensor H x W)``, see
  :mod:`clipseg_training.transforms`).  Items are ``dict(image=..., label=..., path=str)``.
* Builders: :func:`camvid`, :func:`cityscapes`, :func:`ade20k`, :func:`folder`, dispatched by
  :func:`build_dataset`.  A missing root or an empty split raises :class:`DatasetError` at once.
* :func:`validate_index` checks that every file exists and decodes, that image and label sizes
  agree, and that every label value maps into ``0..K-1`` or the ignore index, in a thread pool,
  and reports all problems in one :class:`DatasetError`.
"""
from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import cv2
import numpy as np
import torch

from clipseg_ros.conventions import IGNORE_INDEX
from clipseg_ros.label_sets import ADE20K_CLASSES, CAMVID_CLASSES, CITYSCAPES_CLASSES

# Cityscapes labelIds -> trainIds (every other id -> ignore), for trees without *_labelTrainIds.png.
CITYSCAPES_ID_TO_TRAINID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                            24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_LUT_SIZE = 65536

__all__ = [
    "ADE20K_CLASSES", "CAMVID_CLASSES", "CITYSCAPES_CLASSES", "CITYSCAPES_ID_TO_TRAINID",
    "DATASETS", "DatasetError", "IGNORE_INDEX", "SegmentationDataset",
    "ade20k", "build_dataset", "camvid", "cityscapes", "folder", "read_classes_file", "validate_index",
]


class DatasetError(ValueError):
    """A dataset that cannot be used: missing root, empty split, bad files or label values."""


def _values_text(values, limit: int = 10) -> str:
    values = np.unique(np.asarray(values))
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({values.size} distinct)" if values.size > limit else "")


def _label_lut(label_map) -> np.ndarray | None:
    """``None`` (identity), a dict of overrides on the identity, or an array lookup table."""
    if label_map is None:
        return None
    lut = np.arange(_LUT_SIZE, dtype=np.int64)
    if isinstance(label_map, Mapping):
        for src, dst in label_map.items():
            src, dst = int(src), int(dst)
            if not 0 <= src < _LUT_SIZE or not 0 <= dst < _LUT_SIZE:
                raise ValueError(f"label map entry {src} -> {dst} is outside 0..{_LUT_SIZE - 1}")
            lut[src] = dst
    else:
        arr = np.asarray(label_map).astype(np.int64).ravel()
        if arr.size > _LUT_SIZE or (arr.size and (arr.min() < 0 or arr.max() >= _LUT_SIZE)):
            raise ValueError("a label lookup table has at most 65536 entries with values in 0..65535")
        lut[: arr.size] = arr
    if np.array_equal(lut, np.arange(_LUT_SIZE)):
        return None
    return lut.astype(np.uint16)


# ===================================================================================== dataset
class SegmentationDataset(torch.utils.data.Dataset):
    """(image, label) file pairs with class names, an ignore index, a label lookup table and a
    joint transform.

    ``label_map``: ``None`` (labels are used as stored), a dict ``{raw: mapped}`` overriding the
    identity, or an array lookup table indexed by raw value.  After mapping, values must be in
    ``0..K-1`` or ``ignore_index`` (checked per item, and for all items by :func:`validate_index`).
    ``transform``: ``transform(image, label)`` (called with ``rng=`` when :meth:`get_item` gets a
    generator); ``None`` converts to tensors without normalisation (float32 0..255, int64).
    """

    def __init__(self, pairs: Iterable[tuple], class_names: Sequence[str], transform: Callable | None = None,
                 ignore_index: int = IGNORE_INDEX, label_map=None, root=None, split: str | None = None,
                 name: str = "custom"):
        self.pairs: list[tuple[Path, Path]] = [(Path(img), Path(lab)) for img, lab in pairs]
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise DatasetError(f"{name} dataset has no class names")
        self.num_classes = len(self.class_names)
        self.ignore_index = int(ignore_index)
        self.transform = transform
        self.root = Path(root) if root is not None else None
        self.split = split
        self.name = name
        self.label_map = _label_lut(label_map)          # uint16 LUT[65536] or None (identity)
        mapped = self.label_map if self.label_map is not None else np.arange(_LUT_SIZE)
        valid_out = np.zeros(_LUT_SIZE, dtype=bool)
        valid_out[: self.num_classes] = True
        if 0 <= self.ignore_index < _LUT_SIZE:
            valid_out[self.ignore_index] = True
        self._invalid = ~valid_out[mapped]               # by raw value
        fits8 = self.num_classes <= 256 and 0 <= self.ignore_index <= 255
        self._out_dtype = np.uint8 if fits8 else np.uint16
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ index
    def __len__(self) -> int:
        return len(self.pairs)

    def limit(self, n: int) -> "SegmentationDataset":
        """Keep only the first ``n`` pairs (smoke tests, quick runs)."""
        self.pairs = self.pairs[: max(0, int(n))]
        self._cache = {i: v for i, v in self._cache.items() if i < len(self.pairs)}
        return self

    def describe(self) -> str:
        where = f" split {self.split!r}" if self.split else ""
        root = f" at {self.root}" if self.root is not None else ""
        return f"{self.name}{where}{root}"

    def __repr__(self) -> str:
        return (f"SegmentationDataset({self.describe()}, {len(self)} pairs, {self.num_classes} classes, "
                f"ignore_index={self.ignore_index})")

    # ------------------------------------------------------------------ labels
    def invalid_values(self, raw: np.ndarray) -> np.ndarray:
        """The distinct raw label values that do not map into ``0..K-1`` or the ignore index."""
        if raw.dtype not in (np.uint8, np.uint16):
            raise DatasetError(f"unsupported label dtype {raw.dtype} (labels must be 8- or 16-bit)")
        bad = self._invalid[raw]
        return np.unique(raw[bad]) if bad.any() else np.zeros(0, dtype=raw.dtype)

    def describe_values(self, raw_values: np.ndarray) -> str:
        vals = np.unique(raw_values)
        parts = []
        for v in vals[:10]:
            v = int(v)
            m = int(self.label_map[v]) if self.label_map is not None else v
            parts.append(str(v) if m == v else f"{v} (-> {m})")
        more = f", ... ({vals.size} distinct)" if vals.size > 10 else ""
        return ", ".join(parts) + more

    def _bad_values_message(self, path, raw_values) -> str:
        return (f"label {path} has values {self.describe_values(raw_values)} outside the classes "
                f"0..{self.num_classes - 1} and {self.ignore_index} (ignore)"
                + (" after the label map" if self.label_map is not None else ""))

    def map_labels(self, raw: np.ndarray, path="<array>") -> np.ndarray:
        """Raw label ids -> class ids (uint8 for up to 256 classes); invalid values raise."""
        bad = self.invalid_values(raw)
        if bad.size:
            raise DatasetError(self._bad_values_message(path, bad))
        out = self.label_map[raw] if self.label_map is not None else raw
        return out.astype(self._out_dtype, copy=False)

    # ------------------------------------------------------------------ items
    # ------------------------------------------------------------------ cache
    def cache(self, max_mb: float, progress: bool = False, threads: int | None = None) -> dict:
        """Decode pairs into RAM (uint8 image and mapped label, read-only) until ``max_mb`` is
        reached, so training decodes each file once per run instead of once per epoch.

        Filled in the main process before the loaders start: forked loader workers share the
        arrays.  The cached arrays are the very arrays :meth:`load` would return, so augmentation
        sees identical inputs (they are marked read-only: a transform that wrote into its input
        would fail loudly instead of corrupting later epochs).  Returns what was cached.
        """
        budget = float(max_mb) * 2**20
        used = sum(a.nbytes + b.nbytes for a, b in self._cache.values())
        todo = [i for i in range(len(self)) if i not in self._cache]
        if budget <= 0 or not todo:
            return self.cache_info()
        it = todo
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), desc=f"cache {self.split or self.name}", unit="img",
                       leave=False, dynamic_ncols=True)
        n_threads = threads or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            # in chunks, so the budget is checked without decoding far past it
            for start in range(0, len(it), 4 * n_threads):
                chunk = it[start:start + 4 * n_threads]
                for i, (image, label) in zip(chunk, pool.map(self._decode, chunk)):
                    size = image.nbytes + label.nbytes
                    if used + size > budget:
                        break
                    image.flags.writeable = False
                    label.flags.writeable = False
                    self._cache[i] = (image, label)
                    used += size
                    if bar is not None:
                        bar.update(1)
                else:
                    continue
                break
        if bar is not None:
            bar.close()
        return self.cache_info()

    def cache_info(self) -> dict:
        used = sum(a.nbytes + b.nbytes for a, b in self._cache.values())
        return {"cached": len(self._cache), "total": len(self), "mb": round(used / 2**20, 1)}

    def class_pixel_counts(self, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Per class: its labelled pixels, and the pixels of the images it appears in (the two
        counts median-frequency balancing needs).  Reads the label files only (or the cache)."""
        counts = np.zeros(self.num_classes, np.int64)
        present = np.zeros(self.num_classes, np.int64)
        it = range(len(self))
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="class frequencies", unit="label", leave=False, dynamic_ncols=True)
        for i in it:
            hit = self._cache.get(i)
            if hit is not None:
                label = hit[1]
            else:
                lab_path = self.pairs[i][1]
                raw = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
                if raw is None or raw.ndim != 2:
                    raise DatasetError(f"cannot read label file {lab_path} as single-channel class ids"
                                       + ("" if lab_path.is_file() else " (missing)"))
                label = self.map_labels(raw, lab_path)
            c = np.bincount(label[label < self.num_classes].ravel(), minlength=self.num_classes)
            counts += c
            present[c > 0] += int((label != self.ignore_index).sum())
        return counts, present

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed pair: RGB uint8 ``H x W x 3`` and mapped label ``H x W``."""
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        return self._decode(index)

    def _decode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lab_path = self.pairs[index]
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if image is None:
            raise DatasetError(f"cannot read image file {img_path}"
                               + ("" if img_path.is_file() else " (missing)"))
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        raw = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DatasetError(f"cannot read label file {lab_path}"
                               + ("" if lab_path.is_file() else " (missing)"))
        if raw.ndim != 2:
            raise DatasetError(f"label file {lab_path} has {raw.shape[2]} channels; labels must be "
                               f"single-channel class ids")
        if raw.shape != image.shape[:2]:
            raise DatasetError(f"size mismatch: image {img_path} is {image.shape[1]}x{image.shape[0]} "
                               f"but label {lab_path} is {raw.shape[1]}x{raw.shape[0]}")
        return image, self.map_labels(raw, lab_path)

    def get_item(self, index: int, rng: np.random.Generator | None = None) -> dict:
        image, label = self.load(index)
        if self.transform is None:
            img_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
            lab_t = torch.from_numpy(label.astype(np.int64))
        elif rng is None:
            img_t, lab_t = self.transform(image, label)
        else:
            img_t, lab_t = self.transform(image, label, rng=rng)
        return {"image": img_t, "label": lab_t, "path": str(self.pairs[index][0])}

    def __getitem__(self, index: int) -> dict:
        return self.get_item(index)


# ===================================================================================== builders
def _require_root(root, name: str) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "not found"
        raise DatasetError(f"{name} dataset root {what}: {root}")
    return root


def _require_pairs(pairs: list, name: str, root: Path, split: str, looked_for: str) -> list:
    if not pairs:
        raise DatasetError(f"{name} dataset split {split!r} under {root} is empty (looked for {looked_for})")
    return pairs


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _unique_stems(images: list[Path], where: Path) -> None:
    seen: dict[str, Path] = {}
    for p in images:
        if p.stem in seen:
            raise DatasetError(f"two images with the same name {p.stem!r} in {where}: "
                               f"{seen[p.stem].name} and {p.name}")
        seen[p.stem] = p


def _resolve_listed(root: Path, entry: str) -> Path:
    """A path from a split file: relative to ``root``; an absolute one (the SegNet files list
    ``/SegNet/CamVid/train/x.png``) resolves to ``root/<last two components>``."""
    p = Path(entry)
    if not p.is_absolute():
        return root / p
    local = root.joinpath(*p.parts[-2:])
    if local.exists() or not p.exists():
        return local
    return p


def camvid(root, split: str = "train", transform: Callable | None = None) -> SegmentationDataset:
    """CamVid in the SegNet layout: ``{split}.txt`` (``image label`` per line) or, without it, the
    folders ``{split}/`` and ``{split}annot/`` matched by file name.  Label 11 (void) -> ignore."""
    root = _require_root(root, "camvid")
    listing = root / f"{split}.txt"
    pairs = []
    if listing.is_file():
        for n, line in enumerate(listing.read_text().splitlines(), 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) != 2:
                raise DatasetError(f"{listing}:{n}: expected 'image_path label_path', got {line.strip()!r}")
            pairs.append((_resolve_listed(root, fields[0]), _resolve_listed(root, fields[1])))
        looked_for = str(listing)
    else:
        images = _list_images(root / split)
        _unique_stems(images, root / split)
        pairs = [(p, root / f"{split}annot" / (p.stem + ".png")) for p in images]
        looked_for = f"{listing} or images in {root / split}"
    _require_pairs(pairs, "camvid", root, split, looked_for)
    return SegmentationDataset(pairs, CAMVID_CLASSES, transform, IGNORE_INDEX, {11: IGNORE_INDEX},
                               root=root, split=split, name="camvid")


def cityscapes(root, split: str = "train", transform: Callable | None = None,
               label_type: str = "auto") -> SegmentationDataset:
    """Cityscapes: ``leftImg8bit/{split}/<city>/*_leftImg8bit.png`` with
    ``gtFine/{split}/<city>/*_gtFine_labelTrainIds.png`` (19 classes in trainId order).

    ``label_type``: ``"trainIds"``, ``"ids"`` (``*_gtFine_labelIds.png`` mapped with
    :data:`CITYSCAPES_ID_TO_TRAINID`) or ``"auto"`` (trainIds when the tree has them, else ids).
    """
    root = _require_root(root, "cityscapes")
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    _require_pairs(images, "cityscapes", root, split, f"{root / 'leftImg8bit' / split}/*/*_leftImg8bit.png")
    gt = root / "gtFine" / split

    def label_path(img: Path, kind: str) -> Path:
        stem = img.name[: -len("_leftImg8bit.png")]
        return gt / img.parent.name / f"{stem}_gtFine_label{kind}.png"

    if label_type not in ("auto", "trainIds", "ids"):
        raise ValueError(f"label_type must be auto, trainIds or ids, got {label_type!r}")
    if label_type == "auto":
        has_train = any(label_path(p, "TrainIds").is_file() for p in images[:20]) or \
            next(gt.glob("*/*_gtFine_labelTrainIds.png"), None) is not None
        has_ids = next(gt.glob("*/*_gtFine_labelIds.png"), None) is not None
        label_type = "ids" if (not has_train and has_ids) else "trainIds"
    if label_type == "trainIds":
        pairs, label_map = [(p, label_path(p, "TrainIds")) for p in images], None
    else:
        pairs = [(p, label_path(p, "Ids")) for p in images]
        label_map = np.full(256, IGNORE_INDEX, dtype=np.int64)
        for src, dst in CITYSCAPES_ID_TO_TRAINID.items():
            label_map[src] = dst
    return SegmentationDataset(pairs, CITYSCAPES_CLASSES, transform, IGNORE_INDEX, label_map,
                               root=root, split=split, name="cityscapes")


_ADE_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


def ade20k(root, split: str = "train", transform: Callable | None = None) -> SegmentationDataset:
    """ADE20K SceneParsing: ``ADEChallengeData2016/images/{training,validation}/*.jpg`` with
    ``annotations/.../*.png``; ``root`` may be the ``ADEChallengeData2016`` folder itself or its
    parent.  150 classes: label 0 (other) -> ignore, ``v -> v - 1``."""
    root = _require_root(root, "ade20k")
    if split not in _ADE_SPLITS:
        raise DatasetError(f"ade20k has splits train/training and val/validation, not {split!r}")
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    sub = _ADE_SPLITS[split]
    images = sorted((base / "images" / sub).glob("*.jpg"))
    _require_pairs(images, "ade20k", root, split, f"{base / 'images' / sub}/*.jpg")
    pairs = [(p, base / "annotations" / sub / (p.stem + ".png")) for p in images]
    lut = np.arange(256, dtype=np.int64) - 1
    lut[0] = IGNORE_INDEX
    return SegmentationDataset(pairs, ADE20K_CLASSES, transform, IGNORE_INDEX, lut,
                               root=root, split=split, name="ade20k")


def read_classes_file(path) -> list[str]:
    """One class name per line (blank lines and ``#`` comments skipped), in label order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"classes file not found: {path}")
    names = [ln.strip() for ln in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    if not names:
        raise DatasetError(f"classes file {path} lists no class names")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DatasetError(f"classes file {path} lists {', '.join(dup)} more than once")
    return names


def folder(root, split: str = "train", classes_file=None, transform: Callable | None = None,
           ignore_index: int = IGNORE_INDEX, label_map=None) -> SegmentationDataset:
    """Generic layout: ``root/images/{split}/*.{png,jpg,jpeg}`` with ``root/labels/{split}/<stem>.png``
    (values = class ids, ``ignore_index`` = unlabelled).  ``classes_file`` (default
    ``root/classes.txt``; a relative path not found from the working directory is tried under
    ``root``) lists the class names one per line."""
    root = _require_root(root, "folder")
    if classes_file is None:
        cf = root / "classes.txt"
    else:
        cf = Path(classes_file).expanduser()
        if not cf.is_absolute() and not cf.is_file() and (root / cf).is_file():
            cf = root / cf
    names = read_classes_file(cf)
    images = _list_images(root / "images" / split)
    _unique_stems(images, root / "images" / split)
    _require_pairs(images, "folder", root, split, f"{root / 'images' / split}/*.png|jpg")
    pairs = [(p, root / "labels" / split / (p.stem + ".png")) for p in images]
    return SegmentationDataset(pairs, names, transform, ignore_index, label_map,
                               root=root, split=split, name="folder")


DATASETS = {"camvid": camvid, "cityscapes": cityscapes, "ade20k": ade20k, "folder": folder}


def build_dataset(name: str, root, split: str, transform: Callable | None = None, classes_file=None,
                  **kwargs) -> SegmentationDataset:
    """Build a dataset by layout name (``camvid``, ``cityscapes``, ``ade20k``, ``folder``).

    ``classes_file`` is used by ``folder`` (the built-in datasets have fixed class lists and ignore
    it); other keyword arguments go to the builder."""
    key = str(name).lower()
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if "+" in str(split):
        return _joined(name, root, str(split), transform, classes_file, **kwargs)
    if key == "folder":
        return folder(root, split, classes_file=classes_file, transform=transform, **kwargs)
    return DATASETS[key](root, split, transform=transform, **kwargs)


def _joined(name: str, root, split: str, transform, classes_file, **kwargs) -> SegmentationDataset:
    """``train+val``: the splits one after the other, as one dataset (the final model of a fixed
    schedule is trained on train and val together).  The splits must have the same classes and
    label mapping and share no image."""
    parts = [p.strip() for p in split.split("+")]
    if any(not p for p in parts) or len(set(parts)) != len(parts):
        raise DatasetError(f"split {split!r}: give distinct split names joined by '+', e.g. train+val")
    sets = [build_dataset(name, root, p, transform, classes_file, **kwargs) for p in parts]
    first = sets[0]
    seen = {img: parts[0] for img, _ in first.pairs}
    for part, ds in zip(parts[1:], sets[1:]):
        same_map = (first.label_map is None and ds.label_map is None) or (
            first.label_map is not None and ds.label_map is not None
            and np.array_equal(first.label_map, ds.label_map))
        if ds.class_names != first.class_names or ds.ignore_index != first.ignore_index or not same_map:
            raise DatasetError(f"split {split!r}: {part!r} has other classes or label values than {parts[0]!r}")
        for img, _ in ds.pairs:
            if img in seen:
                raise DatasetError(f"split {split!r}: image {img} is in both {seen[img]!r} and {part!r}")
            seen[img] = part
        first.pairs.extend(ds.pairs)
    first.split = split
    return first


# ===================================================================================== validation
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(fh) -> tuple[int, int] | None:
    fh.seek(-2, os.SEEK_END)
    if fh.read(2) != b"\xff\xd9":                       # no end-of-image marker: truncated?
        return None
    fh.seek(2)
    while True:
        b = fh.read(1)
        while b and b != b"\xff":
            b = fh.read(1)
        while b == b"\xff":
            b = fh.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):                      # end / start of scan before a frame header
            return None
        length = struct.unpack(">H", fh.read(2))[0]
        if marker in _JPEG_SOF:
            _precision, h, w = struct.unpack(">BHH", fh.read(5))
            return h, w
        if marker == 0xE1 and fh.read(4) == b"Exif":    # EXIF orientation may rotate it: decode
            return None
        fh.seek(fh.tell() - (6 if marker == 0xE1 else 2) + length)


def image_size_from_header(path) -> tuple[int, int] | None:
    """``(height, width)`` from a PNG or JPEG header, after a cheap completeness check (PNG IEND /
    JPEG EOI trailer); ``None`` when the format is something else or anything looks off, in which
    case the caller decodes the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
                w, h = struct.unpack(">II", head[16:24])
                fh.seek(-12, os.SEEK_END)
                return (h, w) if fh.read(12) == _PNG_IEND and h > 0 and w > 0 else None
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(fh)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _check_pair(ds: SegmentationDataset, img_path: Path, lab_path: Path, check_values: bool,
                decode_images: bool) -> list[str]:
    problems = []
    img_hw = lab_hw = None
    if not img_path.is_file():
        problems.append(f"missing image file: {img_path}")
    else:
        img_hw = None if decode_images else image_size_from_header(img_path)
        if img_hw is None:
            img = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
            if img is None:
                problems.append(f"unreadable image file (cannot be decoded): {img_path}")
            else:
                img_hw = img.shape[:2]
    if not lab_path.is_file():
        problems.append(f"missing label file: {lab_path}")
    else:
        lab_hw = None if check_values else image_size_from_header(lab_path)
        if lab_hw is None:
            raw = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
            if raw is None:
                problems.append(f"unreadable label file (cannot be decoded): {lab_path}")
            elif raw.ndim != 2:
                problems.append(f"label file {lab_path} has {raw.shape[2]} channels; labels must be "
                                f"single-channel class ids")
            else:
                lab_hw = raw.shape
                if check_values:
                    try:
                        bad = ds.invalid_values(raw)
                    except DatasetError as exc:
                        problems.append(f"label {lab_path}: {exc}")
                    else:
                        if bad.size:
                            problems.append(ds._bad_values_message(lab_path, bad))
    if img_hw is not None and lab_hw is not None and tuple(img_hw) != tuple(lab_hw):
        problems.append(f"size mismatch: image {img_path} is {img_hw[1]}x{img_hw[0]} but label "
                        f"{lab_path} is {lab_hw[1]}x{lab_hw[0]}")
    return problems


def validate_index(dataset: SegmentationDataset, check_values: bool = True, progress: bool = True,
                   workers: int | None = None, decode_images: bool = False, max_report: int = 10) -> None:
    """Check every (image, label) pair before training; raise one :class:`DatasetError` listing up
    to ``max_report`` problems and how many there are in all.

    Checks: the root exists, every file exists and can be read, image and label sizes agree, and
    (``check_values``) every label value maps into ``0..K-1`` or the ignore index.  Labels are
    decoded (they are small); image sizes come from the PNG/JPEG header plus a trailer check, and
    the image is decoded only when that is inconclusive (or always, with ``decode_images``).
    """
    if dataset.root is not None and not dataset.root.is_dir():
        raise DatasetError(f"{dataset.name} dataset root not found: {dataset.root}")
    if len(dataset) == 0:
        raise DatasetError(f"{dataset.describe()} is empty: no image/label pairs")
    n_workers = workers or min(8, 2 * (os.cpu_count() or 1))

    def check(pair):
        return _check_pair(dataset, pair[0], pair[1], check_values, decode_images)

    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(dataset), desc=f"checking {dataset.name} {dataset.split or ''}".rstrip(),
                       unit="pair", dynamic_ncols=True, leave=False)
        except ImportError:  # pragma: no cover
            bar = None
    problems: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            for found in pool.map(check, dataset.pairs):
                problems.extend(found)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:max_report])
        more = f"\n  ... and {len(problems) - max_report} more" if len(problems) > max_report else ""
        raise DatasetError(f"{len(problems)} problem(s) in {dataset.describe()} "
                           f"({len(dataset)} pairs):\n{shown}{more}")
