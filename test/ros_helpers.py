"""Shared helpers for tests that talk to real ROS 2 nodes (rclpy, real messages, real DDS).

DDS stays on this machine: conftest.py sets ``FASTDDS_BUILTIN_TRANSPORTS`` (shared memory only),
``ROS_DOMAIN_ID`` and ``ROS_LOG_DIR`` before anything here creates a context, and subprocesses
started with :func:`start_process` inherit them (``os.environ``).

* :func:`known_model` – a tiny model file whose every pixel gets a known class (cached per process).
* :class:`RosHarness` – a fresh ``Context``, a tester node and a ``MultiThreadedExecutor`` spinning
  in a background thread; publishers, :class:`Collector` subscriptions, waiting helpers.
* :func:`image_msg`, :func:`compressed_msg`, :func:`raw_image_msg` – input messages from numpy;
  :func:`png_bomb` – a small PNG that declares a huge image.
* :func:`start_process` / :func:`stop_process` – subprocesses in their own process group, killed
  reliably.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

from clipseg_ros.processes import kill_group, seg_node_executable
from clipseg_ros.spinning import BackgroundSpinner

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------

_MODEL_DIR: Path | None = None


def _model_dir() -> Path:
    global _MODEL_DIR
    if _MODEL_DIR is None:
        _MODEL_DIR = Path(tempfile.mkdtemp(prefix="clipseg_test_models_"))
        atexit.register(shutil.rmtree, _MODEL_DIR, True)
    return _MODEL_DIR


def confidence_of(label: int, num_classes: int, logit: float = 4.0) -> float:
    """The confidence (max softmax) of a :func:`known_model` pixel."""
    return float(np.exp(logit) / (np.exp(logit) + (num_classes - 1)))


@functools.lru_cache(maxsize=None)
def known_model(label: int = 2, num_classes: int = 4, input_size: tuple = (64, 96),
                arch: str = "mobilenetv2", onnx: bool = True, logit: float = 4.0) -> str:
    """Export a model file whose output is ``label`` at every pixel; returns its path.

    The head's final 1x1 conv has zero weights and a one-hot bias (``logit`` for ``label``), so
    the logits are the same everywhere and independent of the image.  The network still runs in
    full (a bigger ``input_size`` makes it slower, which the burst tests use).  Files are cached
    for the test process in a temp folder removed at exit.
    """
    import torch

    from clipseg_ros.model_file import save_model_file
    from clipseg_ros.networks import create_model

    torch.manual_seed(0)
    net = create_model(arch, num_classes).eval()
    bias = torch.zeros(num_classes)
    bias[label] = logit
    with torch.no_grad():
        net.head.conv_out.weight.zero_()
        net.head.conv_out.bias.copy_(bias)
    h, w = input_size
    path = _model_dir() / f"known_{arch}_{label}of{num_classes}_{h}x{w}{'' if onnx else '_noonnx'}.clipseg"
    save_model_file(path, net, [f"class{i}" for i in range(num_classes)], input_size=[h, w], onnx=onnx)
    return str(path)


def inconsistent_model(dest: Path, label: int = 10, num_classes: int = 11) -> Path:
    """A model file whose network outputs ``num_classes`` (every pixel ``label``) while its
    meta.json consistently describes one class fewer: class names, palette and arch.num_classes.
    Every member's sha256 still matches (meta.json only lists the other members)."""
    import json
    import zipfile

    from clipseg_ros.model_file import atomic_write_zip

    with zipfile.ZipFile(known_model(label, num_classes, (64, 96))) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    meta = json.loads(members["meta.json"])
    meta["class_names"] = meta["class_names"][: num_classes - 1]
    meta["palette"] = meta["palette"][: num_classes - 1]
    meta["arch"]["num_classes"] = num_classes - 1
    members["meta.json"] = json.dumps(meta, indent=2).encode()
    atomic_write_zip(dest, members)
    return Path(dest)


