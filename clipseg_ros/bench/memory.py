"""Section 3, node memory: the real ``seg_node`` fed closed loop, its peak RSS."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..machine import latency_summary
from ..spinning import BackgroundSpinner
from ..processes import NodeProcess, node_command, node_configuration, proc_status
from .catalogue import BenchError, parse_size, size_name
from .frames import synthetic_frame


def run_node_memory(default_file: Path, opts, out_dir: Path, log) -> dict:
    if not opts.memory:
        return {"status": "skipped", "note": "--no-memory"}
    log("seg_node peak memory")
    try:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from ..image_codec import array_to_image
    except ImportError as exc:
        return {"status": "skipped", "note": f"cannot start the node: {exc}"}

    node_name = f"clipseg_bench_node_{os.getpid()}"
    in_topic = f"/{node_name}_in/image"
    cmd = node_command(model=str(default_file), topic=in_topic, compressed=False,
                       device="cuda" if opts.device == "cuda" else "cpu", backend=opts.node_backend,
                       precision=opts.node_precision, threads=opts.threads, node_name=node_name,
                       executable=opts.node_executable)
    w, h = parse_size(opts.overhead_size)
    frame = synthetic_frame(w, h, seed=3)
    result: dict = {"status": "error", "command": cmd, "frame": size_name((w, h)),
                    "log": str(out_dir / "seg_node.log")}
    ctx = Context()
    rclpy.init(context=ctx)
    proc = NodeProcess(cmd, out_dir / "seg_node.log")
    got = threading.Event()
    arrivals: list[float] = []
    node = executor = spin = None
    try:
        node = rclpy.create_node("clipseg_bench_feeder", context=ctx)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        pub = node.create_publisher(Image, in_topic, qos)

        def on_labels(_msg):
            arrivals.append(time.perf_counter())
            got.set()

        node.create_subscription(Image, f"/{node_name}/labels", on_labels, qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spin = BackgroundSpinner(executor, ctx, name="bench_memory_spin").start()
        msg = array_to_image(frame, "rgb8", msg_cls=Image)
        t_start = time.perf_counter()
        proc.start()
        # readiness: keep sending until the first labels come back
        deadline = time.monotonic() + opts.node_startup_timeout
        while not got.is_set():
            if proc.returncode() is not None:
                raise BenchError(f"seg_node exited with code {proc.returncode()}: {proc.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"seg_node gave no labels within {opts.node_startup_timeout:.0f} s: "
                                 f"{proc.log_tail()}")
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            got.wait(0.5)
        result["startup_s"] = round(time.perf_counter() - t_start, 2)
        # closed loop for node_seconds
        lat = []
        frames = 0
        rss_samples = []
        t_end = time.perf_counter() + opts.node_seconds
        while time.perf_counter() < t_end:
            got.clear()
            t0 = time.perf_counter()
            msg.header.stamp = node.get_clock().now().to_msg()
            pub.publish(msg)
            if got.wait(5.0):
                frames += 1
                lat.append(arrivals[-1] - t0)
            rss_samples.append(proc_status(proc.pid).get("VmRSS"))
            if proc.returncode() is not None:
                raise BenchError(f"seg_node exited with code {proc.returncode()}: {proc.log_tail()}")
        status = proc_status(proc.pid)
        elapsed = opts.node_seconds
        result.update(
            status="ok", pid=proc.pid, frames=frames, fps=round(frames / elapsed, 2),
            peak_rss_mb=round(status.get("VmHWM", 0) / 1024, 1),
            rss_end_mb=round(status.get("VmRSS", 0) / 1024, 1),
            rss_max_sampled_mb=round(max((r or 0) for r in rss_samples) / 1024, 1) if rss_samples else None,
            threads=status.get("Threads"),
            roundtrip=latency_summary(lat),
        )
    except Exception as exc:  # noqa: BLE001 - reported in the results
        result["note"] = f"{type(exc).__name__}: {exc}"
    finally:
        proc.stop()
        result["configured"] = node_configuration(out_dir / "seg_node.log")   # what auto resolved to
        try:
            rclpy.shutdown(context=ctx)
        except Exception:  # noqa: BLE001
            pass
        if spin is not None:
            spin.stop(timeout=2.0)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
    return result
