"""Reading rosbag2 bags (mcap or sqlite3) with the pure-Python ``rosbags`` package.

No ROS installation is needed: messages are deserialized with rosbags' built-in ROS 2 type store
and decoded with :mod:`clipseg_ros.image_codec` (which is duck-typed and takes rosbags messages,
whose ``data`` is a numpy array, as they are).

* :func:`open_bag` opens a bag folder (``metadata.yaml`` + storage files) or a bare ``.mcap`` /
  ``.db3`` file, and turns every problem into a :class:`BagError` naming the bag.
* :meth:`BagSource.select_topics` picks (or checks) the image topic and the ground-truth label topic.
* :meth:`BagSource.frames` streams :class:`Frame` objects in recording order, each with its
  ground-truth label image matched by header stamp (labels may be recorded before or after their
  image), mapped to the model's class ids by a :class:`LabelMapper`.

Every user-facing problem (missing bag, unreadable storage, unknown topic, unsupported message
type, ground truth of the wrong size, label ids outside the mapping, no frames) raises
:class:`BagError` with a one-line message; the CLI prints it and exits with status 2.
"""
from __future__ import annotations

import collections
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..conventions import IGNORE_INDEX

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
LABEL_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1")

DEFAULT_IMAGE_TOPICS = ("/camera/image_raw", "/camera/image_raw/compressed")
DEFAULT_LABEL_TOPIC = "/camera/labels"

__all__ = [
    "BagError", "BagSource", "Frame", "LabelMapper", "open_bag", "parse_label_map", "typestore",
    "stamp_to_ns", "IMAGE_TYPE", "COMPRESSED_TYPE", "DEFAULT_LABEL_TOPIC", "DEFAULT_IMAGE_TOPICS",
]


class BagError(Exception):
    """A problem with the bag or the evaluation input; the message is one line for the user."""


_TYPESTORE = None


