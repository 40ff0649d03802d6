"""Statistics of ``seg_node`` for its diagnostics: counters, latency windows, percentiles.

No ROS (numpy for the percentiles, exactly as before the split): :class:`clipseg_ros.node.SegNode`
feeds a :class:`_Stats` from its callback and worker and turns :func:`summarize` into a
``DiagnosticStatus``.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["LATENCY_WINDOW", "SLOW_FRACTION", "STALE_STAMP_S", "summarize"]

#: Latency statistics in the diagnostics cover the last this many frames.
LATENCY_WINDOW = 300
#: A processed rate below this fraction of the input rate makes the diagnostics WARN.
SLOW_FRACTION = 0.5
#: A frame stamped more than this many seconds before (or after) the node's clock has a stale
#: stamp (a bag replayed without use_sim_time, a camera without time sync): its end-to-end latency
#: means nothing, so it stays out of the latency window and is counted as a stale stamp instead.
STALE_STAMP_S = 10.0


class _Stats:
    """Counters and latency windows, shared by the callback, the worker and the diagnostics timer."""

    COUNTERS = ("received", "processed", "dropped", "rejected", "inference_errors",
                "color_computed", "color_published", "overlay_published", "confidence_published",
                "camera_info_published", "labels_compressed_published", "groups_published",
                "groups_color_published", "stale_stamps", "callback_errors", "batched")

    def __init__(self):
        self.lock = threading.Lock()
        for k in self.COUNTERS:
            setattr(self, k, 0)
        self.inference_ms: deque = deque(maxlen=LATENCY_WINDOW)
        self.e2e_ms: deque = deque(maxlen=LATENCY_WINDOW)
        self.last_rejection = ""
        self.last_error = ""
        self.last_callback_error = ""

    def add(self, **counts) -> None:
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def snapshot(self) -> dict:
        with self.lock:
            snap = {k: getattr(self, k) for k in self.COUNTERS}
            snap["inference_ms"] = list(self.inference_ms)
            snap["e2e_ms"] = list(self.e2e_ms)
            snap["last_rejection"] = self.last_rejection
            snap["last_error"] = self.last_error
            snap["last_callback_error"] = self.last_callback_error
        return snap


def _percentiles(values: list) -> tuple[float, float] | None:
    """(median, p95) of ``values``; None when empty."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return float(np.median(a)), float(np.percentile(a, 95))


def summarize(snap: dict, last: tuple, now: float, input_topic: str, trailer: list) -> tuple:
    """Level ("OK" / "WARN" / "ERROR"), message, key/value pairs and the new ``last`` tuple.

    ``snap`` is a :meth:`_Stats.snapshot`, ``last`` the tuple returned by the previous call (rates
    are over the time since then), ``trailer`` the node's descriptive key/values (lifecycle state,
    backend, ...) placed between the latency figures and the last reasons.
    """
    t_prev, rec_prev, proc_prev, rej_prev, err_prev, stale_prev, cb_prev = last
    last = (now, snap["received"], snap["processed"], snap["rejected"],
            snap["inference_errors"], snap["stale_stamps"], snap["callback_errors"])
    dt = max(now - t_prev, 1e-6)
    in_hz = (snap["received"] - rec_prev) / dt
    out_hz = (snap["processed"] - proc_prev) / dt
    new_rejected = snap["rejected"] - rej_prev
    new_errors = snap["inference_errors"] - err_prev
    new_stale = snap["stale_stamps"] - stale_prev
    new_cb_errors = snap["callback_errors"] - cb_prev
    inf = _percentiles(snap["inference_ms"])
    e2e = _percentiles(snap["e2e_ms"])

    def ms(v):
        return f"{v:.1f}" if v is not None else "n/a"

    if new_errors:
        level, message = "ERROR", f"inference failed: {snap['last_error']}"
    elif new_rejected:
        level, message = "WARN", f"rejecting frames: {snap['last_rejection']}"
    elif new_cb_errors:
        level, message = "WARN", f"a callback failed (skipped): {snap['last_callback_error']}"
    elif new_stale:
        level, message = ("WARN", f"{new_stale} frame(s) stamped more than {STALE_STAMP_S:g} s away "
                                  f"from the node's clock (bag without use_sim_time? camera without "
                                  f"time sync?); left out of the end-to-end latency")
    elif in_hz >= 1.0 and out_hz < SLOW_FRACTION * in_hz:
        level, message = "WARN", f"processing {out_hz:.1f} of {in_hz:.1f} frames/s"
    elif snap["received"] == 0:
        level, message = "OK", f"waiting for images on {input_topic}"
    else:
        level, message = "OK", "ok"
    # counters first: tools that look keys up by substring ("processed") find the counts
    values = [
        ("frames received", str(snap["received"])),
        ("frames processed", str(snap["processed"])),
        ("frames dropped", str(snap["dropped"])),
        ("frames rejected", str(snap["rejected"])),
        ("frames batched", str(snap.get("batched", 0))),
        ("inference errors", str(snap["inference_errors"])),
        ("stale stamps", str(snap["stale_stamps"])),
        ("callback errors", str(snap["callback_errors"])),
        ("input rate (Hz)", f"{in_hz:.2f}"),
        ("processed rate (Hz)", f"{out_hz:.2f}"),
        ("inference latency median (ms)", ms(inf[0] if inf else None)),
        ("inference latency p95 (ms)", ms(inf[1] if inf else None)),
        ("end-to-end latency median (ms)", ms(e2e[0] if e2e else None)),
        ("end-to-end latency p95 (ms)", ms(e2e[1] if e2e else None)),
        *trailer,
        ("last rejection reason", snap["last_rejection"] or "none"),
        ("last error", snap["last_error"] or "none"),
        ("last callback error", snap["last_callback_error"] or "none"),
    ]
    return level, message, values, last
