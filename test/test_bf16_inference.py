"""precision bf16: the torch backend under bf16 autocast (channels-last).

Real frames (the sample bag: CamVid val), the bundled model's real weights, forward passes in bf16
and fp32 compared label by label; the node with ``precision:=bf16``; the errors.  On a CPU without
native bf16 the same code runs emulated (slowly), so these tests run everywhere; the speed-up on
native-bf16 CPUs is a benchmark (``clipseg-bench --backends torch --precision bf16``), not a test.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clipseg_ros.conventions import DEFAULT_MODEL
from clipseg_ros.devices import cpu_supports_bf16
from clipseg_ros.segmenter import Segmenter, SegmenterConfigError

torch = pytest.importorskip("torch")

SAMPLE_BAG = Path(__file__).resolve().parents[1] / "data" / "sample_bag" / "camvid_val_sample"


@pytest.fixture(scope="module")
def small_default(tmp_path_factory):
    """The bundled model's weights at a 120x160 input (the graph and the network take any size):
    the emulated bf16 path of CPUs without native bf16 then stays quick."""
    from clipseg_ros.bench.factories import with_input_size

    return with_input_size(DEFAULT_MODEL, tmp_path_factory.mktemp("bf16") / "small.clipseg", (120, 160))


@pytest.fixture(scope="module")
def val_frames():
    from clipseg_ros.bag.reader import LabelMapper, open_bag

    with open_bag(SAMPLE_BAG) as bag:
        bag.select_topics()
        return [np.array(f.rgb, copy=True) for f in bag.frames(LabelMapper({}, 11), limit=3)]


def test_bf16_labels_agree_with_fp32_on_real_frames(small_default, val_frames):
    s32 = Segmenter(small_default, device="cpu", backend="torch", precision="fp32", threads=2)
    s16 = Segmenter(small_default, device="cpu", backend="torch", precision="bf16", threads=2)
    assert s16.backend == "torch" and s16.precision == "bf16" and "(bf16)" in s16.description
    assert s16._backend.autocast and not s32._backend.autocast
    if cpu_supports_bf16():
        assert "native bf16" in s16.precision_note
    else:
        assert "emulated" in s16.precision_note
    for rgb in val_frames:
        a = s32(rgb, want_confidence=True)
        b = s16(rgb, want_confidence=True)
        assert b.labels.shape == rgb.shape[:2] and b.labels.dtype == np.uint8
        agree = float((a.labels == b.labels).mean())
        # bf16 keeps 8 mantissa bits: labels flip only where two classes nearly tie
        assert agree >= 0.97, agree
        assert b.confidence.dtype == np.float32
        assert float(np.abs(a.confidence - b.confidence).mean()) < 0.05
    # a batch goes through the same autocast path
    batch = s16.segment_batch(val_frames[:2])
    for rgb, res in zip(val_frames[:2], batch):
        np.testing.assert_array_equal(res.labels, s16(rgb).labels)


def test_bf16_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(SegmenterConfigError, match="needs backend torch"):
        Segmenter(DEFAULT_MODEL, device="cpu", backend="onnxruntime", precision="bf16")
    # an ONNX-only file: bf16 has nothing to run
    from clipseg_ros.model_file import META_NAME

    src = zipfile.ZipFile(DEFAULT_MODEL)
    meta = json.loads(src.read(META_NAME))
    meta["members"] = {"model.onnx": meta["members"]["model.onnx"]}
    meta.pop("int8", None)           # an int8 member (when the bundled file has one) is left out too
    onnx_only = tmp_path / "onnx_only.clipseg"
    with zipfile.ZipFile(onnx_only, "w") as zf:
        zf.writestr(META_NAME, json.dumps(meta))
        zf.writestr("model.onnx", src.read("model.onnx"))
    with pytest.raises(SegmenterConfigError, match=r"onnx_only\.clipseg has no PyTorch weights"):
        Segmenter(onnx_only, device="cpu", backend="torch", precision="bf16")


@pytest.mark.ros
def test_node_runs_bf16_and_says_so(small_default):
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from clipseg_ros.node import SegNode, StartupError
    from ros_helpers import RosHarness, labels_for_one_frame

    with RosHarness("test_bf16") as ros:
        node = ros.add(SegNode("bf16_node", context=ros.context, parameter_overrides=[
            Parameter("model", value=str(small_default)), Parameter("device", value="cpu"),
            Parameter("backend", value="torch"), Parameter("precision", value="bf16"),
            Parameter("threads", value=2)]))
        assert node.segmenter.precision == "bf16" and node.segmenter.backend == "torch"
        rgb = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
        got = labels_for_one_frame(ros, node, rgb)
        want = Segmenter(small_default, device="cpu", backend="torch", precision="bf16", threads=2)(rgb).labels
        np.testing.assert_array_equal(got, want)
        values = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert values["precision"].startswith("bf16 (as requested")
        with pytest.raises(StartupError, match="bf8"):
            SegNode("bf16_bad", context=ros.context, parameter_overrides=[
                Parameter("model", value=str(small_default)), Parameter("precision", value="bf8")])
        with pytest.raises(StartupError, match="needs backend torch"):
            SegNode("bf16_ort", context=ros.context, parameter_overrides=[
                Parameter("model", value=str(small_default)), Parameter("device", value="cpu"),
                Parameter("backend", value="onnxruntime"), Parameter("precision", value="bf16")])
