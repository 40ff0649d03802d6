"""Segmentation metrics from an accumulated confusion matrix (NumPy only, no torch).

Modelled on mmsegmentation's ``IoUMetric`` and the torchvision references' ``ConfusionMatrix``:
predictions and ground truth of any shape are accumulated into int64 counts, and every metric is
computed from those counts at the end, so results over a whole split do not depend on how it was
batched, and counts from several processes / workers can simply be added (:meth:`merge`).

Conventions
-----------
* ``counts[g, p]``: number of pixels with ground truth ``g`` predicted as ``p`` (rows = ground
  truth, columns = prediction), ``K x K``.
* Pixels whose ground truth is ``ignore_index`` are skipped.  Any other ground-truth value outside
  ``0..K-1`` is an error (a wrong label map must not be silently ignored).
* A prediction outside ``0..K-1`` on a valid pixel is counted as *wrong*: it goes to
  :attr:`ConfusionMatrix.invalid_pred` (per ground-truth class), which is in the denominators of
  that class's IoU and accuracy and of the pixel accuracy, but is a false positive of no class.
* Per-class ``iou`` and ``acc`` are fractions in ``[0, 1]`` (NaN where undefined: IoU for a class
  absent from both ground truth and prediction, accuracy for a class absent from the ground
  truth); the summary numbers ``miou``, ``macc``, ``pixel_accuracy`` and ``fwiou`` are percentages
  (``nanmean * 100``), as mmsegmentation reports them.

Also here: :func:`remap_labels` (dataset label ids -> model classes via a lookup table),
:func:`format_table` (Markdown) and two PNG plots (matplotlib imported lazily, Agg canvas).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .atomic_files import atomic_write_bytes
from .conventions import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "ConfusionMatrix",
    "format_table",
    "plot_confusion",
    "plot_per_class_iou",
    "remap_labels",
]


def _values_text(values: np.ndarray, limit: int = 10) -> str:
    values = np.unique(values)
    shown = ", ".join(str(int(v)) for v in values[:limit])
    return shown + (f", ... ({values.size} distinct)" if values.size > limit else "")


class ConfusionMatrix:
    """Accumulates a ``K x K`` confusion matrix (rows = ground truth, columns = prediction)."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        # predictions outside 0..K-1 on valid pixels, per ground-truth class (always wrong)
        self.invalid_pred = np.zeros(num_classes, dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def update(self, pred, target) -> "ConfusionMatrix":
        """Add one batch: ``pred`` and ``target`` are integer arrays of the same (any) shape."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}")
        for name, arr in (("prediction", pred), ("ground truth", target)):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
        k = self.num_classes
        target = target.reshape(-1)
        pred = pred.reshape(-1)
        valid = target != self.ignore_index
        t = target[valid].astype(np.int64, copy=False)
        if t.size and (t.min() < 0 or t.max() >= k):
            bad = t[(t < 0) | (t >= k)]
            raise ValueError(f"ground truth has values {_values_text(bad)} outside the classes 0..{k - 1} "
                             f"and the ignore index {self.ignore_index}")
        p = pred[valid].astype(np.int64, copy=False)
        p = np.where((p < 0) | (p >= k), k, p)            # column k = "no valid class"
        table = np.bincount(t * (k + 1) + p, minlength=k * (k + 1)).reshape(k, k + 1)
        self.counts += table[:, :k]
        self.invalid_pred += table[:, k]
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (same number of classes) into this one."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class confusion matrix into a "
                             f"{self.num_classes}-class one")
        self.counts += other.counts
        self.invalid_pred += other.invalid_pred
        return self

    def reset(self) -> None:
        self.counts[...] = 0
        self.invalid_pred[...] = 0

    @property
    def total(self) -> int:
        """Number of valid (non-ignored) pixels accumulated."""
        return int(self.counts.sum() + self.invalid_pred.sum())

    # ------------------------------------------------------------------ metrics
    def compute(self) -> dict:
        """Metrics as a flat dict (NumPy arrays per class, Python floats for summaries)::

            iou, acc          per-class fractions (K,), NaN where undefined
            miou, macc        nanmean * 100 (NaN if no class is defined)
            pixel_accuracy    correct / valid pixels * 100
            fwiou             frequency-weighted IoU * 100 (weights = ground-truth frequency)
            gt_pixels, pred_pixels, tp   (K,) int64
            total_pixels, invalid_predictions   int
        """
        counts = self.counts.astype(np.float64)
        tp = np.diag(counts)
        gt = counts.sum(axis=1) + self.invalid_pred          # every valid pixel of class c
        pred = counts.sum(axis=0)                            # every pixel predicted as c
        union = gt + pred - tp
        total = float(gt.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt > 0, tp / gt, np.nan)
        freq = gt / total if total > 0 else np.zeros_like(gt)
        return {
            "iou": iou,
            "acc": acc,
            "miou": _nanmean_pct(iou),
            "macc": _nanmean_pct(acc),
            "pixel_accuracy": float(tp.sum() / total * 100.0) if total > 0 else math.nan,
            "fwiou": float(np.nansum(freq * iou) * 100.0) if total > 0 else math.nan,
            "gt_pixels": gt.astype(np.int64),
            "pred_pixels": pred.astype(np.int64),
            "tp": tp.astype(np.int64),
            "total_pixels": int(total),
            "invalid_predictions": int(self.invalid_pred.sum()),
        }

    def to_json_dict(self, class_names: Sequence[str]) -> dict:
        """JSON-ready metrics (NaN -> ``None``) with a named entry per class."""
        names = _check_names(class_names, self.num_classes)
        r = self.compute()
        per_class = {}
        for i, name in enumerate(names):
            per_class[name] = {
                "iou": _json_float(r["iou"][i]),
                "acc": _json_float(r["acc"][i]),
                "gt_pixels": int(r["gt_pixels"][i]),
                "pred_pixels": int(r["pred_pixels"][i]),
            }
        return {
            "num_classes": self.num_classes,
            "class_names": names,
            "miou": _json_float(r["miou"]),
            "macc": _json_float(r["macc"]),
            "pixel_accuracy": _json_float(r["pixel_accuracy"]),
            "fwiou": _json_float(r["fwiou"]),
            "iou": [_json_float(v) for v in r["iou"]],
            "acc": [_json_float(v) for v in r["acc"]],
            "per_class": per_class,
            "total_pixels": r["total_pixels"],
            "invalid_predictions": r["invalid_predictions"],
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total})"


def _nanmean_pct(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isnan(values)):
        return math.nan
    return float(np.nanmean(values) * 100.0)


def _json_float(v) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def _check_names(class_names: Sequence[str] | None, k: int) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(k)]
    names = [str(n) for n in class_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names given for {k} classes")
    return names


def _get(result: dict, key: str, k: int) -> np.ndarray:
    value = result.get(key)
    if value is None:
        return np.full(k, np.nan)
    return np.array([math.nan if v is None else v for v in value], dtype=np.float64)


# ---------------------------------------------------------------------------------- reporting
def format_table(result: dict, class_names: Sequence[str]) -> str:
    """Markdown table of per-class IoU and accuracy (percent) with the summary rows.

    ``result`` is :meth:`ConfusionMatrix.compute`'s dict (or :meth:`~ConfusionMatrix.to_json_dict`'s);
    undefined values are shown as ``–``.
    """
    k = len(result["iou"])
    names = _check_names(class_names, k)
    iou, acc = _get(result, "iou", k), _get(result, "acc", k)

    def pct(v) -> str:
        return "–" if v is None or math.isnan(float(v)) else f"{100.0 * float(v):.2f}"

    def num(v) -> str:
        return "–" if v is None or math.isnan(float(v)) else f"{float(v):.2f}"

    lines = ["| class | IoU (%) | Acc (%) |", "|---|---:|---:|"]
    lines += [f"| {n} | {pct(i)} | {pct(a)} |" for n, i, a in zip(names, iou, acc)]
    lines.append(f"| **mean** | **{num(result.get('miou'))}** | **{num(result.get('macc'))}** |")
    lines.append(f"| pixel accuracy | {num(result.get('pixel_accuracy'))} | |")
    lines.append(f"| frequency-weighted IoU | {num(result.get('fwiou'))} | |")
    return "\n".join(lines)


def _save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG atomically (:func:`clipseg_ros.atomic_files.atomic_write_bytes`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _figure(figsize, dpi=100):
    # A bare Figure renders with the Agg canvas and never touches pyplot's global state/backend.
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, dpi=dpi)


def plot_confusion(counts, class_names: Sequence[str], path, normalize: bool = True) -> Path:
    """Confusion-matrix heat map as PNG (rows = ground truth normalised to 1 when ``normalize``)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.shape[0]
    if counts.shape != (k, k):
        raise ValueError(f"counts must be square, got shape {counts.shape}")
    names = _check_names(class_names, k)
    if normalize:
        rows = counts.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            data = np.where(rows > 0, counts / rows, 0.0)
    else:
        data = counts
    side = min(4.0 + 0.45 * k, 30.0)
    fig = _figure((side + 1.5, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(k)
    fs = 8 if k <= 30 else 5
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=fs)
    ax.set_yticks(ticks, names, fontsize=fs)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (" (row-normalised)" if normalize else " (pixels)"))
    if k <= 20:
        vmax = data.max() if data.size else 0.0
        for g in range(k):
            for p in range(k):
                v = data[g, p]
                if v == 0:
                    continue
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(p, g, text, ha="center", va="center", fontsize=6,
                        color="white" if v > 0.5 * vmax else "black")
    fig.tight_layout()
    return _save_figure(fig, path)


