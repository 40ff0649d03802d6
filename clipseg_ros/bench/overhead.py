"""Section 2, node overhead: the per-frame work the node does besides inference."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from ..machine import latency_summary
from ..spinning import BackgroundSpinner
from .catalogue import BenchError, size_name
from .frames import synthetic_frame


def _timeit(fn: Callable[[], Any], iters: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _msg_classes():
    try:
        from sensor_msgs.msg import CompressedImage, Image

        return Image, CompressedImage, None
    except ImportError as exc:
        def image():
            return SimpleNamespace(header=None, height=0, width=0, encoding="", is_bigendian=0,
                                   step=0, data=b"")

        def compressed():
            return SimpleNamespace(header=None, format="", data=b"")

        return image, compressed, f"sensor_msgs not importable ({exc}); duck-typed messages used"


class _RosPublishBench:
    """A node publishing Image messages to a subscriber in the same process (own context)."""

    def __init__(self, topic_prefix: str = "/clipseg_bench"):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.rclpy = rclpy
        self.context = Context()
        rclpy.init(context=self.context)
        try:
            self.node = rclpy.create_node("clipseg_bench_publisher", context=self.context)
            qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
            self.received = 0
            self.arrived = threading.Event()
            self.arrived_at = 0.0
            self.pubs = {}
            self._subs = []
            for name in ("labels", "color", "overlay"):
                topic = f"{topic_prefix}/{name}"
                self.pubs[name] = self.node.create_publisher(Image, topic, qos)
                self._subs.append(self.node.create_subscription(Image, topic, self._on_msg, qos))
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self.spinner = BackgroundSpinner(self.executor, self.context, name="bench_overhead_spin").start()
            deadline = time.monotonic() + 10.0
            while any(p.get_subscription_count() < 1 for p in self.pubs.values()):
                if time.monotonic() > deadline:
                    raise BenchError("in-process subscriber was not matched within 10 s")
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise

    def _on_msg(self, _msg) -> None:
        self.received += 1
        self.arrived_at = time.perf_counter()
        self.arrived.set()

    def delivery(self, name: str, msg) -> float | None:
        """Seconds from publish() to the in-process subscriber's callback (None on timeout)."""
        self.arrived.clear()
        t0 = time.perf_counter()
        self.pubs[name].publish(msg)
        if not self.arrived.wait(2.0):
            return None
        return self.arrived_at - t0

    def close(self) -> None:
        try:
            if self.context.ok():
                self.rclpy.shutdown(context=self.context)
        except Exception:  # noqa: BLE001
            pass
        if getattr(self, "spinner", None) is not None:
            self.spinner.stop(timeout=2.0)
        if getattr(self, "executor", None) is not None:
            self.executor.shutdown(timeout_sec=1.0)
        if getattr(self, "node", None) is not None:
            try:
                self.node.destroy_node()
            except Exception:  # noqa: BLE001
                pass