def truncated_copy(model_path: str, dest: Path, keep: float = 0.5) -> Path:
    """A copy of ``model_path`` cut to ``keep`` of its size."""
    data = Path(model_path).read_bytes()
    dest = Path(dest)
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def _rewrite_members(src, dest: Path, edit) -> Path:
    """A copy of the model file ``src`` whose metadata and members ``edit(meta, members)`` changed
    in place; every member's sha256 is recomputed and the copy is loaded once (``ModelFile``)."""
    import hashlib
    import json
    import zipfile

    from clipseg_ros.model_file import META_NAME, ModelFile, atomic_write_zip

    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n != META_NAME}
        meta = json.loads(zf.read(META_NAME))
    edit(meta, members)
    meta["members"] = {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}
    atomic_write_zip(dest, {META_NAME: json.dumps(meta, indent=2).encode(), **members})
    ModelFile(dest)
    return Path(dest)


def without_int8(src, dest: Path) -> Path:
    """``src`` without its int8 member (and its record), whatever the bundled file carries."""
    from clipseg_ros.model_file import INT8_NAME

    def edit(meta, members):
        members.pop(INT8_NAME, None)
        meta.pop("int8", None)

    return _rewrite_members(src, dest, edit)


def fixed_batch_copy(src, dest: Path) -> Path:
    """``src`` with the ONNX graphs' batch dimension fixed at 1, as files exported before batching
    came have it (the same weights and graph otherwise)."""
    import onnx

    from clipseg_ros.model_file import INT8_NAME

    def edit(meta, members):
        for name in ("model.onnx", INT8_NAME):
            if name in members:
                graph = onnx.load_from_string(members[name])
                dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
                dim.Clear()
                dim.dim_value = 1
                members[name] = graph.SerializeToString()

    return _rewrite_members(src, dest, edit)


# ------------------------------------------------------------------------------------------------
# messages
# ------------------------------------------------------------------------------------------------

def stamp_now():
    """A ``builtin_interfaces/Time`` for now (system clock, as the node's ROS clock)."""
    from builtin_interfaces.msg import Time

    ns = time.time_ns()
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(frame_id: str = "camera", stamp=None):
    from std_msgs.msg import Header

    return Header(stamp=stamp if stamp is not None else stamp_now(), frame_id=frame_id)


_FROM_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGB2RGBA,
    "bgra8": cv2.COLOR_RGB2BGRA,
    "mono8": cv2.COLOR_RGB2GRAY,
}


