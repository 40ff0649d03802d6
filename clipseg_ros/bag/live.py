"""``clipseg-bag-eval live``: replay a bag through the real ``seg_node`` and record what it publishes.

The node is the production console script, started as a subprocess in its own process group with
the same model, device, backend and threads as offline mode::

    seg_node --ros-args -r __node:=seg_node -p model:=M -p device:=D -p backend:=B [-p threads:=N]
             [-p input_size:=[H, W]]
             -p qos_reliability:=reliable -p qos_depth:=1 -p input_compressed:=false -r image:=TOPIC

This process publishes the bag's image messages (unchanged pixels / payload) on the input topic,
re-stamped with the current time at publish, and keeps a map new stamp -> original frame.  It
subscribes to ``/<node>/labels`` and ``/diagnostics``.

Replay policy (``--rate``):

* ``1`` (default) – the recorded rate (bag recording times); ``N`` – N times faster.  Frames are
  sent on schedule whether or not the node keeps up; with ``qos_depth:=1`` a slow node sees only
  the newest frame, so the others are *dropped*.
* ``max`` – closed loop: the next frame is sent as soon as the labels of the previous one arrive
  (or ``--timeout`` seconds passed), so the node runs flat out and nothing should be dropped.

Before the replay, ``--warmup`` frames (at least one: it is also the readiness handshake) are sent
and waited for; they are not counted.  Per frame the report has the end-to-end latency (receive
time of the labels minus the input stamp), and frames are counted as processed (labels came back),
rejected (the node's diagnostics said so) or dropped (the rest).  Accuracy uses the labels the node
published.  The node is always stopped (SIGINT to its process group, then SIGKILL), also on Ctrl-C,
SIGTERM or errors; a parent-death signal covers this process being killed.

rclpy is imported here, lazily, only when live mode runs.
"""
from __future__ import annotations

import queue
import time
from pathlib import Path

import numpy as np

from .config import LiveConfig
from .offline import common_results, expected_frames
from ..machine import latency_summary
from .reader import BagError, LabelMapper, open_bag, parse_label_map
from .report import SampleCollector, model_info, sample_positions, write_results
from ..processes import NodeProcess, StopSignals, node_command, node_configuration
from .live_ros import RosSide, stamp_of

__all__ = ["latency_trend", "run_live"]


class LiveError(BagError):
    """Live mode could not run (node failed to start, died, ...)."""


def latency_trend(per_frame: list[dict]) -> dict | None:
    """Does end-to-end latency grow during the run?  p95 of the first and the last quarter of the
    processed frames (in send order) and the least-squares slope of latency against send time."""
    pts = sorted((e["send_ns"], e["latency_ms"]) for e in per_frame if e.get("send_ns") is not None)
    if len(pts) < 8:
        return None
    t = (np.array([p[0] for p in pts], dtype=np.float64) - pts[0][0]) / 60e9
    lat = np.array([p[1] for p in pts], dtype=np.float64)
    q = len(pts) // 4
    slope = float(np.polyfit(t, lat, 1)[0]) if t[-1] > 0 else 0.0
    return {"frames": len(pts), "duration_s": float(t[-1] * 60.0),
            "first_quarter_p95_ms": float(np.percentile(lat[:q], 95)),
            "last_quarter_p95_ms": float(np.percentile(lat[-q:], 95)),
            "slope_ms_per_min": slope}


class _Clock:
    """Strictly increasing wall-clock stamps (ns since the epoch, the ROS system clock)."""

    def __init__(self):
        self.last = 0

    def now(self) -> int:
        t = time.time_ns()
        if t <= self.last:
            t = self.last + 1
        self.last = t
        return t


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

