"""Which device to run on: one answer for the node, the tools and training.

``resolve_device("auto")`` is ``cuda:<local_rank>`` when a GPU is usable (PyTorch sees one, or,
for the runtime, ONNX Runtime's CUDA provider is installed), else ``cpu``.  Checking costs no torch
import where no NVIDIA driver exists (importing torch costs hundreds of MB of RSS and seconds).
"""
from __future__ import annotations

import os
import sys


class DeviceError(ValueError):
    """A device name that is none of auto, cpu, cuda, cuda:N."""


def nvidia_driver_present() -> bool:
    """Cheap check (no torch import) whether an NVIDIA GPU can exist here: the driver's device
    nodes (desktop/server) or the Tegra ones (Jetson).  Only Linux is checked; elsewhere, True."""
    if not sys.platform.startswith("linux"):
        return True
    return (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidia0")
            or os.path.exists("/dev/nvhost-ctrl") or os.path.exists("/dev/nvgpu"))


def cuda_available() -> bool:
    """Whether PyTorch can use a CUDA device (False, without importing torch, where no driver is)."""
    if "torch" not in sys.modules and not nvidia_driver_present():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


#: /proc/cpuinfo flags of native bf16 kernels (without them bf16 runs emulated or in f32)
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16_flag() -> bool | None:
    """Whether ``/proc/cpuinfo`` lists AVX512-BF16 or AMX-BF16; None where the flags cannot be read."""
    flags = cpu_flags()
    return None if flags is None else bool(NATIVE_BF16_FLAGS & flags)


def cpu_supports_bf16() -> bool:
    """True when oneDNN reports native bf16 kernels on this CPU (AVX512-BF16 / AMX-BF16).  Elsewhere
    bf16 still runs, emulated, and slower than fp32.  Imports torch."""
    try:
        import torch

        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            # oneDNN also says yes on plain AVX512 (emulated, slow); require the native flag
            return cpu_has_native_bf16_flag() is not False
    except (ImportError, AttributeError, RuntimeError):
        pass
    return False


def _onnxruntime_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def resolve_device(device: str | None, local_rank: int = 0, *, onnxruntime: bool = True) -> str:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` -> ``cpu`` or ``cuda:N``.  ``local_rank`` is the
    GPU ``auto`` and ``cuda`` mean (one process per GPU under torchrun); ``onnxruntime=False``
    counts only GPUs PyTorch can use (training)."""
    dev = (device or "auto").strip().lower()
    if dev == "auto":
        if cuda_available() or (onnxruntime and _onnxruntime_cuda()):
            return f"cuda:{local_rank}"
        return "cpu"
    if dev == "cpu":
        return "cpu"
    if dev == "cuda":
        return f"cuda:{local_rank}"
    if dev.startswith("cuda:") and dev[5:].isdigit():
        return dev
    raise DeviceError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