def typestore():
    """The rosbags type store for ROS 2 Jazzy (Humble's on older rosbags; identical for our types)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore

        store = getattr(Stores, "ROS2_JAZZY", None) or Stores.ROS2_HUMBLE
        _TYPESTORE = get_typestore(store)
    return _TYPESTORE


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def fmt_stamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


# --------------------------------------------------------------------------------------------
# label id mapping
# --------------------------------------------------------------------------------------------

def _parse_id(text: Any, what: str, allow_ignore: bool) -> int:
    if allow_ignore and (text is None or str(text).strip().lower() in ("ignore", "void", "none", "null")):
        return IGNORE_INDEX
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BagError(f"label map: {what} {text!r} is not an integer class id") from None
    if not 0 <= value <= 65535:
        raise BagError(f"label map: {what} {value} is outside 0..65535")
    return value


def parse_label_map(specs: Sequence[str] | str | None) -> dict[int, int]:
    """``--label-map`` values -> ``{bag_id: model_id}``.

    Each spec is ``SRC:DST[,SRC:DST...]`` (``DST`` may be ``ignore`` = 255) or the path of a YAML /
    JSON file holding a mapping ``{SRC: DST}`` (optionally under a top-level ``label_map`` key).
    Ids not mentioned keep their value.
    """
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    mapping: dict[int, int] = {}
    for spec in specs:
        spec = str(spec).strip()
        if not spec:
            continue
        path = Path(spec)
        if ":" not in spec or path.suffix.lower() in (".yaml", ".yml", ".json") or path.is_file():
            if not path.is_file():
                raise BagError(f"label map file {spec} does not exist "
                               f"(or write the map inline as SRC:DST,...)")
            try:
                text = path.read_text()
                if path.suffix.lower() == ".json":
                    data = json.loads(text)
                else:
                    import yaml

                    data = yaml.safe_load(text)
            except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
                raise BagError(f"label map file {spec} cannot be read: {exc}".replace("\n", " ")) from None
            if isinstance(data, Mapping) and "label_map" in data:
                data = data["label_map"]
            if not isinstance(data, Mapping):
                raise BagError(f"label map file {spec} must hold a mapping {{bag_id: model_id}}")
            items = list(data.items())
        else:
            items = []
            for part in spec.split(","):
                part = part.strip()
                if not part:
                    continue
                if part.count(":") != 1:
                    raise BagError(f"label map entry {part!r} is not SRC:DST")
                items.append(tuple(part.split(":")))
        for src, dst in items:
            key = _parse_id(src, "source id", False)
            mapping[key] = _parse_id(dst, "target id", True)
    return mapping


class LabelMapper:
    """Maps ground-truth ids of the bag to the model's ids and checks the result.

    Ids not in the user's map keep their value, so the complete table handed to
    :func:`clipseg_ros.metrics.remap_labels` (the code ``clipseg-eval`` uses) is the identity on the
    model's classes ``0..K-1`` and on the ignore index, overridden by the user's map.  Any other id
    in the ground truth raises :class:`BagError` naming the ids and how to map them.
    """

    def __init__(self, mapping: Mapping[int, int] | None, num_classes: int,
                 ignore_index: int = IGNORE_INDEX):
        self.mapping = {int(k): int(v) for k, v in (mapping or {}).items()}
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        for dst in self.mapping.values():
            if dst != self.ignore_index and not 0 <= dst < self.num_classes:
                raise BagError(f"label map target {dst} is not a model class (0..{self.num_classes - 1}) "
                               f"or {self.ignore_index} (ignore)")
        self.table = {i: i for i in range(self.num_classes)}
        self.table[self.ignore_index] = self.ignore_index
        self.table.update(self.mapping)

    def __call__(self, gt: np.ndarray, where: str) -> np.ndarray:
        from ..metrics import remap_labels

        try:
            return remap_labels(gt, self.table, ignore_index=self.ignore_index, strict=True)
        except ValueError:
            known = np.zeros(65536, bool)
            known[list(self.table)] = True
            src = np.unique(gt[~known[gt]])
            shown = ", ".join(str(int(v)) for v in src[:10]) + (" ..." if src.size > 10 else "")
            hint = ",".join(f"{int(v)}:255" for v in src[:3])
            raise BagError(
                f"ground truth {where} has label ids {shown} outside the model's classes "
                f"(0..{self.num_classes - 1}, {self.ignore_index} = ignore)"
                + (" and not in the label map" if self.mapping else "")
                + f"; map them with --label-map (e.g. --label-map {hint})") from None

    def to_json(self) -> dict:
        return {str(k): v for k, v in sorted(self.mapping.items())}


# --------------------------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------------------------

@dataclass
class Frame:
    """One image of the bag, with its ground truth when the bag has it."""

    index: int                 # position among the image topic's messages (0-based)
    stamp_ns: int              # header stamp
    bag_time_ns: int           # recording (log) time
    msgtype: str
    msg: Any                   # the rosbags message
    raw: Any                   # the serialized CDR bytes (for re-publishing / output bags)
    topic: str
    gt: np.ndarray | None = None   # HxW uint8 model ids (255 = ignore); the bag's ids without a mapper
    _rgb: np.ndarray | None = field(default=None, repr=False)

    @property
    def compressed(self) -> bool:
        return self.msgtype == COMPRESSED_TYPE

    @property
    def where(self) -> str:
        return f"frame {self.index} on {self.topic} (stamp {fmt_stamp(self.stamp_ns)})"

    @property
    def rgb(self) -> np.ndarray:
        """The decoded HxWx3 uint8 RGB image (decoded once, on first use)."""
        if self._rgb is None:
            from ..image_codec import ImageDecodeError, compressed_to_rgb, image_to_rgb

            try:
                self._rgb = compressed_to_rgb(self.msg) if self.compressed else image_to_rgb(self.msg)
            except ImageDecodeError as exc:
                raise BagError(f"cannot decode {self.where}: {exc}") from None
        return self._rgb

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) without decoding raw images."""
        if not self.compressed and self._rgb is None:
            return int(self.msg.height), int(self.msg.width)
        return tuple(self.rgb.shape[:2])


