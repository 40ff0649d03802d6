"""The ROS side of ``clipseg-bag-eval live`` (this process): a publisher of the bag's frames,
subscriptions to the node's outputs and ``/diagnostics``, an executor spinning in a thread.

rclpy is imported when :class:`RosSide` is created, never at import time.
"""
from __future__ import annotations

import array
import os
import queue
import threading
import time

import numpy as np

from ..spinning import BackgroundSpinner

__all__ = ["RosSide", "diag_counts", "stamp_of"]


def diag_counts(values: dict) -> dict:
    """processed / dropped / rejected counters out of a diagnostics status's key-values."""
    out = {}
    for key, value in values.items():
        k = key.lower()
        for what in ("processed", "dropped", "rejected", "received"):
            if what in k and what not in out:
                try:
                    out[what] = int(float(value))
                except ValueError:
                    pass
    return out


class RosSide:
    def __init__(self, input_topic: str, compressed: bool, node_name: str, record_outputs: bool):
        import rclpy
        from rclpy.context import Context
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        self.QoSProfile, self.Rel, self.Hist = QoSProfile, ReliabilityPolicy, HistoryPolicy
        self.context = Context()
        self.node = self.executor = self.spinner = None
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            self._setup(input_topic, compressed, node_name, record_outputs)
        except BaseException:
            self.close()
            raise

    def _setup(self, input_topic: str, compressed: bool, node_name: str, record_outputs: bool):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.node = self.rclpy.create_node(f"clipseg_bag_eval_{os.getpid()}", context=self.context)

        self.Image, self.CompressedImage = Image, CompressedImage
        self.compressed = compressed
        self.node_name = node_name
        self.ns = "/" + node_name.strip("/")
        qos_in = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub = self.node.create_publisher(CompressedImage if compressed else Image, input_topic, qos_in)
        self.queue: queue.Queue = queue.Queue()
        self.diag: dict = {}            # status name -> (recv ns, level, message, values)
        self.diag_count = 0
        self.diag_lock = threading.Lock()
        self.subs = {}
        self.record_outputs = record_outputs
        diag_qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.BEST_EFFORT,
                              history=HistoryPolicy.KEEP_LAST)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, diag_qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        # one exception in a callback must not silently stop every later delivery
        self.spinner = BackgroundSpinner(self.executor, self.context, name="clipseg_bag_eval_spin").start()

    def _on_diag(self, msg):
        now = time.time_ns()
        with self.diag_lock:
            for st in msg.status:
                name = st.name
                if self.node_name not in name and self.ns.strip("/") not in name:
                    continue
                level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
                self.diag[name] = (now, level, st.message, {kv.key: kv.value for kv in st.values})
            self.diag_count += 1

    def diag_snapshot(self) -> dict:
        with self.diag_lock:
            return {name: {"received_ns": t, "level": lvl, "message": m, "values": dict(v)}
                    for name, (t, lvl, m, v) in self.diag.items()}

    def diag_counts(self) -> dict:
        counts: dict = {}
        for st in self.diag_snapshot().values():
            for k, v in diag_counts(st["values"]).items():
                counts[k] = counts.get(k, 0) + v
        return counts

    def labels_publisher_qos(self):
        infos = self.node.get_publishers_info_by_topic(f"{self.ns}/labels")
        return infos[0].qos_profile if infos else None

    def subscribe_outputs(self, offered) -> None:
        rel = offered.reliability if offered is not None else self.Rel.BEST_EFFORT
        if rel not in (self.Rel.RELIABLE, self.Rel.BEST_EFFORT):
            rel = self.Rel.BEST_EFFORT
        qos = self.QoSProfile(depth=100, reliability=rel, history=self.Hist.KEEP_LAST)
        names = ["labels"] + (["color", "overlay"] if self.record_outputs else [])
        for name in names:
            if name in self.subs:
                continue
            self.subs[name] = self.node.create_subscription(
                self.Image, f"{self.ns}/{name}",
                lambda m, n=name: self.queue.put((n, time.time_ns(), m)), qos)

    def make_message(self, frame):
        """An rclpy message with the frame's payload (stamp set at publish)."""
        src = frame.msg
        if self.compressed:
            msg = self.CompressedImage()
            msg.format = src.format
        else:
            msg = self.Image()
            msg.height, msg.width, msg.encoding = int(src.height), int(src.width), src.encoding
            msg.is_bigendian, msg.step = int(src.is_bigendian), int(src.step)
        buf = array.array("B")
        buf.frombytes(np.ascontiguousarray(src.data).view(np.uint8))
        msg.data = buf
        msg.header.frame_id = src.header.frame_id
        return msg

    def publish(self, msg, stamp_ns: int) -> None:
        msg.header.stamp.sec = stamp_ns // 1_000_000_000
        msg.header.stamp.nanosec = stamp_ns % 1_000_000_000
        self.pub.publish(msg)

    def close(self) -> None:
        if self.spinner is not None:
            self.spinner.stop(timeout=2.0)
        if self.executor is not None:
            try:
                self.executor.shutdown(timeout_sec=1.0)
            except Exception:  # noqa: BLE001
                pass
        if self.node is not None:
            try:
                self.node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        try:
            if self.context.ok():
                self.context.shutdown()
        except Exception:  # noqa: BLE001
            pass


def stamp_of(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