def run_overhead(default_file: Path, wh, backends, opts, log) -> dict:
    """Time the node's per-frame steps besides inference at ``wh`` (default 640x480).

    Two views: each step **isolated** (a tight loop of the one call: decode variants, colorize,
    overlay, message fills, publishes) and the steps **in the pipeline**: decode rgb8 -> Segmenter
    (preprocess, inference, postprocess) -> colorize -> overlay -> 3 fills -> 3 publishes, frame
    after frame, as the node runs them (the in-process subscriber takes each frame's messages
    before the next frame starts, untimed, as subscriber processes would).  In the pipeline the
    steps start with cold caches, so they are slower than isolated; the overhead percentage uses
    the pipeline numbers.
    """
    import cv2

    from ..image_codec import array_to_image, compressed_to_rgb, encode_compressed, fill_image, image_to_rgb
    from ..model_file import ModelFile
    from ..segmenter import Segmenter
    from ..visualize import Colorizer, overlay

    iters = opts.overhead_iters
    Image, CompressedImage, msg_note = _msg_classes()
    notes = [msg_note] if msg_note else []
    w, h = wh
    rgb = synthetic_frame(w, h, seed=2)
    steps: list[dict] = []

    def add(name, group, samples, **extra):
        steps.append({"step": name, "group": group, **latency_summary(samples), **extra})

    pb = None
    if not opts.publish:
        notes.append("publish not measured (--no-publish)")
    elif msg_note:
        notes.append("publish not measured: " + msg_note)
    else:
        try:
            pb = _RosPublishBench()
        except Exception as exc:  # noqa: BLE001 - ROS missing or DDS trouble: note it, go on
            notes.append(f"publish not measured: {type(exc).__name__}: {exc}")
    try:
        # ---- decoding (isolated) ----
        msg_rgb = array_to_image(rgb, "rgb8", msg_cls=Image)
        msg_bgr = array_to_image(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "bgr8", msg_cls=Image)
        fmt, payload = encode_compressed(rgb, "jpeg", 90)
        msg_jpg = CompressedImage()
        msg_jpg.format = fmt
        if isinstance(msg_jpg, SimpleNamespace):
            msg_jpg.data = payload
        else:
            import array as _array

            buf = _array.array("B")
            buf.frombytes(payload)
            msg_jpg.data = buf
        add("decode rgb8 (image_to_rgb)", "decode", _timeit(lambda: image_to_rgb(msg_rgb), iters))
        add("decode bgr8 (image_to_rgb)", "decode", _timeit(lambda: image_to_rgb(msg_bgr), iters))
        add("decode jpeg (compressed_to_rgb)", "decode", _timeit(lambda: compressed_to_rgb(msg_jpg), iters),
            jpeg_kb=round(len(payload) / 1024, 1))

        palette = np.asarray(ModelFile(default_file).meta.palette, np.uint8)
        colorizer = Colorizer(palette)
        color = np.empty((h, w, 3), np.uint8)
        blended = np.empty((h, w, 3), np.uint8)

        # ---- the pipeline, per backend ----
        device = "cuda:0" if opts.device == "cuda" else "cpu"
        inference: dict[str, dict] = {}
        pipeline: dict[str, dict] = {}
        labels = None
        model_hw = None
        for backend in backends:
            try:
                seg = Segmenter(default_file, device=device, backend=backend, precision=opts.precision,
                                threads=opts.threads, trt_cache_dir=opts.trt_cache)
            except Exception as exc:  # noqa: BLE001
                inference[backend] = {"status": "skipped", "note": str(exc)}
                continue
            model_hw = seg.input_size
            names = ["decode rgb8", "preprocess", "inference", "postprocess", "colorize", "overlay",
                     "fill labels", "fill color", "fill overlay"]
            if pb is not None:
                names += ["publish labels", "publish color", "publish overlay"]
            times: dict[str, list] = {n: [] for n in names}
            warm = max(2, opts.warmup)
            for i in range(warm + iters):
                rec = i >= warm
                t0 = time.perf_counter()
                frame = image_to_rgb(msg_rgb)
                t1 = time.perf_counter()
                res = seg(frame)
                t2 = time.perf_counter()
                colorizer.colorize(res.labels, out=color)
                t3 = time.perf_counter()
                overlay(frame, color, 0.5, out=blended)
                t4 = time.perf_counter()
                msgs = {}
                fills = []
                for name, arr, enc in (("labels", res.labels, "mono8"), ("color", color, "rgb8"),
                                       ("overlay", blended, "rgb8")):
                    ta = time.perf_counter()
                    msgs[name] = fill_image(Image(), arr, enc)
                    fills.append(time.perf_counter() - ta)
                pubs = []
                if pb is not None:
                    target = pb.received + 3
                    for name in ("labels", "color", "overlay"):
                        ta = time.perf_counter()
                        pb.pubs[name].publish(msgs[name])
                        pubs.append(time.perf_counter() - ta)
                    # Untimed: let the in-process subscriber take the three messages before the
                    # next frame.  Their deserialization is the subscribers' work (other processes
                    # for the real node), and on 2 cores it would otherwise land in the next
                    # frame's preprocess (measured: 1.4 ms instead of 0.2 ms).
                    deadline = time.perf_counter() + 0.5
                    while pb.received < target and time.perf_counter() < deadline:
                        time.sleep(0.0002)
                if rec:
                    for name, v in (("decode rgb8", t1 - t0), ("preprocess", res.timings["preprocess"]),
                                    ("inference", res.timings["inference"]),
                                    ("postprocess", res.timings["postprocess"]),
                                    ("colorize", t3 - t2), ("overlay", t4 - t3),
                                    ("fill labels", fills[0]), ("fill color", fills[1]),
                                    ("fill overlay", fills[2])):
                        times[name].append(v)
                    for name, v in zip(("publish labels", "publish color", "publish overlay"), pubs):
                        times[name].append(v)
            labels = res.labels
            inference[backend] = {"status": "ok", "backend_detail": seg.description,
                                  **latency_summary(times["inference"])}
            med = {n: latency_summary(v) for n, v in times.items()}
            other = round(sum(m["median_ms"] for n, m in med.items() if n != "inference"), 4)
            pipeline[backend] = {"steps": med, "overhead_ms": other,
                                 "percent_of_inference": round(100.0 * other / med["inference"]["median_ms"], 2)}
            del seg
        if labels is None:
            labels = np.random.default_rng(0).integers(0, 11, (h, w), dtype=np.uint8)
            notes.append("no backend ran: the Segmenter steps were not measured, random labels used")
        else:
            mhw = f"{model_hw[1]}x{model_hw[0]}" if model_hw else "native"
            first = next(iter(pipeline.values()))["steps"]
            steps.append({"step": f"preprocess (resize {w}x{h} -> {mhw})", "group": "segmenter",
                          **first["preprocess"], "source": "pipeline, first backend"})
            steps.append({"step": f"postprocess (label resize {mhw} -> {w}x{h})", "group": "segmenter",
                          **first["postprocess"], "source": "pipeline, first backend"})

        # ---- visualisation and messages (isolated) ----
        add("colorize", "visualize", _timeit(lambda: colorizer.colorize(labels, out=color), iters))
        add("overlay (alpha 0.5)", "visualize", _timeit(lambda: overlay(rgb, color, 0.5, out=blended), iters))
        add("overlay keeping unlabeled pixels", "visualize",
            _timeit(lambda: overlay(rgb, color, 0.5, out=blended, labels=labels), iters), optional=True)
        out_msgs = {}

        def filler(name, arr, enc):
            def fn():
                out_msgs[name] = fill_image(Image(), arr, enc)
            return fn

        add("fill labels msg (mono8)", "messages", _timeit(filler("labels", labels, "mono8"), iters))
        add("fill color msg (rgb8)", "messages", _timeit(filler("color", color, "rgb8"), iters))
        add("fill overlay msg (rgb8)", "messages", _timeit(filler("overlay", blended, "rgb8"), iters))
        if pb is not None:
            for name in ("labels", "color", "overlay"):
                msg, pub = out_msgs[name], pb.pubs[name]
                add(f"publish {name} (rclpy, 1 local subscriber)", "publish",
                    _timeit(lambda: pub.publish(msg), iters))
            n_deliver = max(3, iters // 2)
            lat = []
            for _ in range(n_deliver):
                time.sleep(0.005)
                d = pb.delivery("overlay", out_msgs["overlay"])
                if d is not None:
                    lat.append(d)
            add(f"deliver {w}x{h} rgb8: publish -> subscriber callback in this process", "delivery", lat,
                optional=True, lost=n_deliver - len(lat))
    finally:
        if pb is not None:
            pb.close()

    med = {s["step"]: s["median_ms"] or 0.0 for s in steps}
    common = sum(s["median_ms"] or 0.0 for s in steps
                 if s["group"] in ("segmenter", "visualize", "messages", "publish") and not s.get("optional"))
    decodes = {"rgb8": med["decode rgb8 (image_to_rgb)"], "bgr8": med["decode bgr8 (image_to_rgb)"],
               "jpeg": med["decode jpeg (compressed_to_rgb)"]}
    totals = {f"{enc} input": round(common + d, 4) for enc, d in decodes.items()}
    isolated_pct = {}
    for backend, inf in inference.items():
        if inf.get("status") == "ok" and inf.get("median_ms"):
            isolated_pct[backend] = {k: round(100.0 * v / inf["median_ms"], 2) for k, v in totals.items()}
    return {"size": size_name(wh), "iters": iters, "model_input": list(model_hw) if model_hw else None,
            "steps": steps, "inference": inference, "pipeline": pipeline,
            "percent_of_inference": {b: p["percent_of_inference"] for b, p in pipeline.items()},
            "isolated_totals_ms": totals, "isolated_percent_of_inference": isolated_pct, "notes": notes,
            "included_in_totals": "decode + preprocess + postprocess + colorize + overlay + 3 fills"
                                  + (" + 3 publishes" if pb is not None else "")}
