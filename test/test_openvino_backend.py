"""backend openvino: the model file's ONNX graph compiled by OpenVINO for the CPU, fp32 and bf16.

Real frames (the sample bag: CamVid val), the bundled model's graph, labels compared with ONNX
Runtime's label by label; the node with ``backend:=openvino``; ``auto``'s CPU pick; the errors;
and the crash that kept these tests in a process of their own until stop 43 (two OpenVINO Cores
freed in creation order left the thread's alternate signal stack unmapped, and the next child
process's SIGCHLD killed pytest).  The speed-up is a benchmark (``clipseg-bench --backends
onnxruntime,openvino``), not a test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipseg_ros.conventions import DEFAULT_MODEL
from clipseg_ros.model_file import ModelFileError
from clipseg_ros.segmenter import Segmenter, SegmenterConfigError

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

SAMPLE_BAG = Path(__file__).resolve().parents[1] / "data" / "sample_bag" / "camvid_val_sample"


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """The bundled model at a 120x160 input (quick on any CPU)."""
    from clipseg_ros.bench.factories import with_input_size

    return with_input_size(DEFAULT_MODEL, tmp_path_factory.mktemp("ov") / "small.clipseg", (120, 160))


@pytest.fixture(scope="module")
def val_frames():
    from clipseg_ros.bag.reader import LabelMapper, open_bag

    with open_bag(SAMPLE_BAG) as bag:
        bag.select_topics()
        return [np.array(f.rgb, copy=True) for f in bag.frames(LabelMapper({}, 11), limit=3)]


@pytest.mark.parametrize("precision, min_agree", [("fp32", 0.999), ("bf16", 0.97)])
def test_openvino_agrees_with_onnxruntime_on_real_frames(small_default, val_frames, precision, min_agree):
    ref = Segmenter(small_default, device="cpu", backend="onnxruntime", precision="fp32", threads=2)
    ov = Segmenter(small_default, device="cpu", backend="openvino", precision=precision, threads=2)
    assert ov.backend == "openvino" and ov.precision == precision
    assert f"openvino on cpu ({precision})" in ov.description
    assert str(ov._backend.precision_used) == ("<Type: 'bfloat16'>" if precision == "bf16" and ov._backend.native_bf16
                                               else "<Type: 'float32'>")
    for rgb in val_frames:
        a = ref(rgb, want_confidence=True)
        b = ov(rgb, want_confidence=True)
        assert b.labels.shape == rgb.shape[:2] and b.labels.dtype == np.uint8
        assert b.confidence.dtype == np.float32 and b.confidence.shape == rgb.shape[:2]
        agree = float((a.labels == b.labels).mean())
        assert agree >= min_agree, agree
        assert float(np.abs(a.confidence - b.confidence).mean()) < 0.05
        # labels-only path (no confidence asked) gives the same labels as the full graph
        np.testing.assert_array_equal(ov(rgb).labels, b.labels)
    assert ov._backend.batchable
    for rgb, res in zip(val_frames[:2], ov.segment_batch(val_frames[:2])):
        np.testing.assert_array_equal(res.labels, ov(rgb).labels)


def test_openvino_auto_precision_is_fp32_and_errors_name_what_is_wrong(small_default, tmp_path):
    seg = Segmenter(small_default, device="cpu", backend="openvino", threads=2)
    assert seg.precision == "fp32" and "bf16 on request" in seg.precision_note
    with pytest.raises(SegmenterConfigError, match="int8 needs backend onnxruntime"):
        Segmenter(small_default, device="cpu", backend="openvino", precision="int8")
    from clipseg_ros.segmenter import OpenVinoBackend

    with pytest.raises(SegmenterConfigError, match="runs on the CPU; device is cuda:0"):
        OpenVinoBackend(b"x", "cuda:0", "fp32", 2)
    with pytest.raises(SegmenterConfigError, match="has no ONNX graph"):
        OpenVinoBackend(None, "cpu", "fp32", 2, source="weights_only.clipseg")
    # a graph OpenVINO cannot read: a clear error naming the file
    with pytest.raises(ModelFileError, match=r"bad\.clipseg.*OpenVINO cannot compile"):
        OpenVinoBackend(b"not an onnx graph", "cpu", "fp32", 2, source=tmp_path / "bad.clipseg")


@pytest.mark.ros
def test_node_runs_openvino_bf16_and_says_so(small_default):
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from clipseg_ros.node import SegNode, StartupError
    from ros_helpers import RosHarness, labels_for_one_frame

    with RosHarness("test_openvino") as ros:
        node = ros.add(SegNode("ov_node", context=ros.context, parameter_overrides=[
            Parameter("model", value=str(small_default)), Parameter("device", value="cpu"),
            Parameter("backend", value="openvino"), Parameter("precision", value="bf16"),
            Parameter("threads", value=2)]))
        assert node.segmenter.precision == "bf16" and node.segmenter.backend == "openvino"
        rgb = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        got = labels_for_one_frame(ros, node, rgb)
        want = Segmenter(small_default, device="cpu", backend="openvino", precision="bf16", threads=2)(rgb).labels
        np.testing.assert_array_equal(got, want)
        values = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert values["precision"].startswith("bf16 (as requested")
        assert "openvino" in values["backend"]
        with pytest.raises(StartupError, match="backend 'openvinoo' is not one of"):
            SegNode("ov_bad", context=ros.context, parameter_overrides=[
                Parameter("model", value=str(small_default)), Parameter("backend", value="openvinoo")])


def test_bench_times_openvino_rows(tmp_path):
    """clipseg-bench --backends ...,openvino: the default at fp32 and bf16 on OpenVINO; the int8
    and torchvision rows are skipped there with the reason."""
    import json

    from clipseg_ros.bench import cli as bench

    out = tmp_path / "b"
    rc = bench.main(["--quick", "--out", str(out), "--sizes", "64x48", "--models", "deployed,lraspp",
                     "--backends", "onnxruntime,openvino", "--no-raw", "--threads", "2", "--warmup", "0",
                     "--iters", "2", "--settle-ms", "0", "--no-overhead", "--no-memory", "--no-publish",
                     "--no-plot"])
    assert rc == 0
    by = {(r["model"], r["backend"]): r for r in json.loads((out / "bench.json").read_text())["rows"]}
    ov16 = by[("default-native-bf16", "openvino")]
    assert ov16["status"] == "ok" and "openvino on cpu (bf16)" in ov16["backend_detail"], ov16
    assert by[("default-native", "openvino")]["status"] == "ok"
    assert by[("default-native-int8", "openvino")]["status"] == "skipped"
    assert "torchvision reference rows" in by[("lraspp-mbv3", "openvino")]["note"]


@pytest.mark.parametrize("flags, want", [({"avx512f", "avx512_bf16"}, ("openvino", "bf16")),
                                         ({"avx512f", "amx_bf16"}, ("openvino", "bf16")),
                                         ({"avx512f", "avx2"}, ("onnxruntime", "fp32")),
                                         (None, ("onnxruntime", "fp32"))])
def test_auto_picks_openvino_bf16_only_on_a_cpu_with_native_bf16(small_default, monkeypatch, flags, want):
    """backend auto + precision auto on the CPU: OpenVINO bf16 where the CPU has native bf16
    kernels, ONNX Runtime fp32 elsewhere (OpenVINO would compute bf16 in f32 there)."""
    from clipseg_ros import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    seg = Segmenter(small_default, device="cpu", threads=2)
    assert (seg.backend, seg.precision) == want
    if want[0] == "openvino":
        assert seg.precision_note.startswith("auto: bf16 on openvino (this CPU has native bf16")
        # auto + bf16 asked for goes the same way; fp32 or int8 asked for stays on ONNX Runtime
        assert Segmenter(small_default, device="cpu", precision="bf16", threads=2).backend == "openvino"
        assert Segmenter(small_default, device="cpu", precision="fp32", threads=2).backend == "onnxruntime"
    rgb = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert seg(rgb).labels.shape == (120, 160)


def test_auto_keeps_onnxruntime_when_openvino_is_not_installed(small_default, monkeypatch):
    import importlib.util
    import sys

    from clipseg_ros import devices

    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx512_bf16"})
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    seg = Segmenter(small_default, device="cpu", threads=2)
    assert (seg.backend, seg.precision) == ("onnxruntime", "fp32")


CHILD = """
import gc, signal, subprocess, sys
import numpy as np
from clipseg_ros.segmenter import Segmenter
a = Segmenter(sys.argv[1], device="cpu", backend="openvino", precision="fp32", threads=1)
b = Segmenter(sys.argv[1], device="cpu", backend="openvino", precision="fp32", threads=1)
a(np.zeros((48, 64, 3), np.uint8)); b(np.zeros((48, 64, 3), np.uint8))
del a; gc.collect()
del b; gc.collect()                      # freed in the order they were made
# Python's handlers run on the alternate stack; torch's DataLoader installs one for SIGCHLD
signal.signal(signal.SIGCHLD, lambda *_: None)
for _ in range(3):
    subprocess.run([sys.executable, "-c", "pass"], check=True)
print("survived")
"""


def test_two_backends_freed_in_creation_order_leave_child_processes_safe(small_default):
    """The stop-42 crash, reproduced in a child process: before the process-wide Core
    (``segmenter.openvino_core``), this child died with SIGSEGV (exit -11) when its first
    subprocess exited."""
    import subprocess
    import sys

    from clipseg_ros.segmenter import openvino_core

    res = subprocess.run([sys.executable, "-c", CHILD, str(small_default)], capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert res.returncode == 0 and "survived" in res.stdout, (res.returncode, res.stderr[-3000:])
    assert openvino_core() is openvino_core()
