"""``clipseg-bag-eval``: evaluate a segmentation model on ROS 2 bags, offline or through the real node.

Usage::

    clipseg-bag-eval offline  --bag BAG [--model M.clipseg] [--out DIR] [--label-map 11:255] ...
    clipseg-bag-eval live     --bag BAG [--model M.clipseg] [--out DIR] [--rate 1|N|max] ...
    clipseg-bag-eval make-bag SOURCE OUT_BAG [--labels DIR] [--rate-hz 10] [--compressed] ...

Bags are rosbag2 folders (mcap or sqlite3) read with the pure-Python ``rosbags`` package, so the
offline mode needs no ROS installation; live mode needs rclpy and starts ``seg_node``.  Problems
with the input (missing bag, unknown topic, wrong message type, ground truth of the wrong size,
label ids outside the mapping, no frames, ...) end with exit status 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..conventions import DEFAULT_MODEL
from ..segmenter import BACKENDS, PRECISIONS

PROG = "clipseg-bag-eval"
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


class _Usage(Exception):
    pass


def default_model() -> Path:
    """The model bundled with the package (``clipseg_ros/models/default.clipseg``, else the only one)."""
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    files = sorted(MODELS_DIR.glob("*.clipseg"))
    if not files:
        raise _Usage(f"no --model given and no bundled model in {MODELS_DIR}")
    return files[0]


def _rate(text: str):
    if str(text).strip().lower() == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rate must be a positive number or 'max', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--rate must be positive, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _wxh(text: str) -> tuple[int, int]:
    """``WxH`` (e.g. ``480x360``) as ``(height, width)``; sides of at least 32 pixels."""
    from ..segmenter import SegmenterConfigError, check_input_size

    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"--input-size must be WIDTHxHEIGHT, e.g. 480x360, got {text!r}")
    try:
        return check_input_size((int(m.group(2)), int(m.group(1))))
    except SegmenterConfigError as exc:
        raise argparse.ArgumentTypeError(f"--input-size {text}: {exc}") from None


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag_pos", nargs="?", metavar="BAG", help="the bag (same as --bag)")
    p.add_argument("--bag", help="rosbag2 folder (mcap or sqlite3) or a .mcap / .db3 file")
    p.add_argument("--model", help="model file (.clipseg); default: the bundled model")
    p.add_argument("--out", help="results folder (default: bag_eval/<bag>-<mode>)")
    p.add_argument("--image-topic", help="image topic (Image or CompressedImage); default: "
                   "/camera/image_raw[/compressed] or the bag's only image topic")
    p.add_argument("--label-topic", default="auto",
                   help="ground-truth topic (mono8/mono16 Image); 'auto' (default: /camera/labels when "
                        "present) or 'none'")
    p.add_argument("--label-map", action="append", metavar="SRC:DST[,..]|FILE",
                   help="map ground-truth ids of the bag to model ids, e.g. 11:255 (255 = ignore), or a "
                        "YAML/JSON file {src: dst}; repeatable; unmapped ids are kept")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="inference precision (default auto: what the node picks by default)")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads of the backend")
    p.add_argument("--input-size", type=_wxh, default=None, metavar="WxH",
                   help="network input size, e.g. 400x300 (frames are resized to it, labels come at the "
                        "frame's size); default: the model file's input_size")
    p.add_argument("--limit", type=_positive_int, default=None, help="evaluate at most N frames")
    p.add_argument("--every", type=_positive_int, default=1, help="use every K-th frame")
    p.add_argument("--samples", type=int, default=8, help="frames in the contact sheet (default 8)")
    p.add_argument("--output-bag", help="also write a bag with the input and labels/color/overlay")
    p.add_argument("--output-storage", choices=("mcap", "sqlite3"), help="default: the input's storage")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet", action="store_true", help="do not print the results table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Evaluate a segmentation model on ROS 2 bags (rosbag2, mcap or sqlite3): "
                               "offline in this process, or live through the real seg_node; make-bag "
                               "writes such bags from image folders.",
        epilog="Bad input (missing bag, unknown topic, wrong message type, ground truth of the wrong "
               "size, label ids outside the mapping, no frames) exits with status 2 and one line on "
               "stderr.")
    sub = parser.add_subparsers(dest="mode", required=True, metavar="{offline,live,make-bag}")

    off = sub.add_parser("offline", help="run the model on every frame in this process")
    _eval_args(off)
    off.add_argument("--warmup", type=int, default=1, help="untimed runs on the first frame (default 1)")
    off.add_argument("--output-prefix", default="/seg_node", help="topic prefix of outputs in --output-bag")

    live = sub.add_parser("live", help="replay the bag through the real seg_node and record what it "
                                       "publishes")
    _eval_args(live)
    live.add_argument("--rate", type=_rate, default=1.0,
                      help="replay speed: 1 = recorded rate (default), N = N times faster, 'max' = send "
                           "the next frame as soon as the previous frame's labels arrive")
    live.add_argument("--warmup", type=int, default=1,
                      help="frames sent (and waited for) before the replay, not counted (default 1)")
    live.add_argument("--loop", type=_positive_int, default=1,
                      help="replay the bag N times back to back, stamps and rate continuing "
                           "(a soak run: see latency_trend in results.json; default 1)")
    live.add_argument("--timeout", type=float, default=10.0,
                      help="seconds to wait for outstanding labels after the last frame "
                           "(and per frame with --rate max; default 10)")
    live.add_argument("--node-startup-timeout", type=float, default=120.0,
                      help="seconds to wait for the node to come up (default 120)")
    live.add_argument("--startup-timeout", dest="node_startup_timeout", type=float,
                      default=argparse.SUPPRESS, help=argparse.SUPPRESS)      # old spelling
    live.add_argument("--node-name", default="seg_node", help="node name (default seg_node)")
    live.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                      help="extra node parameter (repeatable)")
    live.add_argument("--node-executable", help="the seg_node executable (default: seg_node next to this "
                                                "Python, or on PATH)")
    live.add_argument("--node-exe", dest="node_executable", default=argparse.SUPPRESS,
                      help=argparse.SUPPRESS)                                   # old spelling
    live.add_argument("--node-log", help="node output log (default: <out>/node.log)")

    mk = sub.add_parser("make-bag", help="write a bag from an image folder with label PNGs")
    mk.add_argument("source", help="CamVid root (with {split}/, {split}annot/, {split}.txt), a CamVid "
                                   "split folder, or an images folder")
    mk.add_argument("out", help="the bag folder to create")
    mk.add_argument("--labels", help="label PNG folder (files matched to images by stem)")
    mk.add_argument("--split", default="val", help="CamVid split (default val)")
    mk.add_argument("--rate-hz", type=float, default=10.0, help="frame rate of the stamps (default 10)")
    mk.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of raw rgb8")
    mk.add_argument("--jpeg-quality", type=int, default=90)
    mk.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"))
    mk.add_argument("--compression", default="none", choices=("none", "zstd", "lz4"),
                    help="rosbag2 per-message compression (default none; zstd shrinks label images ~20x)")
    mk.add_argument("--image-topic", help="default /camera/image_raw (or /camera/image_raw/compressed)")
    mk.add_argument("--label-topic", default="/camera/labels")
    mk.add_argument("--frame-id", default="camera")
    mk.add_argument("--limit", type=_positive_int, default=None, help="at most N frames")
    mk.add_argument("--every", type=_positive_int, default=1, help="every K-th image")
    mk.add_argument("--resize", help="WIDTHxHEIGHT (labels resized with nearest neighbour)")
    mk.add_argument("--label-map", action="append", metavar="SRC:DST[,..]|FILE",
                    help="rewrite label ids while writing (CamVid layout default: 11:255, void -> ignore)")
    mk.add_argument("--start-time", type=float, default=None,
                    help="stamp of the first frame, seconds since the epoch (default: now)")
    mk.add_argument("--no-progress", action="store_true")
    return parser


def _finish_eval_args(args) -> None:
    if args.bag_pos and args.bag and args.bag_pos != args.bag:
        raise _Usage(f"two bags given ({args.bag_pos} and --bag {args.bag})")
    args.bag = args.bag or args.bag_pos
    del args.bag_pos
    if not args.bag:
        raise _Usage("no bag given (use --bag BAG)")
    args.model = str(args.model) if args.model else str(default_model())
    if not args.out:
        args.out = str(Path("bag_eval") / f"{Path(args.bag).name or 'bag'}-{args.mode}")
    if args.samples < 0:
        raise _Usage("--samples must be >= 0")


def eval_config(args: argparse.Namespace):
    """The typed config of an offline / live run, out of the parsed (and finished) arguments."""
    from dataclasses import fields

    from .config import LiveConfig, OfflineConfig

    cls = OfflineConfig if args.mode == "offline" else LiveConfig
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "argv"}
    return cls(**values, argv=args._argv)


def _error(message: str, code: int = 2) -> int:
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = [PROG] + argv

    from ..image_codec import ImageDecodeError
    from ..model_file import ModelFileError
    from .reader import BagError

    expected: tuple = (BagError, ModelFileError, ImageDecodeError, _Usage)
    try:
        from ..segmenter import SegmenterConfigError

        expected += (SegmenterConfigError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        if args.mode == "make-bag":
            from .writer import make_bag, parse_resize

            summary = make_bag(
                args.source, args.out, labels=args.labels, split=args.split, rate_hz=args.rate_hz,
                compressed=args.compressed, jpeg_quality=args.jpeg_quality, storage=args.storage,
                image_topic=args.image_topic, label_topic=args.label_topic, frame_id=args.frame_id,
                limit=args.limit, every=args.every, resize=parse_resize(args.resize),
                label_map=args.label_map, compression=args.compression,
                start_ns=int(args.start_time * 1e9) if args.start_time is not None else None,
                progress=not args.no_progress)
            print(f"wrote {summary['frames']} frames ({summary['layout']}, "
                  f"{'JPEG' if summary['compressed'] else 'rgb8'} {summary['size'][0]}x{summary['size'][1]}, "
                  f"{summary['rate_hz']:g} Hz) to {summary['bag']} [{summary['storage']}]: "
                  f"{summary['image_topic']}"
                  + (f", {summary['label_topic']}" if summary["label_topic"] else ""))
            return 0
        _finish_eval_args(args)
        config = eval_config(args)
        if args.mode == "offline":
            from .offline import run_offline

            run_offline(config)
        else:
            from .live import run_live

            run_live(config)
        return 0
    except expected as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except OSError as exc:
        return _error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
