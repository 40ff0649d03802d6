"""Writing rosbag2 bags with ``rosbags``: ``make-bag`` (an image folder -> a bag) and output bags.

``make-bag`` takes either the CamVid SegNet layout (``ROOT/{split}``, ``ROOT/{split}annot``,
``ROOT/{split}.txt``) or any images folder plus an optional labels folder (pairs matched by file
stem), and writes ``sensor_msgs/Image`` (rgb8) or ``sensor_msgs/CompressedImage`` (JPEG) frames
plus mono8/mono16 label images with identical header stamps, at a fixed rate.

:class:`OutputBag` records the segmentation outputs (labels, color, overlay) beside a copy of the
input images, so a run can be inspected in RViz / Foxglove.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .reader import BagError, COMPRESSED_TYPE, IMAGE_TYPE, parse_label_map, typestore

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".webp")
STORAGES = ("mcap", "sqlite3")
#: SegNet CamVid "Unlabelled" id: written as 255 (ignore) unless --label-map says otherwise.
CAMVID_VOID = 11

__all__ = ["OutputBag", "Pair", "discover_pairs", "make_bag", "parse_resize", "STORAGES"]


@dataclass
class Pair:
    image: Path
    label: Path | None


def parse_resize(text: str | None) -> tuple[int, int] | None:
    """``"WxH"`` -> (W, H)."""
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BagError(f"--resize {text!r} is not WIDTHxHEIGHT (e.g. 480x360)") from None
    if not (1 <= w <= 16384 and 1 <= h <= 16384):
        raise BagError(f"--resize {text!r}: width and height must be 1..16384")
    return w, h


def _list_images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTS}


def discover_pairs(source: Path, labels: Path | None = None, split: str = "val") -> tuple[list[Pair], str]:
    """(pairs, layout description) for a CamVid root, a CamVid split folder or an images folder."""
    source = Path(source)
    if not source.exists():
        raise BagError(f"image source {source} does not exist")
    if source.is_dir() and labels is None:
        # CamVid SegNet layout: ROOT/{split}, ROOT/{split}annot, ROOT/{split}.txt
        root, sp = source, split
        if not (root / f"{sp}.txt").is_file() and (source.parent / f"{source.name}.txt").is_file():
            root, sp = source.parent, source.name          # given ROOT/val directly
        listing = root / f"{sp}.txt"
        if listing.is_file() and (root / sp).is_dir():
            pairs = []
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                img = root / sp / Path(parts[0]).name
                lab = root / f"{sp}annot" / Path(parts[1]).name if len(parts) > 1 else None
                if not img.is_file():
                    raise BagError(f"{listing}:{n}: image {img} does not exist")
                if lab is not None and not lab.is_file():
                    raise BagError(f"{listing}:{n}: label {lab} does not exist")
                pairs.append(Pair(img, lab))
            return pairs, f"camvid:{sp}"
        if (root / sp).is_dir() and (root / f"{sp}annot").is_dir():
            labels = root / f"{sp}annot"
            source = root / sp
    if not source.is_dir():
        raise BagError(f"image source {source} is not a folder")
    images = _list_images(source)
    if not images:
        raise BagError(f"image folder {source} has no images ({', '.join(IMAGE_EXTS)})")
    if labels is None:
        return [Pair(p, None) for p in images.values()], "images"
    labels = Path(labels)
    if not labels.is_dir():
        raise BagError(f"label folder {labels} does not exist")
    label_files = _list_images(labels)
    pairs = [Pair(p, label_files[s]) for s, p in images.items() if s in label_files]
    if not pairs:
        raise BagError(f"no image in {source} has a label with the same file stem in {labels}")
    return pairs, "folders"


def _read_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BagError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_label(path: Path) -> np.ndarray:
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise BagError(f"cannot read label image {path}")
    if lab.ndim == 3:
        gray = lab.shape[2] >= 3 and all(np.array_equal(lab[:, :, 0], lab[:, :, c]) for c in (1, 2))
        if gray:
            lab = lab[:, :, 0]
        else:
            raise BagError(f"label image {path} is a color image; labels must be single-channel class ids")
    if lab.dtype not in (np.uint8, np.uint16):
        raise BagError(f"label image {path} has dtype {lab.dtype}; need 8- or 16-bit class ids")
    return np.ascontiguousarray(lab)


def _header(ts, stamp_ns: int, frame_id: str):
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    return Header(stamp=Time(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)),
                  frame_id=frame_id)


def image_msg(ts, array: np.ndarray, stamp_ns: int, frame_id: str, encoding: str | None = None):
    """A rosbags ``sensor_msgs/msg/Image`` from an array (rgb8 / mono8 / mono16)."""
    from ..image_codec import fill_image

    Image = ts.types[IMAGE_TYPE]
    msg = Image(header=_header(ts, stamp_ns, frame_id), height=0, width=0, encoding="", is_bigendian=0,
                step=0, data=np.zeros(0, np.uint8))
    fill_image(msg, array, encoding)
    return msg


def compressed_msg(ts, rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 90):
    from ..image_codec import encode_compressed

    fmt, payload = encode_compressed(rgb, "jpeg", quality)
    Compressed = ts.types[COMPRESSED_TYPE]
    return Compressed(header=_header(ts, stamp_ns, frame_id), format=fmt,
                      data=np.frombuffer(payload, np.uint8))


COMPRESSIONS = ("none", "zstd", "lz4")


def _open_writer(path: Path, storage: str, compression: str = "none"):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode

    if storage not in STORAGES:
        raise BagError(f"storage {storage!r} is not one of {', '.join(STORAGES)}")
    if compression not in COMPRESSIONS:
        raise BagError(f"compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    if path.exists():
        raise BagError(f"output bag {path} exists already; choose a new path or delete it")
    path.parent.mkdir(parents=True, exist_ok=True)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        writer = Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        if compression != "none":
            # rosbag2 per-message compression: every reader of rosbag2 (ros2 bag, rosbags) undoes it.
            writer.set_compression(CompressionMode.MESSAGE, getattr(CompressionFormat, compression.upper()))
        writer.open()
    except Exception as exc:  # noqa: BLE001
        raise BagError(f"cannot create bag {path}: {exc}") from None
    return writer


def make_bag(source, out, *, labels=None, split: str = "val", rate_hz: float = 10.0,
             compressed: bool = False, jpeg_quality: int = 90, storage: str = "mcap",
             image_topic: str | None = None, label_topic: str = "/camera/labels",
             frame_id: str = "camera", limit: int | None = None, every: int = 1,
             resize: tuple[int, int] | None = None, label_map=None, start_ns: int | None = None,
             compression: str = "none", progress: bool = True) -> dict:
    """Write a bag from an image folder (see module docstring); returns a summary dict."""
    if not rate_hz or rate_hz <= 0:
        raise BagError(f"--rate-hz must be positive, got {rate_hz}")
    if every < 1:
        raise BagError(f"--every must be >= 1, got {every}")
    if limit is not None and limit < 1:
        raise BagError(f"--limit must be >= 1, got {limit}")
    if not 0 <= jpeg_quality <= 100:
        raise BagError(f"--jpeg-quality must be in 0..100, got {jpeg_quality}")
    pairs, layout = discover_pairs(Path(source), Path(labels) if labels else None, split)
    pairs = pairs[::every]
    if limit is not None:
        pairs = pairs[:limit]
    if not pairs:
        raise BagError(f"no frames to write from {source}")
    mapping = parse_label_map(label_map) if label_map else {}
    if layout.startswith("camvid") and label_map is None:
        mapping = {CAMVID_VOID: 255}
    lut = None
    if mapping:
        lut = np.arange(65536, dtype=np.int64)
        for k, v in mapping.items():
            lut[k] = v
    image_topic = image_topic or ("/camera/image_raw/compressed" if compressed else "/camera/image_raw")
    has_labels = any(p.label is not None for p in pairs)
    ts = typestore()
    out = Path(out)
    writer = _open_writer(out, storage, compression)
    period_ns = int(round(1e9 / rate_hz))
    start_ns = int(time.time() * 1e9) if start_ns is None else int(start_ns)
    written = 0
    ok = False
    try:
        iconn = writer.add_connection(image_topic, COMPRESSED_TYPE if compressed else IMAGE_TYPE,
                                      typestore=ts)
        lconn = writer.add_connection(label_topic, IMAGE_TYPE, typestore=ts) if has_labels else None
        writer.set_custom_data("clipseg.source", f"{layout} {Path(source).name}")   # no local paths
        if mapping:
            writer.set_custom_data("clipseg.label_map",
                                   ",".join(f"{k}:{v}" for k, v in sorted(mapping.items())))
        it = pairs
        if progress:
            from tqdm import tqdm

            it = tqdm(pairs, desc="make-bag", unit="frame", dynamic_ncols=True, leave=False)
        size = None
        for i, pair in enumerate(it):
            rgb = _read_image(pair.image)
            lab = _read_label(pair.label) if pair.label is not None else None
            if lab is not None and lab.shape != rgb.shape[:2]:
                raise BagError(f"label {pair.label} is {lab.shape[1]}x{lab.shape[0]} but image {pair.image} "
                               f"is {rgb.shape[1]}x{rgb.shape[0]}")
            if resize is not None:
                rgb = cv2.resize(rgb, resize, interpolation=cv2.INTER_AREA)
                if lab is not None:
                    lab = cv2.resize(lab, resize, interpolation=cv2.INTER_NEAREST)
            size = size or (rgb.shape[1], rgb.shape[0])
            if lut is not None and lab is not None:
                mapped = lut[lab]
                lab = mapped.astype(np.uint8 if mapped.max() <= 255 and lab.dtype == np.uint8 else np.uint16)
            stamp = start_ns + i * period_ns
            if compressed:
                msg = compressed_msg(ts, rgb, stamp, frame_id, jpeg_quality)
            else:
                msg = image_msg(ts, rgb, stamp, frame_id, "rgb8")
            writer.write(iconn, stamp, ts.serialize_cdr(msg, msg.__msgtype__))
            if lab is not None and lconn is not None:
                lmsg = image_msg(ts, lab, stamp, frame_id, "mono8" if lab.dtype == np.uint8 else "mono16")
                writer.write(lconn, stamp, ts.serialize_cdr(lmsg, IMAGE_TYPE))
            written += 1
        ok = True
    finally:
        if ok:
            writer.close()
        else:
            try:
                writer.abort()
            finally:
                shutil.rmtree(out, ignore_errors=True)
    return {"bag": str(out), "frames": written, "layout": layout, "storage": storage,
            "image_topic": image_topic, "label_topic": label_topic if has_labels else None,
            "compressed": compressed, "compression": compression, "rate_hz": rate_hz,
            "size": list(size) if size else None,
            "label_map": {str(k): v for k, v in sorted(mapping.items())}}


class OutputBag:
    """Records a copy of the input frames plus labels / color / overlay images.

    Topics: the input image topic (as recorded), ``{prefix}/labels`` (mono8), ``{prefix}/color`` and
    ``{prefix}/overlay`` (rgb8), all with the input frame's header stamp and recording time.
    """

    def __init__(self, path, storage: str, input_topic: str, input_connection, prefix: str,
                 palette: np.ndarray, alpha: float = 0.5):
        from ..visualize import Colorizer

        self.path = Path(path)
        self.ts = typestore()
        self.writer = _open_writer(self.path, storage)
        self.prefix = prefix.rstrip("/")
        self.colorizer = Colorizer(np.asarray(palette, np.uint8))
        self.alpha = alpha
        try:
            c = input_connection
            self.input_conn = self.writer.add_connection(
                input_topic, c.msgtype, typestore=self.ts)
            self.conns = {name: self.writer.add_connection(f"{self.prefix}/{name}", IMAGE_TYPE,
                                                           typestore=self.ts)
                          for name in ("labels", "color", "overlay")}
        except Exception:
            self.abort()
            raise
        self.count = 0

    @property
    def topics(self) -> list[str]:
        return [self.input_conn.topic] + [c.topic for c in self.conns.values()]

    def write_input(self, frame) -> None:
        """The input message as recorded (same bytes, same recording time)."""
        self.writer.write(self.input_conn, frame.bag_time_ns, frame.raw)
        self.count += 1

    def write_image(self, name: str, frame, array: np.ndarray, encoding: str) -> None:
        """``{prefix}/{name}`` for ``frame``: header stamp and recording time of the input frame."""
        frame_id = getattr(frame.msg.header, "frame_id", "")
        msg = image_msg(self.ts, np.ascontiguousarray(array), frame.stamp_ns, frame_id, encoding)
        self.writer.write(self.conns[name], frame.bag_time_ns, self.ts.serialize_cdr(msg, IMAGE_TYPE))

    def write(self, frame, labels: np.ndarray) -> None:
        """Input, labels, and the color mask / overlay computed here (offline mode)."""
        from ..visualize import overlay

        color = self.colorizer.colorize(labels)
        self.write_input(frame)
        self.write_image("labels", frame, labels, "mono8")
        self.write_image("color", frame, color, "rgb8")
        self.write_image("overlay", frame, overlay(frame.rgb, color, self.alpha, labels=labels), "rgb8")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            try:
                self.writer.abort()
            except Exception:  # noqa: BLE001
                pass
            self.writer = None
            shutil.rmtree(self.path, ignore_errors=True)
