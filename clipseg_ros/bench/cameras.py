"""Several cameras: one ``seg_node`` serving them all against one node per camera.

    python -m clipseg_ros.bench.cameras [--cameras 2 3] [--rate 15] [--seconds 30] [--threads 2]
                                        [--model FILE] [--bag DIR] [--out DIR]

For each camera count N, real ``seg_node`` processes are fed N camera streams of real frames (the
sample bag's CamVid images, rgb8, each camera its own frames) at ``--rate`` Hz per camera, evenly
staggered in phase (free-running cameras; ``--phase sync`` sends them together, as hardware-
triggered cameras would), and these set-ups are measured one after the other:

* ``one node``: one process with ``cameras`` = the N topics, the model file as given (the bundled
  file has a fixed batch of one, so waiting frames run one after the other);
* ``one node, batched``: the same with the model re-exported with a dynamic batch dimension
  (``Segmenter.batchable``), so frames that wait together go through one inference call;
* ``N nodes``: N processes, one camera each (what users do without the ``cameras`` parameter).

Reported per set-up: the processed frames per second of each camera (labels received / window),
the end-to-end latency (labels arrival - the frame's stamp, both on this machine's clock), the
summed resident memory of the node processes (peak VmHWM and the mean sampled VmRSS) and their CPU
use.  Results: ``cameras.json``, ``cameras.md`` and ``cameras.png`` in ``--out``
(``cameras_sync.*`` with ``--phase sync``).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from ..machine import latency_summary, loadavg, machine_info
from ..processes import NodeProcess, StopSignals, node_command, proc_status
from ..spinning import BackgroundSpinner
from .catalogue import PACKAGED_DEFAULT, REPO, BenchError, shown_path

DEFAULT_BAG = REPO / "data" / "sample_bag" / "camvid_val_sample"
DEFAULT_OUT = REPO / "docs" / "bench"
SETUPS = ("one node", "one node, batched", "N nodes")


def batchable_copy(model: Path, dst: Path) -> Path:
    """``model`` re-exported with a dynamic batch dimension (same weights, same metadata)."""
    from ..model_file import ModelFile, save_model_file

    mf = ModelFile(model)
    meta = mf.meta
    prov = dict(meta.provenance)
    prov["bench_note"] = f"{Path(model).name} re-exported with a dynamic batch (clipseg_ros.bench.cameras)"
    save_model_file(dst, mf.build_network(), meta.class_names, palette=meta.palette,
                    input_size=meta.input_size, mean=meta.mean, std=meta.std, provenance=prov)
    return dst


def load_frames(bag: Path, count: int) -> list:
    """``count`` RGB frames of the bag (fewer if it has fewer)."""
    from ..bag.reader import open_bag

    out = []
    with open_bag(bag) as src:
        src.select_topics(None, None)
        for frame in src.frames(None, limit=count):
            out.append(frame.rgb)
    if not out:
        raise BenchError(f"bag {bag}: no image frames")
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])        # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


class Feeder:
    """An rclpy node (own context) publishing the camera streams and collecting the labels."""

    def __init__(self, tag: str):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.rclpy, self.Image = rclpy, Image
        self.qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node(f"clipseg_cameras_feeder_{tag}", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.arrivals: dict[int, list] = {}
        self.pubs, self.subs = [], []
        self._spin = BackgroundSpinner(self.executor, self.ctx, name="bench_cameras_spin",
                                       timeout_sec=0.05).start()

    def add_camera(self, image_topic: str, labels_topic: str) -> int:
        i = len(self.pubs)
        self.pubs.append(self.node.create_publisher(self.Image, image_topic, self.qos))
        self.arrivals[i] = []

        def on_labels(msg, i=i):
            now = time.time_ns()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            with self.lock:
                self.arrivals[i].append((now, (now - stamp) / 1e9))

        self.subs.append(self.node.create_subscription(self.Image, labels_topic, on_labels, self.qos))
        return i

    def publish(self, i: int, msg) -> None:
        ns = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
        self.pubs[i].publish(msg)

    def close(self) -> None:
        try:
            self.rclpy.shutdown(context=self.ctx)
        except Exception:  # noqa: BLE001
            pass
        self._spin.stop(timeout=2.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()


def run_setup(setup: str, n: int, model: Path, frames: list, opts, work: Path, log) -> dict:
    """One set-up with ``n`` cameras; a result row."""
    from ..image_codec import array_to_image

    tag = f"{os.getpid()}_{n}_{SETUPS.index(setup)}"
    keys = [f"bench_cam{tag}_{i}" for i in range(n)]
    topics = [f"/{k}/image_raw" for k in keys]
    device = "cuda" if opts.device == "cuda" else "cpu"
    common = dict(compressed=False, device=device, backend="auto", precision="fp32",
                  threads=opts.threads, executable=opts.node_executable)
    procs, labels_topics = [], []
    if setup == "N nodes":
        for i, (k, t) in enumerate(zip(keys, topics)):
            name = f"seg_bench_{tag}_{i}"
            procs.append(NodeProcess(node_command(model=str(model), topic=t, node_name=name, **common),
                                     work / f"{setup.replace(' ', '_').replace(',', '')}_{n}_{i}.log"))
            labels_topics.append(f"/{name}/labels")
    else:
        name = f"seg_bench_{tag}"
        cams = "[" + ",".join(f"'{t}'" for t in topics) + "]"
        procs.append(NodeProcess(node_command(model=str(model), topic=topics[0], node_name=name,
                                              extra_params=[f"cameras:={cams}"], **common),
                                 work / f"{setup.replace(' ', '_').replace(',', '')}_{n}.log"))
        labels_topics = [f"/{name}/{k}/labels" for k in keys]
    feeder = Feeder(tag)
    row = {"setup": setup, "cameras": n, "processes": len(procs), "model": shown_path(model),
           "rate_hz": opts.rate, "phase": opts.phase, "seconds": opts.seconds, "threads": opts.threads,
           "status": "error"}
    try:
        msgs = []
        for i in range(n):
            feeder.add_camera(topics[i], labels_topics[i])
            msgs.append([array_to_image(f, "rgb8", msg_cls=feeder.Image)
                         for f in frames[i::n] or frames])
        for p in procs:
            p.start()
        # readiness: every camera has returned labels
        deadline = time.monotonic() + opts.node_startup_timeout
        while not all(feeder.arrivals[i] for i in range(n)):
            for p in procs:
                if p.returncode() is not None:
                    raise BenchError(f"seg_node exited with code {p.returncode()}: {p.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"no labels from every camera within {opts.node_startup_timeout:.0f} s: "
                                 + " / ".join(p.log_tail() for p in procs))
            for i in range(n):
                if not feeder.arrivals[i]:
                    feeder.publish(i, msgs[i][0])
            time.sleep(0.3)
        # the streams: warm-up, then the measured window
        period = 1.0 / opts.rate
        offsets = [0.0] * n if opts.phase == "sync" else [i * period / n for i in range(n)]
        t_start = time.monotonic() + 0.2
        t_window = t_start + opts.warmup
        t_end = t_window + opts.seconds
        sent = [0] * n
        ticks0 = None
        rss = []
        next_sample = t_window
        k = 0
        while True:
            due = [(t_start + k * period + off, i) for i, off in enumerate(offsets)]
            for when, i in due:
                delay = when - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                feeder.publish(i, msgs[i][k % len(msgs[i])])
                if when >= t_window:
                    sent[i] += 1
            now = time.monotonic()
            if ticks0 is None and now >= t_window:
                ticks0 = (sum(_cpu_ticks(p.pid) for p in procs), time.monotonic(), time.time_ns())
            if now >= next_sample and ticks0 is not None:
                rss.append(sum(proc_status(p.pid).get("VmRSS", 0) for p in procs))
                next_sample = now + 0.5
            for p in procs:
                if p.returncode() is not None:
                    raise BenchError(f"seg_node exited with code {p.returncode()}: {p.log_tail()}")
            k += 1
            if now >= t_end:
                break
        ticks1 = (sum(_cpu_ticks(p.pid) for p in procs), time.monotonic(), time.time_ns())
        time.sleep(0.5)          # the last frames' labels
        window_ns = (ticks0[2], ticks1[2])
        hz = os.sysconf("SC_CLK_TCK")
        per_camera = []
        with feeder.lock:
            for i in range(n):
                got = [(t, lat) for t, lat in feeder.arrivals[i] if window_ns[0] <= t < window_ns[1]]
                secs = (window_ns[1] - window_ns[0]) / 1e9
                per_camera.append({"camera": i, "sent": sent[i], "processed": len(got),
                                   "fps": round(len(got) / secs, 2),
                                   "latency": latency_summary([lat for _, lat in got])})
        status = [proc_status(p.pid) for p in procs]
        all_lat = [lat for i in range(n) for t, lat in feeder.arrivals[i]
                   if window_ns[0] <= t < window_ns[1]]
        row.update(
            status="ok", per_camera=per_camera,
            fps_per_camera_mean=round(sum(c["fps"] for c in per_camera) / n, 2),
            fps_total=round(sum(c["fps"] for c in per_camera), 2),
            latency=latency_summary(all_lat),
            peak_rss_mb=round(sum(s.get("VmHWM", 0) for s in status) / 1024, 1),
            mean_rss_mb=round(sum(rss) / len(rss) / 1024, 1) if rss else None,
            cpu_percent=round(100.0 * (ticks1[0] - ticks0[0]) / hz / max(ticks1[1] - ticks0[1], 1e-6), 1),
            loadavg_after=loadavg(),
        )
        log(f"{setup:<18} {n} cameras: {row['fps_per_camera_mean']:.1f} fps/camera, latency median "
            f"{row['latency']['median_ms']:.0f} ms p90 {row['latency']['p90_ms']:.0f} ms, peak RSS "
            f"{row['peak_rss_mb']:.0f} MB, CPU {row['cpu_percent']:.0f} %")
    except BenchError as exc:
        row["note"] = str(exc)
        log(f"{setup} {n} cameras: {exc}")
    finally:
        for p in procs:
            p.stop()
        feeder.close()
    return row


def format_markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Several cameras: one node against one node per camera",
        "",
        f"`{result['command']}` (commit {result.get('commit') or 'unknown'}, {m.get('date', '')}).",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('usable_cores')} usable cores; each node runs its model with "
        f"`threads:={result['threads']}` on the CPU.  Each camera sends real CamVid frames "
        f"({result['frame_size'][1]}x{result['frame_size'][0]} rgb8) at {result['rate_hz']:g} Hz, "
        f"phases {'together' if result['phase'] == 'sync' else 'evenly staggered'}; "
        f"{result['seconds']:g} s measured after {result['warmup']:g} s of warm-up.  Model: "
        f"`{result['model']}` (batch {'dynamic' if result['model_batchable'] else 'fixed at 1'}); "
        f"`one node, batched` runs the same weights re-exported with a dynamic batch.",
        "",
        "| set-up | cameras | processes | fps per camera (each) | end-to-end latency median / p90 (ms) "
        "| peak RSS, all processes (MB) | mean RSS (MB) | CPU (%) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['setup']} | {r['cameras']} | {r['processes']} | failed: {r.get('note', '')} "
                         f"| | | | |")
            continue
        each = " / ".join(f"{c['fps']:.1f}" for c in r["per_camera"])
        lat = r["latency"]
        lines.append(f"| {r['setup']} | {r['cameras']} | {r['processes']} | {r['fps_per_camera_mean']:.1f} "
                     f"({each}) | {lat['median_ms']:.0f} / {lat['p90_ms']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['mean_rss_mb']:.0f} | {r['cpu_percent']:.0f} |")
    lines += ["", "fps per camera: labels messages that came back per second of the measured window "
              f"(the cameras send {result['rate_hz']:g}); latency: labels arrival minus the frame's "
              "stamp; RSS: summed over the node processes; CPU: their user + system time over the "
              "window (200 % = both cores).", ""]
    return "\n".join(lines)


def write_plot(path: Path, result: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    if not rows:
        return False
    labels = [f"{r['setup']}\n{r['cameras']} cams" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = range(len(rows))
    axes[0].bar(x, [r["fps_per_camera_mean"] for r in rows], color="tab:blue")
    axes[0].axhline(result["rate_hz"], color="gray", ls="--", lw=1, label="camera rate")
    axes[0].set_title("processed fps per camera")
    axes[0].legend()
    axes[1].bar([i - 0.2 for i in x], [r["latency"]["median_ms"] for r in rows], 0.4, label="median")
    axes[1].bar([i + 0.2 for i in x], [r["latency"]["p90_ms"] for r in rows], 0.4, label="p90")
    axes[1].set_title("end-to-end latency (ms)")
    axes[1].legend()
    axes[2].bar(x, [r["peak_rss_mb"] for r in rows], color="tab:green")
    axes[2].set_title("peak RSS of the node processes (MB)")
    for ax in axes:
        ax.set_xticks(list(x))
        ax.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m clipseg_ros.bench.cameras", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[2, 3], help="camera counts (default 2 3)")
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS, metavar="SETUP",
                    help=f"which set-ups (default all: {', '.join(SETUPS)})")
    ap.add_argument("--rate", type=float, default=15.0, help="frames per second per camera (default 15)")
    ap.add_argument("--phase", choices=("staggered", "sync"), default="staggered")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per set-up (default 30)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds at rate before measuring (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="inference threads per node (default 2)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--model", type=Path, default=PACKAGED_DEFAULT, help="model file (default: the bundled one)")
    ap.add_argument("--bag", type=Path, default=DEFAULT_BAG, help="frames from this bag (default: the sample bag)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="folder for cameras.json/.md/.png (default docs/bench)")
    ap.add_argument("--node-executable", default=None, help="seg_node command (default: the installed one)")
    ap.add_argument("--node-startup-timeout", type=float, default=120.0)
    ap.add_argument("--commit", default=None, help="commit to record (default: git rev-parse HEAD)")
    return ap


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _batchable(model: Path) -> bool:
    """Whether the file's graph takes a batch: the Segmenter's own answer (False without onnxruntime)."""
    from ..segmenter import Segmenter, SegmenterConfigError

    try:
        return Segmenter(model, device="cpu", backend="onnxruntime", precision="fp32").batchable
    except SegmenterConfigError:
        return False


def run(opts, log=print) -> dict:
    if opts.rate <= 0 or opts.seconds <= 0:
        raise BenchError(f"--rate and --seconds must be positive, got {opts.rate}, {opts.seconds}")
    if any(n < 1 for n in opts.cameras):
        raise BenchError(f"--cameras must be at least 1, got {opts.cameras}")
    from ..model_file import ModelFile

    model = Path(opts.model)
    ModelFile(model)            # a bad file stops here, before any node starts
    frames = load_frames(opts.bag, 5 * max(opts.cameras))
    with tempfile.TemporaryDirectory(prefix="clipseg_cameras_") as tmp:
        work = Path(tmp)
        batch_model = None
        if "one node, batched" in opts.setups:
            log("re-exporting the model with a dynamic batch")
            batch_model = batchable_copy(model, work / f"{model.stem}_batch.clipseg")
        rows = []
        for n in opts.cameras:
            for setup in opts.setups:
                use = batch_model if setup == "one node, batched" else model
                rows.append(run_setup(setup, n, use, frames, opts, work, log))
                if rows[-1]["status"] == "ok" and setup == "one node, batched":
                    rows[-1]["model"] = shown_path(model) + " (re-exported, dynamic batch)"
    return {
        "command": "python -m clipseg_ros.bench.cameras " + " ".join(
            shown_path(a) if Path(a).is_absolute() else a for a in opts.argv),
        "commit": opts.commit or _commit(), "machine": machine_info(opts.threads),
        "model": shown_path(model), "model_batchable": _batchable(model),
        "frame_size": list(frames[0].shape[:2]), "rate_hz": opts.rate, "phase": opts.phase,
        "seconds": opts.seconds, "warmup": opts.warmup, "threads": opts.threads, "rows": rows,
    }


def main(argv=None) -> int:
    import sys

    from ..model_file import ModelFileError

    argv = list(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(argv)
    opts.argv = argv
    with StopSignals():
        try:
            result = run(opts)
        except (BenchError, ModelFileError) as exc:
            print(f"cameras bench: {exc}", file=sys.stderr)
            return 1
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    from ..atomic_files import atomic_write_text

    stem = "cameras" if opts.phase == "staggered" else f"cameras_{opts.phase}"
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / f"{stem}.md", format_markdown(result))
    plotted = write_plot(out / f"{stem}.png", result)
    print(f"wrote {out / stem}.json, {stem}.md" + (f", {stem}.png" if plotted else ""))
    return 0 if all(r["status"] == "ok" for r in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