def run_live(cfg: LiveConfig) -> dict:
    from ..image_codec import ImageDecodeError, image_to_array
    from ..metrics import ConfusionMatrix
    from ..model_file import ModelFile

    label_map = parse_label_map(cfg.label_map)
    out_dir = Path(cfg.out)
    node_log = Path(cfg.node_log) if cfg.node_log else out_dir / "node.log"

    with open_bag(cfg.bag) as bag, StopSignals() as signals:
        bag.select_topics(cfg.image_topic, cfg.label_topic)
        mf = ModelFile(cfg.model)
        class_names = list(mf.meta.class_names)
        palette = np.asarray(mf.meta.palette, np.uint8)
        mapper = LabelMapper(label_map, len(class_names))
        out_dir.mkdir(parents=True, exist_ok=True)
        compressed = bag.image_type.endswith("CompressedImage")
        total = expected_frames(bag.image_count(), cfg.every, cfg.limit) * cfg.loop
        try:
            cmd = node_command(model=str(Path(cfg.model).resolve()), topic=bag.image_topic,
                               compressed=compressed, device=cfg.device, backend=cfg.backend,
                               precision=cfg.precision, threads=cfg.threads, node_name=cfg.node_name,
                               extra_params=cfg.node_param, executable=cfg.node_executable,
                               input_size=cfg.input_size)
        except ValueError as exc:      # a malformed --node-param
            raise BagError(str(exc)) from None
        model = model_info(cfg.model, mf.meta, backend=cfg.backend, device=cfg.device,
                           precision=cfg.precision, threads=cfg.threads, input_size=cfg.input_size,
                           description=f"seg_node ({cfg.backend} on {cfg.device}, {cfg.precision})")
        results = common_results("live", cfg, bag, model)
        results["label_map"] = mapper.to_json()
        results["node"] = {"command": cmd, "log": str(node_log)}
        cm = ConfusionMatrix(len(class_names))
        samples = SampleCollector(palette, sample_positions(total, cfg.samples))
        node = NodeProcess(cmd, node_log)
        ros = None
        outbag = None
        ok = False
        try:
            node.start()
            results["node"]["pid"] = node.pid
            print(f"seg_node started (pid {node.pid}), log {node_log}", flush=True)
            ros = RosSide(bag.image_topic, compressed, cfg.node_name, bool(cfg.output_bag))
            if cfg.output_bag:
                from .writer import OutputBag

                outbag = OutputBag(cfg.output_bag, cfg.output_storage or bag.storage, bag.image_topic,
                                   bag.image_connection(), "/" + cfg.node_name.strip("/"), palette)
            live = _Replay(cfg, bag, ros, node, mapper, cm, samples, outbag, total, image_to_array,
                           ImageDecodeError)
            live.startup()
            live.replay()
            ok = True
        finally:
            # a second Ctrl-C / SIGTERM must not cut the clean-up short: hold signals until done
            signals.hold()
            try:
                rc = node.stop()
                results["node"]["exit_code"] = rc
                if ros is not None:
                    ros.close()
                if outbag is not None:
                    outbag.close() if ok else outbag.abort()
            finally:
                if not ok:
                    signals.held = None     # already on the way out with an error or interrupt
                signals.release()           # re-raises a signal that came during the clean-up
        results["bag"]["reader_stats"] = dict(bag.stats)
    configured = node_configuration(node_log)
    if configured:       # what the node resolved auto to (backend, device, precision)
        results["model"]["description"] = f"seg_node: {configured}"
    results.update(live.summary())
    if outbag is not None:
        results["output_bag"] = {"path": str(outbag.path), "topics": outbag.topics, "frames": outbag.count}
    return write_results(out_dir, results, cm=cm, class_names=class_names, latencies_s=live.latencies_s,
                         latency_frames=live.latency_positions, samples=samples, quiet=cfg.quiet)


