"""Section 1, model latency: one timed callable per row, rows of a group timed interleaved."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..machine import latency_summary
from .catalogue import RAW, size_name
from .factories import PreparedModel
from .frames import synthetic_frame


class Skip(Exception):
    """This row cannot run here (reason in the message)."""


@dataclass
class Runner:
    call: Callable[[], Any]
    info: dict = field(default_factory=dict)
    close: Callable[[], None] | None = None


def _torch_device(device: str):
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Skip(f"device {device} requested but PyTorch sees no CUDA device")
    return torch.device(device)


#: the only backend that runs each per-row precision
_ROW_PRECISION_BACKEND = {"bf16": ("torch", "openvino"), "int8": ("onnxruntime",)}


def row_precision(pm: PreparedModel, opts) -> str:
    return pm.spec.precision or opts.precision


def make_runner(pm: PreparedModel, backend: str, wh: tuple[int, int], frame: np.ndarray,
                opts: argparse.Namespace) -> Runner:
    """Build the timed callable of one row; raises Skip with the reason when it cannot run."""
    from ..segmenter import Segmenter, SegmenterConfigError

    device = "cuda:0" if opts.device == "cuda" else "cpu"
    precision = row_precision(pm, opts)
    if pm.spec.precision:
        want = _ROW_PRECISION_BACKEND.get(pm.spec.precision)
        if want and backend not in want:
            raise Skip(f"{pm.spec.precision} rows run on {' or '.join(want)} only "
                       f"(as the node runs {pm.spec.precision})")
        if pm.spec.precision == "int8" and device != "cpu":
            raise Skip("the int8 graph runs on the CPU only")
    try:
        if backend == RAW:
            return _raw_runner(pm, wh, device, opts)
        if pm.spec.tv:
            return _tv_runner(pm, backend, frame, device, opts)
        seg = Segmenter(pm.files[size_name(wh)], device=device, backend=backend,
                        precision=precision, threads=opts.threads, trt_cache_dir=opts.trt_cache)
        info = {"backend_detail": seg.description}
        if backend == "onnxruntime":
            info["providers"] = list(seg._backend.providers)
        return Runner(lambda: seg(frame), info)
    except SegmenterConfigError as exc:
        raise Skip(str(exc)) from None


def _tv_runner(pm: PreparedModel, backend: str, frame: np.ndarray, device: str, opts) -> Runner:
    # The Segmenter's own backend classes, so the session options / wrapper are the node's.
    from ..segmenter import OnnxBackend, TorchBackend

    if backend == "openvino":
        raise Skip("torchvision reference rows run on torch and onnxruntime")
    if backend == "torch":
        be = TorchBackend(pm.network, pm.mean, pm.std, device, opts.precision, opts.threads)
        return Runner(lambda: be(frame, False), {"backend_detail": f"torch on {device} ({opts.precision})"})
    if opts.precision == "bf16":
        raise Skip("ONNX Runtime has no bf16 kernels (bf16 rows are PyTorch's)")
    if pm.onnx_bytes is None:
        raise Skip("no ONNX graph (" + (pm.note.split("; ", 1)[-1] or "export not requested") + ")")
    be = OnnxBackend(pm.onnx_bytes, device, opts.precision, opts.threads, opts.trt_cache, source=pm.onnx_path)
    return Runner(lambda: be(frame, False),
                  {"backend_detail": f"onnxruntime [{','.join(be.providers)}] on {device}",
                   "providers": list(be.providers)})


def _raw_runner(pm: PreparedModel, wh, device: str, opts) -> Runner:
    import torch

    if pm.network is None:
        raise Skip("model file has no PyTorch weights")
    if getattr(pm, "native", False):
        raise Skip("native input size: the bare forward is the default row's at that size")
    dev = _torch_device(device)
    from ..networks import inference_network

    net = inference_network(pm.network).to(dev)     # as DeployWrapper runs it (guidance folded)
    dtype = torch.float16 if opts.precision == "fp16" else torch.float32
    net = net.to(dtype)
    autocast = opts.precision == "bf16"          # fp32 weights, bf16 per operation (as TorchBackend)
    # Same layout as DeployWrapper feeds the network: the NHWC frame permuted to NCHW, i.e.
    # channels-last strides (a contiguous NCHW tensor is measurably slower on CPU).
    x = torch.randn(1, wh[1], wh[0], 3, device=dev, dtype=dtype).permute(0, 3, 1, 2)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def call():
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16, enabled=autocast):
            out = net(x)["logits"]
        sync()
        return out

    def close():
        pm.network = net.float().cpu()

    return Runner(call, {"backend_detail": f"bare network forward on {device} ({opts.precision})"}, close)



def _row_base(pm: PreparedModel, backend: str, wh, opts) -> dict:
    spec = pm.spec
    return {
        "kind": "latency", "model": spec.key, "label": pm.label, "family": spec.family,
        "variant": spec.variant, "twin": spec.twin, "backend": backend, "device": opts.device,
        "precision": row_precision(pm, opts), "size": size_name(wh), "width": wh[0], "height": wh[1],
        "pixels": wh[0] * wh[1], "params": pm.params, "note": pm.note, "status": "ok",
    }


def time_group(runners: list[tuple[dict, Runner]], opts, progress) -> None:
    """Warm up, then time the runners of one group (interleaved unless --no-interleave).

    Each row is one unit of the progress bar, advanced per call and completed when the row ends.
    """
    total = opts.warmup + opts.iters
    samples = {id(r): [] for _, r in runners}
    spent = {id(r): 0.0 for _, r in runners}
    shown = {id(r): 0.0 for _, r in runners}

    def one(runner, record):
        t0 = time.perf_counter()
        runner.call()
        dt = time.perf_counter() - t0
        if record:
            samples[id(runner)].append(dt)
            spent[id(runner)] += dt
        shown[id(runner)] += 1.0 / total
        progress.update(1.0 / total)

    def done(runner) -> bool:
        n = len(samples[id(runner)])
        return n >= opts.iters or (n >= 3 and spent[id(runner)] > opts.max_row_seconds)

    def finish(runner):
        progress.update(max(0.0, 1.0 - shown[id(runner)]))
        shown[id(runner)] = 1.0

    def fail(row, runner, exc):
        row["status"], row["note"] = "error", f"{type(exc).__name__}: {exc}"
        runners.remove((row, runner))
        finish(runner)

    if opts.interleave and len(runners) > 1:
        for row, runner in list(runners):
            try:
                for _ in range(opts.warmup):
                    one(runner, False)
            except Exception as exc:  # noqa: BLE001 - one bad row does not stop the group
                fail(row, runner, exc)
        settle_s = opts.settle_ms / 1000.0
        while runners and not all(done(r) for _, r in runners):
            for row, runner in list(runners):
                if done(runner):
                    continue
                try:
                    # Untimed calls first: the previous row's thread pool may still be spinning
                    # (ONNX Runtime spins tens of ms after a run) and this row's caches are cold.
                    t0 = time.perf_counter()
                    runner.call()
                    while time.perf_counter() - t0 < settle_s:
                        runner.call()
                    for _ in range(opts.block):
                        if done(runner):
                            break
                        one(runner, True)
                except Exception as exc:  # noqa: BLE001
                    fail(row, runner, exc)
    else:
        for row, runner in list(runners):
            try:
                for _ in range(opts.warmup):
                    one(runner, False)
                while not done(runner):
                    one(runner, True)
            except Exception as exc:  # noqa: BLE001
                fail(row, runner, exc)
    for row, runner in runners:
        s = samples[id(runner)]
        row.update(latency_summary(s))
        row["fps"] = round(1000.0 / row["median_ms"], 2) if row["median_ms"] else None
        row["samples_ms"] = [round(v * 1000.0, 4) for v in s]
        if len(s) < opts.iters:
            row["note"] = ((row["note"] + "; ") if row["note"] else "") + \
                f"stopped after {len(s)} iterations (--max-row-seconds)"
        finish(runner)


def run_latency(models: list[PreparedModel], sizes, backends, opts, progress, log) -> list[dict]:
    rows: list[dict] = []
    for wh in sizes:
        frame = synthetic_frame(*wh, seed=1)
        # one group per size: every row of the size, all backends, timed interleaved, so that
        # ratios between backends (the default on ONNX Runtime over LRASPP on PyTorch) come
        # from the same minutes of the machine
        group: list[tuple[dict, Runner]] = []
        for backend in backends:
            for pm in models:
                row = _row_base(pm, backend, wh, opts)
                rows.append(row)
                if pm.error:
                    row.update(status="error", note=pm.error)
                    progress.update(1)
                    continue
                try:
                    runner = make_runner(pm, backend, wh, frame, opts)
                    row.update(runner.info)
                    group.append((row, runner))
                except Skip as exc:
                    row.update(status="skipped", note=str(exc))
                    progress.update(1)
                except Exception as exc:  # noqa: BLE001 - one bad row does not stop the run
                    row.update(status="error", note=f"{type(exc).__name__}: {exc}")
                    progress.update(1)
        progress.set_description(size_name(wh))
        time_group(group, opts, progress)
        for _, runner in group:
            if runner.close:
                runner.close()
        del group
    return rows