def rgb_as(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """``rgb`` (HxWx3 uint8) laid out for ``encoding`` (rgb8, bgr8, rgba8, bgra8, mono8)."""
    code = _FROM_RGB[encoding]
    return np.ascontiguousarray(rgb) if code is None else cv2.cvtColor(rgb, code)


def expected_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """What the node sees after decoding ``rgb_as(rgb, encoding)`` (mono8 loses the color)."""
    if encoding == "mono8":
        return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return rgb


def image_msg(rgb: np.ndarray, encoding: str = "rgb8", header=None):
    """A ``sensor_msgs/Image`` holding ``rgb`` converted to ``encoding``."""
    from clipseg_ros.image_codec import array_to_image

    return array_to_image(rgb_as(rgb, encoding), encoding, header=header if header is not None else make_header())


def compressed_msg(rgb: np.ndarray, fmt: str = "jpeg", header=None, quality: int = 95):
    """A ``sensor_msgs/CompressedImage`` of ``rgb`` as jpeg or png."""
    from sensor_msgs.msg import CompressedImage

    from clipseg_ros.image_codec import encode_compressed

    format_str, payload = encode_compressed(rgb, fmt, quality)
    msg = CompressedImage(header=header if header is not None else make_header(), format=format_str)
    msg.data = payload
    return msg


def raw_image_msg(height: int, width: int, encoding: str, step: int, data: bytes, header=None):
    """A ``sensor_msgs/Image`` with arbitrary (possibly inconsistent) fields, for bad-input tests."""
    from sensor_msgs.msg import Image

    msg = Image(header=header if header is not None else make_header(), height=height, width=width,
                encoding=encoding, is_bigendian=0, step=step)
    msg.data = bytes(data)
    return msg


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


@functools.lru_cache(maxsize=4)
def png_bomb(width: int, height: int, color_type: int = 0) -> bytes:
    """A real PNG declaring ``width``x``height`` 8-bit pixels, all zero: a few hundred KB that
    decode to width*height*channels bytes."""
    channels = {0: 1, 2: 3}[color_type]
    comp = zlib.compressobj(9)
    row = bytes(1 + width * channels)            # filter byte 0 + zero pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def pattern_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A deterministic colorful RGB test image."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img[: height // 2, : width // 2] = (250, 20, 30)
    return img


# ------------------------------------------------------------------------------------------------
# waiting
# ------------------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Collector:
    """Messages of one subscription with their receive time (``time.time_ns()``)."""

    def __init__(self, topic: str):
        self.topic = topic
        self.messages: list = []
        self.received_ns: list[int] = []
        self._cond = threading.Condition()
        self.sub = None

    def index(self, msg) -> int:
        with self._cond:
            return next(i for i, m in enumerate(self.messages) if m is msg)

    def __call__(self, msg) -> None:
        now = time.time_ns()
        with self._cond:
            self.messages.append(msg)
            self.received_ns.append(now)
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()
            self.received_ns.clear()

    def wait(self, count: int = 1, timeout: float = 10.0) -> list:
        """Wait until at least ``count`` messages arrived; returns a copy of the list."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.topic}: got {len(self.messages)} of {count} "
                                         f"messages within {timeout:g} s")
                self._cond.wait(remaining)
            return list(self.messages)

    def wait_until(self, predicate, timeout: float = 10.0, what: str = "a matching message",
                   start: int = 0):
        """Wait for a message with ``predicate(msg)`` true (looking from index ``start``); returns it."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for msg in self.messages[seen:]:
                    if predicate(msg):
                        return msg
                seen = len(self.messages)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self.topic}: no {what} within {timeout:g} s "
                                         f"({seen} messages seen)")
                self._cond.wait(remaining)

    def wait_stamp(self, stamp, timeout: float = 10.0):
        """Wait for the message whose header stamp equals ``stamp``."""
        want = stamp_ns(stamp)
        return self.wait_until(lambda m: stamp_ns(m.header.stamp) == want, timeout,
                               what=f"message with stamp {want}")


def qos(reliable: bool = True, depth: int = 10):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