class _Replay:
    def __init__(self, cfg, bag, ros: RosSide, node: NodeProcess, mapper, cm, samples, outbag, total,
                 image_to_array, decode_error):
        self.cfg, self.bag, self.ros, self.node = cfg, bag, ros, node
        self.mapper, self.cm, self.samples, self.outbag = mapper, cm, samples, outbag
        self.total = total
        self.image_to_array, self.decode_error = image_to_array, decode_error
        self.clock = _Clock()
        self.sent: dict[int, dict] = {}          # new stamp -> light record
        self.inflight: dict[int, object] = {}    # new stamp -> Frame (until labels or presumed dropped)
        self.warmup_stamps: set[int] = set()
        self.warmup_done = False
        self.latencies_s: list[float] = []
        self.latency_positions: list[int] = []
        self.per_frame: list[dict] = []
        self.processed = 0
        self.with_gt = 0
        self.late = 0
        self.first_send = self.last_send = None
        self.first_recv = self.last_recv = None
        self.max_recv_stamp = 0
        self.diag_base: dict = {}
        self.unknown = 0
        self.pending_extra: dict[int, list] = {}   # new stamp -> [(name, msg)] color/overlay

    # ---- helpers --------------------------------------------------------------------------
    def _check_node(self, during: str) -> None:
        rc = self.node.returncode()
        if rc is not None:
            tail = self.node.log_tail()
            raise LiveError(f"seg_node exited with code {rc} {during}" + (f": {tail}" if tail else "")
                            + f" (log: {self.node.log_path})")

    def _drain(self, timeout: float = 0.0) -> bool:
        """Handle received messages; True when at least one labels message was handled."""
        got = False
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining > 0:
                    item = self.ros.queue.get(timeout=remaining)
                else:
                    item = self.ros.queue.get_nowait()
            except queue.Empty:
                return got
            name, recv_ns, msg = item
            if name == "labels":
                self._on_labels(recv_ns, msg)
                got = True
            else:
                self._on_extra(name, msg)
            timeout = 0.0
            deadline = time.monotonic()

    def _on_labels(self, recv_ns: int, msg) -> None:
        stamp = stamp_of(msg)
        if stamp in self.warmup_stamps:
            self.warmup_done = True
            return
        rec = self.sent.get(stamp)
        if rec is None:
            self.unknown += 1
            return
        if rec.get("received"):
            return
        rec["received"] = True
        self.processed += 1
        self.first_recv = recv_ns if self.first_recv is None else self.first_recv
        self.last_recv = recv_ns
        latency = (recv_ns - stamp) / 1e9
        self.latencies_s.append(latency)
        self.latency_positions.append(rec["position"])
        entry = {"position": rec["position"], "index": rec["index"], "stamp_ns": rec["orig_stamp"],
                 "latency_ms": latency * 1000.0, "send_ns": rec["send_ns"]}
        frame = self.inflight.pop(stamp, None)
        if frame is None:
            self.late += 1
        else:
            try:
                labels = np.array(self.image_to_array(msg), dtype=np.uint8, copy=True)
            except self.decode_error as exc:
                raise LiveError(f"cannot decode the node's labels for {frame.where}: {exc}") from None
            if labels.shape != frame.size:
                raise LiveError(f"the node's labels for {frame.where} are "
                                f"{labels.shape[1]}x{labels.shape[0]}, the image is "
                                f"{frame.size[1]}x{frame.size[0]}")
            if frame.gt is not None:
                self.cm.update(labels, frame.gt)
                self.with_gt += 1
            if self.samples.wants(rec["position"]):
                self.samples.add(rec["position"], frame, labels)
            if self.outbag is not None:
                self.outbag.write_input(frame)
                self.outbag.write_image("labels", frame, labels, "mono8")
                for name, extra in self.pending_extra.pop(stamp, []):
                    self._write_extra(name, extra, frame)
                rec["frame_for_extra"] = frame
        self.per_frame.append(entry)
        self.max_recv_stamp = max(self.max_recv_stamp, stamp)
        # the node works in order: anything sent before this frame and still open was dropped
        for s in [s for s in self.inflight if s < stamp]:
            self.inflight.pop(s, None)

    def _on_extra(self, name: str, msg) -> None:
        if self.outbag is None:
            return
        stamp = stamp_of(msg)
        rec = self.sent.get(stamp)
        if rec is None:
            return
        frame = rec.get("frame_for_extra")
        if frame is not None:
            self._write_extra(name, msg, frame)
        else:
            self.pending_extra.setdefault(stamp, []).append((name, msg))

    def _write_extra(self, name: str, msg, frame) -> None:
        from ..image_codec import image_to_rgb

        try:
            rgb = image_to_rgb(msg)
        except self.decode_error:
            return
        self.outbag.write_image(name, frame, np.array(rgb, copy=True), "rgb8")

    # ---- phases ---------------------------------------------------------------------------
    def startup(self) -> None:
        """Wait for the node, then send warm-up frames until their labels come back."""
        cfg = self.cfg
        deadline = time.monotonic() + cfg.node_startup_timeout
        first = None
        frames = self.bag.frames(self.mapper, limit=1)
        try:
            first = next(iter(frames))
        finally:
            frames.close()
        msg = self.ros.make_message(first)
        # 1. the node is up: its labels publisher is visible and it subscribes to our topic
        while True:
            self._check_node("during start-up")
            if self.ros.pub.get_subscription_count() > 0 and self.ros.labels_publisher_qos() is not None:
                break
            if time.monotonic() > deadline:
                tail = self.node.log_tail()
                raise LiveError(f"seg_node did not come up within {cfg.node_startup_timeout:g} s "
                                f"(no subscriber on {self.bag.image_topic} / no publisher of "
                                f"{self.ros.ns}/labels)" + (f"; node log: {tail}" if tail else ""))
            time.sleep(0.05)
        self.ros.subscribe_outputs(self.ros.labels_publisher_qos())
        # 2. warm-up / handshake: resend every second until labels come back
        for _ in range(max(1, cfg.warmup)):
            self.warmup_done = False
            last = 0.0
            while not self.warmup_done:
                self._check_node("during warm-up")
                if time.monotonic() > deadline:
                    raise LiveError(f"seg_node published no labels for the warm-up frame within "
                                    f"{cfg.node_startup_timeout:g} s (log: {self.node.log_path})")
                if time.monotonic() - last > 1.0:
                    s = self.clock.now()
                    self.warmup_stamps.add(s)
                    self.ros.publish(msg, s)
                    last = time.monotonic()
                self._drain(0.05)
        # 3. diagnostics baseline (the node's counters include the warm-up frames)
        t_end = time.monotonic() + 2.5
        seen = self.ros.diag_count
        while self.ros.diag_count == seen and time.monotonic() < t_end:
            self._drain(0.05)
        self.diag_base = self.ros.diag_counts()
        self.diag_base_snapshot = self.ros.diag_snapshot()

    def replay(self) -> None:
        cfg = self.cfg
        rate = cfg.rate
        position = 0
        t0 = None
        bag0 = None
        bar = None
        if not cfg.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total, desc=f"live x{rate}", unit="frame", dynamic_ncols=True,
                       leave=False)
        last_stamp = None
        rejected_before = 0
        for lap_offset_ns, frame in self._laps():
            if bar is not None:
                bar.update(1)
            msg = self.ros.make_message(frame)
            if rate == "max":
                if last_stamp is not None:
                    # until the previous frame's labels arrive, the node reports a rejection, or timeout
                    deadline = time.monotonic() + cfg.timeout
                    while (not self.sent[last_stamp].get("received") and time.monotonic() < deadline
                           and self.ros.diag_counts().get("rejected", 0) <= rejected_before):
                        self._check_node("during the replay")
                        self._drain(0.02)
                rejected_before = self.ros.diag_counts().get("rejected", 0)
            else:
                if t0 is None:
                    t0, bag0 = time.monotonic(), frame.bag_time_ns
                target = t0 + (frame.bag_time_ns + lap_offset_ns - bag0) / 1e9 / rate
                while True:
                    wait = target - time.monotonic()
                    if wait <= 0:
                        break
                    self._drain(min(wait, 0.02))
                self._check_node("during the replay")
            stamp = self.clock.now()
            self.sent[stamp] = {"position": position, "index": frame.index, "orig_stamp": frame.stamp_ns,
                                "bag_time": frame.bag_time_ns, "send_ns": time.time_ns()}
            self.inflight[stamp] = frame
            self.ros.publish(msg, stamp)
            now = time.time_ns()
            self.first_send = now if self.first_send is None else self.first_send
            self.last_send = now
            last_stamp = stamp
            position += 1
            self._drain(0.0)
        if bar is not None:
            bar.close()
        if position == 0:
            raise BagError(f"bag {self.bag.path} has no frames on {self.bag.image_topic}")
        # outstanding labels: wait for the last frame (earlier ones resolve with it), or time out
        deadline = time.monotonic() + cfg.timeout
        while not self.sent[last_stamp].get("received") and time.monotonic() < deadline:
            self._check_node("during the replay")
            self._drain(0.05)
        self._drain(0.2)
        # final diagnostics: one status received after the last labels
        t_end = time.monotonic() + min(3.0, max(1.0, cfg.timeout))
        seen = self.ros.diag_count
        while self.ros.diag_count < seen + 1 and time.monotonic() < t_end:
            self._drain(0.05)
        self.diag_final = self.ros.diag_counts()
        self.sent_count = position

    def _laps(self):
        """(bag-time offset, frame) over ``--loop`` passes through the bag.  Lap k is shifted by k
        times (the bag's span + one frame period), so the recorded rate holds across the seam."""
        cfg = self.cfg
        offset = 0
        for _lap in range(cfg.loop):
            first = last = None
            n = 0
            frames = self.bag.frames(self.mapper, limit=cfg.limit, every=cfg.every)
            try:
                for frame in frames:
                    first = frame.bag_time_ns if first is None else first
                    last = frame.bag_time_ns
                    n += 1
                    yield offset, frame
            finally:
                frames.close()
            if first is None:
                return
            span = last - first
            offset += span + (span // (n - 1) if n > 1 else 100_000_000)

    def summary(self) -> dict:
        sent = self.sent_count
        node_delta = {k: v - self.diag_base.get(k, 0) for k, v in self.diag_final.items()}
        rejected = max(0, node_delta.get("rejected", 0))
        dropped = max(0, sent - self.processed - rejected)
        span_recv = (self.last_recv - self.first_send) / 1e9 if self.last_recv and self.first_send else 0.0
        span_out = (self.last_recv - self.first_recv) / 1e9 if self.last_recv and self.first_recv else 0.0
        span_send = (self.last_send - self.first_send) / 1e9 if self.last_send and self.first_send else 0.0
        self.per_frame.sort(key=lambda e: e["position"])
        return {
            "frames": {"total": sent, "sent": sent, "processed": self.processed, "dropped": dropped,
                       "rejected": rejected, "with_gt": self.with_gt,
                       "without_gt": self.processed - self.with_gt, "late": self.late,
                       "unknown_labels": self.unknown, "node_reported": node_delta},
            "latency_ms": latency_summary(self.latencies_s),
            "latency_trend": latency_trend(self.per_frame),
            "rate": {"achieved_hz": ((self.processed - 1) / span_out
                                     if self.processed > 1 and span_out > 0 else None),
                     "sent_hz": (sent - 1) / span_send if span_send > 0 and sent > 1 else None,
                     "replay_rate": self.cfg.rate, "wall_s": span_recv},
            "live": {"rate": self.cfg.rate, "warmup": max(1, self.cfg.warmup),
                     "policy": ("closed loop: next frame after the previous frame's labels (or --timeout)"
                                if self.cfg.rate == "max" else
                                f"open loop at {self.cfg.rate:g}x the recorded rate"),
                     "diagnostics_final": self.ros.diag_snapshot(),
                     # exceptions the evaluator's own spin loop caught and survived (should be 0)
                     "spin_errors": {"count": self.ros.spinner.error_count,
                                     "last": self.ros.spinner.errors[-5:]}},
            "per_frame": self.per_frame,
        }