def _decode_label(msgtype: str, msg: Any, where: str) -> np.ndarray:
    from ..image_codec import ImageDecodeError, compressed_to_array, image_to_array

    try:
        if msgtype == COMPRESSED_TYPE:
            arr = compressed_to_array(msg)
        else:
            if msg.encoding not in LABEL_ENCODINGS:
                raise BagError(f"ground truth {where} has encoding {msg.encoding!r}; label images must be "
                               f"mono8 or mono16 class ids")
            arr = image_to_array(msg)
    except ImageDecodeError as exc:
        raise BagError(f"cannot decode ground truth {where}: {exc}") from None
    if arr.ndim != 2 or arr.dtype not in (np.uint8, np.uint16):
        raise BagError(f"ground truth {where} is not a single-channel 8/16-bit label image "
                       f"(shape {arr.shape}, dtype {arr.dtype})")
    return arr


# --------------------------------------------------------------------------------------------
# the bag
# --------------------------------------------------------------------------------------------

def open_bag(path) -> BagSource:
    """Open a rosbag2 folder (or a bare .mcap / .db3 file); raise :class:`BagError` on any problem."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    target = path
    if path.is_dir() and not (path / "metadata.yaml").exists():
        files = sorted(list(path.glob("*.mcap")) + list(path.glob("*.db3")))
        if len(files) != 1:
            raise BagError(f"bag {path} is not a rosbag2 folder (no metadata.yaml"
                           + (f", and {len(files)} storage files" if files else ", no .mcap/.db3 file") + ")")
        target = files[0]
    if path.is_file() and path.suffix not in (".mcap", ".db3"):
        raise BagError(f"bag {path} is neither a rosbag2 folder nor a .mcap / .db3 file")
    from rosbags.rosbag2 import Reader

    try:
        reader = Reader(target)
        reader.open()
    except Exception as exc:  # noqa: BLE001 - ReaderError, sqlite3/mcap errors, OSError ...
        raise BagError(f"cannot read bag {path}: {_one_line(exc)}") from None
    return BagSource(path, reader)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


class BagSource:
    """An open bag; use as a context manager or call :meth:`close`."""

    def __init__(self, path: Path, reader):
        self.path = path
        self.reader = reader
        self.image_topic: str | None = None
        self.label_topic: str | None = None
        self.image_type: str | None = None
        self.label_type: str | None = None
        self.stats: dict = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:  # noqa: BLE001
                pass
            self.reader = None

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def topics(self) -> dict[str, tuple[str, int]]:
        """topic -> (message type, message count)."""
        out = {}
        for name, info in self.reader.topics.items():
            out[name] = (info.msgtype or "<mixed types>", int(info.msgcount))
        return dict(sorted(out.items()))

    @property
    def storage(self) -> str:
        st = getattr(self.reader, "storage", None)
        files = getattr(st, "files", None)
        paths = [str(f.get("path", "")) for f in files] if files else []
        if any(p.endswith(".mcap") for p in paths) or self.path.suffix == ".mcap":
            return "mcap"
        if any(p.endswith(".db3") for p in paths) or self.path.suffix == ".db3":
            return "sqlite3"
        ident = type(st).__name__.lower()
        return "mcap" if "mcap" in ident else ("sqlite3" if "sqlite" in ident else ident)

    def describe_topics(self) -> str:
        topics = self.topics
        if not topics:
            return "the bag has no topics"
        return "topics in the bag: " + ", ".join(f"{t} ({ty}, {n} msgs)" for t, (ty, n) in topics.items())

    def info(self) -> dict:
        r = self.reader
        count = r.message_count
        return {
            "path": str(self.path.resolve()), "storage": self.storage, "message_count": int(count),
            "start_time_ns": int(r.start_time) if count else None,
            "duration_s": float(r.duration) / 1e9 if count else 0.0,
            "ros_distro": r.ros_distro,
            "topics": {t: {"type": ty, "count": n} for t, (ty, n) in self.topics.items()},
            "source": self.custom_data().get("clipseg.source"),
        }

    def custom_data(self) -> dict:
        """The rosbag2 ``custom_data`` of the bag's ``metadata.yaml`` (``clipseg-bag-eval make-bag``
        records where the frames came from as ``clipseg.source``, e.g. ``camvid:val ...``); empty
        for a bare ``.mcap`` / ``.db3`` or a bag without it."""
        meta = (self.path if self.path.is_dir() else self.path.parent) / "metadata.yaml"
        if not meta.is_file():
            return {}
        try:
            import yaml

            data = yaml.safe_load(meta.read_text()) or {}
            custom = (data.get("rosbag2_bagfile_information") or {}).get("custom_data") or {}
        except (OSError, ValueError, AttributeError, ImportError):
            return {}
        return {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}

    # ---- topic selection ------------------------------------------------------------------
    def select_topics(self, image_topic: str | None = None, label_topic: str | None = "auto") -> None:
        """Choose and check the image topic and the label topic (``None``/"none": no ground truth)."""
        topics = self.topics
        if label_topic in ("auto", "", None) and label_topic is not None:
            label_topic = DEFAULT_LABEL_TOPIC if DEFAULT_LABEL_TOPIC in topics else None
            if label_topic is None:
                cands = [t for t, (ty, _) in topics.items()
                         if ty in IMAGE_TYPES and "label" in t.rsplit("/", 1)[-1].lower()
                         and t != image_topic]
                label_topic = cands[0] if len(cands) == 1 else None
        elif label_topic is not None and str(label_topic).lower() == "none":
            label_topic = None
        if image_topic:
            if image_topic not in topics:
                raise BagError(f"image topic {image_topic} is not in bag {self.path}; "
                               f"{self.describe_topics()}")
        else:
            cands = [t for t, (ty, _) in topics.items() if ty in IMAGE_TYPES and t != label_topic]
            preferred = [t for t in DEFAULT_IMAGE_TOPICS if t in cands]
            if preferred:
                image_topic = preferred[0]
            elif len(cands) == 1:
                image_topic = cands[0]
            elif not cands:
                raise BagError(f"bag {self.path} has no sensor_msgs Image or CompressedImage topic; "
                               f"{self.describe_topics()}")
            else:
                raise BagError(f"bag {self.path} has several image topics ({', '.join(cands)}); "
                               f"choose one with --image-topic")
        itype = topics[image_topic][0]
        if itype not in IMAGE_TYPES:
            raise BagError(f"image topic {image_topic} has unsupported message type {itype} "
                           f"(supported: {', '.join(IMAGE_TYPES)})")
        if label_topic is not None:
            if label_topic not in topics:
                raise BagError(f"label topic {label_topic} is not in bag {self.path}; "
                               f"{self.describe_topics()}")
            ltype = topics[label_topic][0]
            if ltype not in IMAGE_TYPES:
                raise BagError(f"label topic {label_topic} has unsupported message type {ltype} "
                               f"(need sensor_msgs/msg/Image mono8/mono16)")
            if label_topic == image_topic:
                raise BagError(f"image topic and label topic are both {image_topic}")
            self.label_type = ltype
        self.image_topic, self.label_topic, self.image_type = image_topic, label_topic, itype
        if topics[image_topic][1] == 0:
            raise BagError(f"bag {self.path} has no frames on {image_topic}")

    def image_count(self) -> int:
        return self.topics[self.image_topic][1]

    def image_connection(self):
        return next(c for c in self.reader.connections if c.topic == self.image_topic)

    # ---- streaming --------------------------------------------------------------------------
    def frames(self, mapper: LabelMapper | None = None, limit: int | None = None, every: int = 1,
               window_s: float = 2.0, max_pending: int = 256) -> Iterator[Frame]:
        """Image frames in recording order, ground truth matched by header stamp.

        A label is matched to the image with the same header stamp, whether it was recorded before
        or after the image, within ``window_s`` seconds of recording time (or ``max_pending``
        buffered images).  Frames without a match have ``gt=None``.  ``every``/``limit`` pick every
        K-th image and stop after N frames.  Counts end up in :attr:`stats`.
        """
        if self.image_topic is None:
            raise RuntimeError("select_topics() first")
        ts = typestore()
        every = max(1, int(every))
        conns = [c for c in self.reader.connections if c.topic in (self.image_topic, self.label_topic)]
        window_ns = int(window_s * 1e9)
        pending: collections.deque = collections.deque()   # Frame objects in order
        pending_by_stamp: dict[int, list[Frame]] = {}
        labels: dict[int, tuple[int, Any]] = {}             # stamp -> (bag time, message)
        stats = {"images": 0, "frames": 0, "frames_with_gt": 0, "labels": 0, "unmatched_labels": 0}
        self.stats = stats
        image_index = -1
        done = False

        def attach(frame: Frame, label_msg: Any) -> None:
            where = f"on {self.label_topic} for {frame.where}"
            gt = _decode_label(self.label_type, label_msg, where)
            if gt.shape != frame.size:
                raise BagError(f"ground truth {where} is {gt.shape[1]}x{gt.shape[0]} but the image is "
                               f"{frame.size[1]}x{frame.size[0]}")
            frame.gt = mapper(gt, where) if mapper is not None else gt   # no mapper: the bag's ids
            stats["frames_with_gt"] += 1

        def release(now_ns: int | None) -> Iterator[Frame]:
            while pending:
                head = pending[0]
                resolved = head.gt is not None or self.label_topic is None
                expired = (now_ns is None or now_ns - head.bag_time_ns > window_ns
                           or len(pending) > max_pending)
                if not (resolved or expired):
                    break
                pending.popleft()
                lst = pending_by_stamp.get(head.stamp_ns)
                if lst:
                    lst.remove(head)
                    if not lst:
                        del pending_by_stamp[head.stamp_ns]
                stats["frames"] += 1
                yield head
            if now_ns is not None:
                stale = [s for s, (t, _) in labels.items() if now_ns - t > window_ns]
                for s in stale:
                    del labels[s]
                    stats["unmatched_labels"] += 1

        try:
            for conn, bag_time, raw in self.reader.messages(connections=conns):
                if conn.topic == self.image_topic:
                    image_index += 1
                    stats["images"] += 1
                    if done or image_index % every:
                        continue
                    msg = ts.deserialize_cdr(raw, conn.msgtype)
                    frame = Frame(index=image_index, stamp_ns=stamp_to_ns(msg.header.stamp),
                                  bag_time_ns=int(bag_time), msgtype=conn.msgtype, msg=msg, raw=raw,
                                  topic=self.image_topic)
                    if self.label_topic is not None and frame.stamp_ns in labels:
                        attach(frame, labels.pop(frame.stamp_ns)[1])
                    pending.append(frame)
                    pending_by_stamp.setdefault(frame.stamp_ns, []).append(frame)
                    if limit is not None and len(pending) + stats["frames"] >= limit:
                        done = True
                else:
                    stats["labels"] += 1
                    msg = ts.deserialize_cdr(raw, conn.msgtype)
                    stamp = stamp_to_ns(msg.header.stamp)
                    waiting = [f for f in pending_by_stamp.get(stamp, []) if f.gt is None]
                    if waiting:
                        attach(waiting[0], msg)
                    elif not done:
                        labels[stamp] = (int(bag_time), msg)
                yield from release(int(bag_time))
                if done and not pending:
                    break
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated storage, bad CDR, ...
            raise BagError(f"cannot read messages from bag {self.path}: {_one_line(exc)}") from None
        yield from release(None)
        stats["unmatched_labels"] += len(labels)
        if stats["frames"] == 0:
            raise BagError(f"bag {self.path} has no frames on {self.image_topic}")