class RosHarness:
    """A private rclpy ``Context`` with a tester node, spun by a ``MultiThreadedExecutor`` thread.

    >>> ros = RosHarness(args=[...])      # args: optional --ros-args for the context
    >>> seg = ros.add(SegNode(context=ros.context, parameter_overrides=[...]))
    >>> pub = ros.publisher(Image, "/t1/image"); col = ros.collect(Image, "/t1/seg_node/labels")
    >>> ros.close()
    """

    def __init__(self, name: str = "tester", args: list[str] | None = None, num_threads: int = 3):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        for var in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_DOMAIN_ID", "ROS_LOG_DIR"):
            assert os.environ.get(var), f"{var} must be set before a ROS context starts (conftest.py)"
        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(args=args, context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"{name}_{os.getpid()}", context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=num_threads, context=self.context)
        self.executor.add_node(self.node)
        self.nodes = [self.node]
        # spin_once in a loop that survives rclpy's destroy-while-spinning races (an exception
        # ending executor.spin() would silently stop every later delivery); see spinning.py
        self.spinner = BackgroundSpinner(self.executor, self.context, name="ros_harness_spin").start()

    def add(self, node):
        """Spin ``node`` too (it must use ``self.context``); returns it."""
        self.executor.add_node(node)
        self.nodes.append(node)
        return node

    def remove(self, node) -> None:
        """Stop spinning ``node`` and destroy it."""
        if node in self.nodes:
            self.nodes.remove(node)
            self.executor.remove_node(node)
        node.destroy_node()

    def publisher(self, msg_type, topic: str, reliable: bool = True, depth: int = 10):
        return self.node.create_publisher(msg_type, topic, qos(reliable, depth))

    def collect(self, msg_type, topic: str, reliable: bool = False, depth: int = 100) -> Collector:
        """Subscribe ``topic`` into a :class:`Collector` (best effort by default: matches any
        publisher)."""
        col = Collector(topic)
        col.sub = self.node.create_subscription(msg_type, topic, col, qos(reliable, depth))
        return col

    def unsubscribe(self, col: Collector) -> None:
        self.node.destroy_subscription(col.sub)

    def wait_matched(self, pub, count: int = 1, timeout: float = 10.0) -> None:
        """Wait until ``pub`` (ours) sees ``count`` subscriptions."""
        wait_for(lambda: pub.get_subscription_count() >= count, timeout,
                 what=f"{count} subscription(s) on {pub.topic_name}")

    def wait_publishers(self, topic: str, count: int = 1, timeout: float = 10.0) -> None:
        wait_for(lambda: self.node.count_publishers(topic) >= count, timeout,
                 what=f"{count} publisher(s) of {topic}")

    def close(self) -> None:
        for node in list(self.nodes[1:]):
            try:
                self.remove(node)
            except Exception:  # noqa: BLE001
                pass
        self.spinner.stop()
        if self.spinner.error_count:
            import warnings

            warnings.warn(f"RosHarness: the spin loop caught and survived {self.spinner.error_count} "
                          f"exception(s), last: {self.spinner.errors[-3:]}", stacklevel=2)
        self.executor.shutdown(timeout_sec=5.0)
        try:
            self.node.destroy_node()
        except Exception:  # noqa: BLE001
            pass
        self.context.try_shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------------
# subprocesses
# ------------------------------------------------------------------------------------------------

def labels_for_one_frame(ros: "RosHarness", node, rgb: np.ndarray, timeout: float = 60.0) -> np.ndarray:
    """Publish ``rgb`` on ``/image`` to ``node`` (a SegNode added to ``ros``) and return the label
    image it publishes on ``/<node name>/labels``, as an array."""
    from sensor_msgs.msg import Image

    from clipseg_ros import image_codec

    pub = ros.publisher(Image, "/image")
    col = ros.collect(Image, f"/{node.get_name()}/labels", reliable=True)
    ros.wait_matched(pub)
    wait_for(lambda: node._sub.get_publisher_count() >= 1 and col.sub.get_publisher_count() >= 1, 20.0,
             what="matched")
    pub.publish(image_msg(rgb, header=make_header("cam")))
    msg, = col.wait(1, timeout)
    return image_codec.image_to_array(msg)


def seg_node_command() -> list[str]:
    """The installed ``seg_node`` console script (next to this Python, on PATH, or ``python -c``)."""
    return seg_node_executable()


_PROCS: list[subprocess.Popen] = []


def start_process(cmd: list[str], log_path: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (os.environ inherited), output to ``log_path``
    (or a pipe).  Every process started here is killed at interpreter exit at the latest."""
    out = open(log_path, "wb") if log_path is not None else subprocess.PIPE
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env if env is not None else os.environ.copy(), start_new_session=True)
    finally:
        if log_path is not None:
            out.close()
    proc.log_path = log_path
    _PROCS.append(proc)
    return proc


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
    """Send ``sig`` to the process (only; not its group), wait; SIGKILL the group if it hangs.
    Returns the exit code (negative: killed by a signal)."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    kill_process(proc)
    return proc.returncode


def kill_process(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (started by :func:`start_process`) and reap it
    (:func:`clipseg_ros.processes.kill_group`)."""
    kill_group(proc)
    if proc in _PROCS:
        _PROCS.remove(proc)


def process_output(proc: subprocess.Popen) -> str:
    """Everything the (finished) process wrote to its log / pipe."""
    log = getattr(proc, "log_path", None)
    if log is not None:
        return Path(log).read_text(errors="replace")
    return proc.stdout.read().decode(errors="replace") if proc.stdout else ""


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_PROCS):
        kill_process(proc)
