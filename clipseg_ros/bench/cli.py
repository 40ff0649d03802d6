"""``clipseg-bench`` command line: options, the run of the three sections, the summary."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
from pathlib import Path

from ..segmenter import PRECISIONS
from ..machine import loadavg, machine_info, portable_paths
from .catalogue import (BACKEND_CHOICES, DEFAULT_SIZES, MODEL_ALIASES, MODEL_SPECS, PACKAGED_DEFAULT,
                        QUICK_MODELS, QUICK_SIZES, RAW, SCHEMA, BenchError, parse_size, resolve_models, shown_path,
                        size_name)
from .factories import ModelFactory, PreparedModel
from .latency import run_latency
from .memory import run_node_memory
from .overhead import run_overhead
from .report import compute_ratios, format_overhead, format_table, write_markdown, write_plot


def cuda_problem() -> str | None:
    """Why ``--device cuda`` cannot run here (None when a CUDA path exists)."""
    torch_ok = False
    try:
        import torch

        torch_ok = torch.cuda.is_available()
    except ImportError:
        pass
    try:
        import onnxruntime as ort

        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    gpu_providers = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    if torch_ok or gpu_providers:
        return None
    return ("--device cuda: no CUDA device here (torch.cuda.is_available() is False and ONNX Runtime "
            f"has only {', '.join(providers) or 'no'} providers); every CUDA row is skipped. "
            "Run on a machine with an NVIDIA GPU (onnxruntime-gpu for the CUDA/TensorRT providers) "
            "or use --device cpu.")



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clipseg-bench",
        description="Latency of the clipseg segmenters (PyTorch / ONNX Runtime) against torchvision "
                    "references, the node's per-frame overhead and the node's peak memory. "
                    "Creates ROS contexts for the publish and memory sections but does not set any "
                    "DDS variable: `make bench` keeps DDS on this machine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train", action="store_true",
                   help="training throughput instead (clipseg-bench --train --help for its options)")
    p.add_argument("--sizes", default=None, help=f"frame = model input sizes WxH (default {DEFAULT_SIZES}; "
                   f"--quick: {QUICK_SIZES})")
    p.add_argument("--models", default=None,
                   help=f"subset: {', '.join(MODEL_SPECS)} or groups {', '.join(MODEL_ALIASES)} "
                        f"(default all; --quick: {QUICK_MODELS})")
    p.add_argument("--model", type=Path, default=None,
                   help=f"default model file (default {PACKAGED_DEFAULT})")
    p.add_argument("--backends", default="torch,onnxruntime",
                   help=f"comma list of {', '.join(BACKEND_CHOICES)}")
    p.add_argument("--no-raw", dest="raw", action="store_false", help="skip the bare network forward rows")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per row (default 3; --quick 1)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per row (default 20; --quick 3)")
    p.add_argument("--max-row-seconds", type=float, default=30.0,
                   help="stop timing a row after this much time (at least 3 iterations)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for PyTorch and ONNX Runtime (default: usable cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    # every row runs at one precision: fp32, fp16 or bf16 (int8 graphs exist only in files that were
    # quantized; time those with clipseg-quantize, which records both latencies)
    p.add_argument("--precision", choices=[x for x in PRECISIONS if x in ("fp32", "fp16", "bf16")], default=None,
                   help="default fp32 on cpu, fp16 on cuda (fp16 needs cuda; bf16 times the torch rows "
                        "under bf16 autocast, ONNX Runtime rows are skipped)")
    p.add_argument("--trt-cache", default=None,
                   help="TensorRT engine cache dir (default: the Segmenter's, ~/.cache/clipseg_ros/trt)")
    p.add_argument("--no-interleave", dest="interleave", action="store_false",
                   help="time rows one after another instead of round robin")
    p.add_argument("--block", type=int, default=5,
                   help="interleaved: timed calls per row per turn (back to back)")
    p.add_argument("--settle-ms", type=float, default=50.0,
                   help="interleaved: untimed calls at the start of each turn for at least this long")
    p.add_argument("--overhead-size", default="640x480", help="frame size of the node-overhead section")
    p.add_argument("--overhead-iters", type=int, default=None, help="timed calls per step (default 50; --quick 10)")
    p.add_argument("--no-overhead", dest="overhead", action="store_false", help="skip the node-overhead section")
    p.add_argument("--no-publish", dest="publish", action="store_false",
                   help="do not publish through rclpy in the overhead section (no ROS context)")
    p.add_argument("--no-memory", dest="memory", action="store_false", help="skip the seg_node memory row")
    p.add_argument("--node-seconds", type=float, default=None, help="how long to feed seg_node (default 5; --quick 2)")
    p.add_argument("--node-backend", default="auto", help="backend parameter for seg_node")
    p.add_argument("--node-precision", default="auto", choices=PRECISIONS,
                   help="precision parameter for seg_node (default auto, the node's own default)")
    p.add_argument("--node-startup-timeout", type=float, default=120.0,
                   help="seconds to wait for seg_node's first labels")
    p.add_argument("--node-executable", default=None,
                   help="the seg_node executable (default: seg_node next to this Python, or on PATH)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, few models and iterations: a smoke test, not a measurement")
    p.add_argument("--out", type=Path, default=None, help="output folder (default bench_results/<timestamp>)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    a = p.parse_args(None if argv is None else [str(v) for v in argv])
    q = a.quick
    a.sizes = a.sizes or (QUICK_SIZES if q else DEFAULT_SIZES)
    a.models = a.models or (QUICK_MODELS if q else "all")
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 3)
    a.iters = a.iters if a.iters is not None else (3 if q else 20)
    a.overhead_iters = a.overhead_iters if a.overhead_iters is not None else (10 if q else 50)
    a.node_seconds = a.node_seconds if a.node_seconds is not None else (2.0 if q else 5.0)
    a.precision = a.precision or ("fp16" if a.device == "cuda" else "fp32")
    if a.precision == "fp16" and a.device != "cuda":
        p.error("--precision fp16 needs --device cuda")
    if a.warmup < 0 or a.iters < 1 or a.overhead_iters < 1 or a.block < 1 or a.settle_ms < 0:
        p.error("--warmup and --settle-ms must be >= 0, --iters, --overhead-iters and --block >= 1")
    if a.threads is None:
        try:
            a.threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            a.threads = os.cpu_count() or 1
    try:
        a.size_list = [parse_size(s) for s in a.sizes.split(",") if s.strip()]
        parse_size(a.overhead_size)
        a.model_keys = resolve_models(a.models)
    except BenchError as exc:
        p.error(str(exc))
    a.backend_list = [b.strip() for b in a.backends.split(",") if b.strip()]
    bad = [b for b in a.backend_list if b not in BACKEND_CHOICES]
    if bad or not a.backend_list:
        p.error(f"--backends: {', '.join(bad) or 'empty'}; choose from {', '.join(BACKEND_CHOICES)}")
    if a.out is None:
        a.out = Path("bench_results") / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return a


class _NullBar:
    def update(self, n=1):
        pass

    def set_description(self, s):
        pass

    def close(self):
        pass


def _progress(total: float):
    try:
        from tqdm import tqdm
    except ImportError:
        return _NullBar()
    return tqdm(total=total, unit="row", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} rows [{elapsed}<{remaining}]")


def run_bench(opts: argparse.Namespace) -> dict:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[clipseg-bench] {msg}", file=sys.stderr, flush=True)

    import torch

    torch.set_num_threads(opts.threads)
    if opts.device == "cuda":
        problem = cuda_problem()
        if problem:
            log(problem)
    if (opts.publish or opts.memory) and "FASTDDS_BUILTIN_TRANSPORTS" not in os.environ:
        log("note: FASTDDS_BUILTIN_TRANSPORTS is not set, so the ROS parts use the default DDS transports "
            "(network); `make bench` restricts them to this machine")
    machine = machine_info(opts.threads)
    want_onnx = "onnxruntime" in opts.backend_list
    backends = list(opts.backend_list) + ([RAW] if opts.raw else [])
    result: dict = {"schema": SCHEMA, "machine": machine}
    with tempfile.TemporaryDirectory(prefix="clipseg_bench_") as tmp:
        factory = ModelFactory(Path(tmp), want_onnx, opts.model, log)
        log(f"preparing {len(opts.model_keys)} model(s) at {len(opts.size_list)} size(s)")
        prepared = []
        for key in opts.model_keys:
            spec = MODEL_SPECS[key]
            try:
                prepared.append(factory.prepare(spec, opts.size_list))
            except BenchError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep going, the rows say why
                prepared.append(PreparedModel(spec, spec.key, error=f"preparation failed: "
                                              f"{type(exc).__name__}: {exc}"))
        n_rows = len(prepared) * len(opts.size_list) * len(backends)
        bar = _progress(n_rows)
        try:
            rows = run_latency(prepared, opts.size_list, backends, opts, bar, log)
        finally:
            bar.close()
        overhead = None
        if opts.overhead:
            log(f"node per-frame overhead at {opts.overhead_size}")
            overhead = run_overhead(factory.default_path, parse_size(opts.overhead_size),
                                    opts.backend_list, opts, log)
        memory = run_node_memory(factory.default_path, opts, out, log)
    machine["loadavg_end"] = loadavg()
    result.update(
        settings={"sizes": [size_name(s) for s in opts.size_list], "models": opts.model_keys,
                  "backends": backends, "device": opts.device, "precision": opts.precision,
                  "threads": opts.threads, "warmup": opts.warmup, "iters": opts.iters,
                  "interleave": opts.interleave, "block": opts.block, "settle_ms": opts.settle_ms,
                  "max_row_seconds": opts.max_row_seconds,
                  "overhead_size": opts.overhead_size, "overhead_iters": opts.overhead_iters,
                  "node_seconds": opts.node_seconds, "quick": opts.quick, "trt_cache": opts.trt_cache,
                  "argv": [shown_path(v) if os.path.isabs(v) and os.path.exists(v) else v for v in sys.argv[1:]]},
        default_model={"label": factory.default_label, "path": shown_path(factory.default_path)},
        rows=rows, overhead=overhead, memory=memory,
    )
    result["ratios"] = compute_ratios(rows, overhead, factory.default_label)
    result = portable_paths(result)         # no directories of this machine in the results
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    write_markdown(out / "bench.md", result)
    if opts.plot:
        write_plot(out / "latency_vs_size.png", rows)
    return result


def print_summary(result: dict, out: Path) -> None:
    print(format_table(result["rows"]))
    r = result["ratios"]
    if r["twins"]:
        print("\nguided / baseline (median):")
        for t in r["twins"]:
            print(f"  {t['family']:<12} {t['backend']:<12} {t['size']:<9} {t['ratio']:.3f}"
                  + (f"  (paired {t['paired_ratio']:.3f})" if t["paired_ratio"] else ""))
    for c in (r["default_vs_lraspp"], r.get("deployed_default_vs_lraspp") or {"status": "-"}):
        if c["status"] == "ok":
            print(f"\n{c['default']} ({c['default_backend']}, {c.get('default_precision')}) / LRASPP torch "
                  f"at {c['size']}: {c['ratio']:.3f}"
                  + (f" ({c['note']})" if c.get("note") else ""))
        else:
            print(f"\ndefault / LRASPP: {c.get('note')}")
    if result.get("overhead"):
        print("\n" + format_overhead(result["overhead"]))
    mem = result["memory"]
    if mem.get("status") == "ok":
        print(f"\nseg_node peak RSS (VmHWM): {mem['peak_rss_mb']} MB ({mem['frames']} frames, {mem['fps']} FPS)")
    else:
        print(f"\nseg_node memory: {mem.get('status')}: {mem.get('note')}")
    written = [out / "bench.json", out / "bench.md", out / "latency_vs_size.png"]
    print("\nwrote " + ", ".join(str(p) for p in written if p.exists()))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train" in argv:
        # Training throughput lives with the training code (a robot installs only the runtime;
        # this import happens only for --train).
        argv.remove("--train")
        try:
            from clipseg_training.train_bench import main as train_main
        except ImportError as exc:
            print(f"clipseg-bench --train needs the training package (pip install '.[train]'): {exc}",
                  file=sys.stderr)
            return 2
        return train_main(argv)
    opts = parse_args(argv)
    try:
        result = run_bench(opts)
    except BenchError as exc:
        print(f"clipseg-bench: error: {exc}", file=sys.stderr)
        return 2
    print_summary(result, Path(opts.out))
    if result["rows"] and all(r["status"] != "ok" for r in result["rows"]):
        print("clipseg-bench: no latency row could run (see the notes above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
