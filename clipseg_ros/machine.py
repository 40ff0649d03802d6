"""The machine a measurement ran on, and latency summaries: one schema for every tool.

:func:`machine_info` describes the machine under the same keys in ``bench.json``
(``clipseg-bench``), ``train_bench.json`` (``clipseg-bench --train``) and ``results.json``
(``clipseg-bag-eval``); :func:`latency_summary` summarises timings in milliseconds the same way
for bench rows and bag evaluations.  Nothing here imports torch: GPU fields are filled only when
the caller has imported it already.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys

import numpy as np

__all__ = ["latency_summary", "loadavg", "machine_info", "portable_paths"]

#: The repository root: result files name what lies inside it relative to it.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name in the description -> distributions that provide it (the first one installed wins)
_DISTRIBUTIONS = {
    "clipseg_ros": ("clipseg_ros",), "numpy": ("numpy",), "torch": ("torch",),
    "torchvision": ("torchvision",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "onnx": ("onnx",),
    "rosbags": ("rosbags",), "matplotlib": ("matplotlib",), "rclpy": ("ros-jazzy-rclpy",),
}
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ROS_DOMAIN_ID", "RMW_IMPLEMENTATION",
        "FASTDDS_BUILTIN_TRANSPORTS", "CUDA_VISIBLE_DEVICES")


def latency_summary(samples_s) -> dict:
    """Timings given in seconds -> count and median / p90 / p99 / mean / min / max / std in ms."""
    a = np.asarray(list(samples_s), dtype=np.float64) * 1000.0
    keys = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms")
    if a.size == 0:
        return {"count": 0, **{k: None for k in keys}}
    values = (np.median(a), np.percentile(a, 90), np.percentile(a, 99), a.mean(), a.min(), a.max(), a.std())
    return {"count": int(a.size), **{k: round(float(v), 4) for k, v in zip(keys, values)}}


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "hardware")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def loadavg():
    parts = _read("/proc/loadavg").split()
    return [float(v) for v in parts[:3]] if len(parts) >= 3 else None


def _version(dists) -> str | None:
    from importlib import metadata

    for dist in dists:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info(threads: int | None = None, device: str | None = None) -> dict:
    """CPU, cores, memory, platform, library versions, DDS / thread variables, GPU and load."""
    mem_kb = None
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    versions = {name: _version(d) for name, d in _DISTRIBUTIONS.items()}
    try:
        import cv2

        versions["opencv"] = cv2.__version__
    except ImportError:  # pragma: no cover
        versions["opencv"] = None
    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable,
        "memory_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
        "platform": platform.platform(), "python": platform.python_version(),
        "threads": threads, "torch_threads": None, "loadavg_start": loadavg(),
        "versions": {k: v for k, v in versions.items() if v is not None},
        "env": {k: os.environ[k] for k in _ENV if k in os.environ},
        "gpu": None, "cuda": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(torch.device(device) if device else 0)
            info["cuda"] = torch.version.cuda
    if "onnxruntime" in info["versions"]:
        try:
            import onnxruntime

            info["onnxruntime_providers"] = onnxruntime.get_available_providers()
        except ImportError:  # pragma: no cover - metadata without the module
            pass
    return info


def portable_paths(obj):
    """``obj`` (JSON-like: dicts, lists, strings) with every path inside the repository written
    relative to it (``<repo>/clipseg_ros/models/x`` -> ``clipseg_ros/models/x``, also inside
    command lines), so result files committed to the repository name no directory of the machine
    they were made on.  Other values are returned unchanged."""
    prefix = REPO_ROOT.rstrip(os.sep) + os.sep
    if isinstance(obj, str):
        return obj.replace(prefix, "")
    if isinstance(obj, dict):
        return {portable_paths(k): portable_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(portable_paths(v) for v in obj)
    return obj