def plot_per_class_iou(result: dict, class_names: Sequence[str], path) -> Path:
    """Bar chart of per-class IoU (%) with the mIoU as a horizontal line, as PNG."""
    k = len(result["iou"])
    names = _check_names(class_names, k)
    iou = _get(result, "iou", k) * 100.0
    fig = _figure((max(6.0, 0.5 * k + 2.0), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(k)
    ax.bar(x, np.nan_to_num(iou, nan=0.0), color="#4477aa")
    for i, v in enumerate(iou):
        ax.text(i, (0.0 if math.isnan(v) else v) + 1.0, "n/a" if math.isnan(v) else f"{v:.1f}",
                ha="center", va="bottom", fontsize=6 if k > 20 else 7, rotation=90 if k > 20 else 0)
    miou = result.get("miou")
    if miou is not None and not math.isnan(float(miou)):
        ax.axhline(float(miou), color="k", linestyle="--", linewidth=1, label=f"mIoU {float(miou):.2f}")
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xticks(x, names, rotation=45 if k > 6 else 0, ha="right" if k > 6 else "center",
                  fontsize=8 if k <= 30 else 5)
    ax.set_ylim(0, 110)
    ax.set_ylabel("IoU (%)")
    ax.set_title("per-class IoU")
    fig.tight_layout()
    return _save_figure(fig, path)


# ---------------------------------------------------------------------------------- label ids
def remap_labels(labels, mapping: Mapping[int, int], ignore_index: int = IGNORE_INDEX,
                 strict: bool = True) -> np.ndarray:
    """Map dataset label ids to model classes through a lookup table (256 or 65536 entries).

    ``mapping`` is the complete id -> class table (e.g. Cityscapes labelIds -> trainIds);
    ``ignore_index`` always maps to itself unless ``mapping`` says otherwise.  An id that is not in
    ``mapping`` raises ``ValueError`` naming the offending values when ``strict``, else it becomes
    ``ignore_index``.  Labels must be non-negative integers below 65536.  The result is ``uint8``
    when every output value fits in 0..255, otherwise ``int64``.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    table = {int(k): int(v) for k, v in mapping.items()}
    for src in table:
        if not 0 <= src < 65536:
            raise ValueError(f"label map source id {src} is outside 0..65535")
    outs = list(table.values()) + [int(ignore_index)]
    out_dtype = np.uint8 if min(outs) >= 0 and max(outs) <= 255 else np.int64

    size = 256 if labels.dtype == np.uint8 else 65536
    outside = None                       # positions with ids outside 0..65535 (non-uint16 dtypes)
    if labels.dtype not in (np.uint8, np.uint16) and labels.size:
        if int(labels.min()) < 0 or int(labels.max()) >= size:
            outside = (labels < 0) | (labels >= size)
            if strict:
                raise ValueError(f"label ids {_values_text(labels[outside])} are outside 0..65535 "
                                 f"and not in the label map")
    known = np.zeros(size, dtype=bool)
    lut = np.full(size, ignore_index, dtype=out_dtype)
    for src, dst in table.items():
        if src < size:
            known[src] = True
            lut[src] = dst
    if 0 <= ignore_index < size and ignore_index not in table:
        known[ignore_index] = True
        lut[ignore_index] = ignore_index
    if labels.dtype in (np.uint8, np.uint16):
        index = labels
    else:
        index = labels.astype(np.int64) if outside is None else np.where(outside, 0, labels).astype(np.int64)
    if strict:
        unknown = ~known[index]
        if unknown.any():
            raise ValueError(f"label ids {_values_text(labels[unknown])} are not in the label map "
                             f"(known: {_values_text(np.array(sorted(table)))})")
    out = lut[index]
    if outside is not None:
        out[outside] = ignore_index
    return out
