"""int8 graphs in model files (``python -m clipseg_ros.quantize``), their checks, and who runs them.

The bundled CamVid model is really quantized (ONNX Runtime static QDQ, per-channel) on frames of
the sample bag, checked against PyTorch, scored on the bag; then the file's int8 member is run by
the Segmenter and the node, and broken in each way a user could meet: corrupt, mismatched,
undescribed, unreadable."""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from clipseg_ros import quantize  # noqa: E402
from clipseg_ros.conventions import DEFAULT_MODEL  # noqa: E402
from clipseg_ros.model_file import INT8_NAME, META_NAME, ModelFile, ModelFileError  # noqa: E402
from clipseg_ros.segmenter import Segmenter, SegmenterConfigError  # noqa: E402
from ros_helpers import known_model, pattern_image, without_int8  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE_BAG = REPO / "data" / "sample_bag" / "camvid_val_sample"


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory) -> Path:
    """The bundled CamVid model without an int8 member (whether or not the bundled file has one)."""
    return without_int8(DEFAULT_MODEL, tmp_path_factory.mktemp("plain") / "camvid_fp32.clipseg")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory, plain_model) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("int8") / "camvid_int8.clipseg"
    entry = quantize.add_int8_member(plain_model, out, SAMPLE_BAG, count=24, val_bag=SAMPLE_BAG,
                                     threads=2, log=lambda *_: None)
    return out, entry


def _rewrite(src: Path, dst: Path, meta_fn=None, members_fn=None, rehash: bool = True) -> Path:
    with zipfile.ZipFile(src) as zf:
        meta = json.loads(zf.read(META_NAME))
        members = {n: zf.read(n) for n in zf.namelist() if n != META_NAME}
    if members_fn:
        members_fn(members)
    if rehash:
        meta["members"] = {n: hashlib.sha256(d).hexdigest() for n, d in members.items()}
    if meta_fn:
        meta_fn(meta)
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr(META_NAME, json.dumps(meta))
        for n, d in members.items():
            zf.writestr(n, d)
    return dst


def test_the_int8_member_is_made_checked_and_recorded(int8_model, plain_model):
    path, entry = int8_model
    mf = ModelFile(path)
    assert mf.int8_bytes is not None and mf.meta.int8 == entry
    assert mf.meta.members[INT8_NAME] == hashlib.sha256(mf.int8_bytes).hexdigest()
    # everything else of the file is unchanged
    orig = ModelFile(plain_model)
    assert mf.onnx_bytes == orig.onnx_bytes and mf.meta.class_names == orig.meta.class_names
    assert entry["calibration_frames"] == 24 and "QDQ" in entry["quantization"]
    assert entry["agreement_with_torch"] >= quantize.MIN_AGREEMENT
    assert entry["val_source"].startswith("camvid_val_sample (101 frames)")
    assert 30 < entry["val_miou"] <= 100 and 30 < entry["fp32_val_miou"] <= 100
    assert abs(entry["val_miou"] - entry["fp32_val_miou"]) < 10
    assert set(entry["latency_ms"]) == {"fp32", "int8"} and all(v > 0 for v in entry["latency_ms"].values())
    # the graph really is quantized: QDQ nodes and int8 weights
    import onnx

    graph = onnx.load_from_string(mf.int8_bytes).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)


def test_the_segmenter_runs_int8_and_it_agrees_with_fp32(int8_model):
    path, _ = int8_model
    s8 = Segmenter(path, device="cpu", precision="int8", threads=2)
    s32 = Segmenter(path, device="cpu", precision="fp32", threads=2)
    assert s8.precision == "int8" and "(int8)" in s8.description
    img = pattern_image(360, 480, seed=3)
    a, b = s8(img).labels, s32(img).labels
    assert a.shape == b.shape == (360, 480)
    assert np.mean(a == b) >= 0.8          # int8 moves boundary pixels, not whole regions
    conf = s8(img, want_confidence=True).confidence
    assert conf.shape == (360, 480) and 0 < conf.min() <= conf.max() <= 1.0


def _with_record(src: Path, dst: Path, m8: float, m32: float) -> Path:
    def meta_fn(meta):
        meta["int8"]["val_miou"], meta["int8"]["fp32_val_miou"] = m8, m32

    return _rewrite(src, dst, meta_fn=meta_fn)


def test_auto_takes_int8_only_within_half_a_miou_and_when_faster(int8_model, plain_model, tmp_path):
    path, _ = int8_model
    far = Segmenter(_with_record(path, tmp_path / "far.clipseg", 60.0, 61.0), device="cpu",
                    backend="onnxruntime", threads=2)
    assert far.precision == "fp32" and "1.00 below" in far.precision_note
    near = Segmenter(_with_record(path, tmp_path / "near.clipseg", 60.8, 61.0), device="cpu",
                     backend="onnxruntime", threads=2)
    ms8, ms32 = map(float, re.search(r"([\d.]+) ms int8 vs ([\d.]+) ms fp32", near.precision_note).groups())
    assert near.precision == ("int8" if ms8 < ms32 else "fp32"), near.precision_note
    # no int8 member: auto is fp32 and says why; int8 asked for is an error that says what to do
    plain = Segmenter(plain_model, device="cpu", backend="onnxruntime")
    assert plain.precision == "fp32" and "no int8 graph" in plain.precision_note
    with pytest.raises(SegmenterConfigError, match=r"no model_int8.onnx member.*clipseg_ros.quantize"):
        Segmenter(plain_model, device="cpu", precision="int8")
    with pytest.raises(SegmenterConfigError, match="needs backend onnxruntime"):
        Segmenter(path, device="cpu", backend="torch", precision="int8")


def test_broken_int8_members_are_clear_errors(int8_model, tmp_path):
    path, _ = int8_model

    def flip(members):
        data = bytearray(members[INT8_NAME])
        data[len(data) // 2] ^= 0xFF
        members[INT8_NAME] = bytes(data)

    corrupt = _rewrite(path, tmp_path / "corrupt.clipseg", members_fn=flip, rehash=False)
    with pytest.raises(ModelFileError, match=r"corrupt.clipseg: member model_int8.onnx is corrupt \(sha256"):
        ModelFile(corrupt)
    # the int8 graph of another model (4 classes, not 11), with a matching sha256
    other_src = Path(known_model(2))
    other = quantize.add_int8_member(other_src, tmp_path / "other.clipseg", SAMPLE_BAG, count=8,
                                     log=lambda *_: None)
    assert other["member"] == INT8_NAME
    foreign = ModelFile(tmp_path / "other.clipseg").int8_bytes

    def swap(members):
        members[INT8_NAME] = foreign

    mismatched = _rewrite(path, tmp_path / "mismatched.clipseg", members_fn=swap)
    with pytest.raises(ModelFileError, match=r"model_int8.onnx outputs 4 classes .* 11"):
        ModelFile(mismatched)

    def garbage(members):
        members[INT8_NAME] = b"\x08\x07not an onnx graph at all"

    with pytest.raises(ModelFileError, match="model_int8.onnx cannot be checked against meta.json"):
        ModelFile(_rewrite(path, tmp_path / "garbage.clipseg", members_fn=garbage))

    def undescribed(meta):
        del meta["int8"]

    with pytest.raises(ModelFileError, match="model_int8.onnx is not described"):
        ModelFile(_rewrite(path, tmp_path / "undescribed.clipseg", meta_fn=undescribed))


def test_quantize_refuses_what_it_cannot_do(plain_model, tmp_path, capsys):
    assert quantize.main([str(plain_model), "--calib", str(tmp_path / "nowhere"), "--out",
                          str(tmp_path / "x.clipseg")]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and not (tmp_path / "x.clipseg").exists()
    (tmp_path / "empty").mkdir()
    assert quantize.main([str(plain_model), "--calib", str(tmp_path / "empty")]) == 1
    assert "no images" in capsys.readouterr().err
    # an impossible agreement demand: checked, and nothing is written
    assert quantize.main([str(plain_model), "--calib", str(SAMPLE_BAG), "--calib-count", "8",
                          "--min-agreement", "1.01", "--out", str(tmp_path / "y.clipseg")]) == 1
    assert "agrees with fp32 on only" in capsys.readouterr().err
    assert not (tmp_path / "y.clipseg").exists()


def test_the_node_runs_the_int8_graph(int8_model, plain_model):
    pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from clipseg_ros import image_codec
    from clipseg_ros.node import SegNode, StartupError
    from ros_helpers import RosHarness, image_msg, make_header, wait_for

    path, _ = int8_model
    with RosHarness("test_quantize") as ros:
        node = ros.add(SegNode("int8_node", context=ros.context, parameter_overrides=[
            Parameter("model", value=str(path)), Parameter("device", value="cpu"),
            Parameter("precision", value="int8"), Parameter("threads", value=2)]))
        assert node.segmenter.precision == "int8"
        pub = ros.publisher(Image, "/image")
        col = ros.collect(Image, "/int8_node/labels", reliable=True)
        ros.wait_matched(pub)
        wait_for(lambda: node._sub.get_publisher_count() >= 1 and col.sub.get_publisher_count() >= 1, 20.0,
                 what="matched")
        img = pattern_image(120, 160, seed=4)
        pub.publish(image_msg(img, header=make_header("cam")))
        msg, = col.wait(1, 20.0)
        want = Segmenter(path, device="cpu", precision="int8", threads=2)(img).labels
        np.testing.assert_array_equal(image_codec.image_to_array(msg), want)
        values = {kv.key: kv.value for kv in node.diagnostic_status().values}
        assert values["precision"] == "int8 (as requested)"
        with pytest.raises(StartupError, match="no model_int8.onnx member"):
            SegNode("int8_bad", context=ros.context, parameter_overrides=[
                Parameter("model", value=str(plain_model)), Parameter("device", value="cpu"),
                Parameter("precision", value="int8")])


def test_the_model_card_reports_the_int8_record(int8_model, plain_model):
    from clipseg_training.model_card import render

    path, entry = int8_model
    card = render(path)
    section = card.split("## int8 (CPU)", 1)[1].split("\n## ", 1)[0]
    assert f"int8 **{entry['val_miou']:.2f}** against fp32 {entry['fp32_val_miou']:.2f}" in section
    assert f"calibrated on {entry['calibration_frames']} frames" in section
    assert f"int8 {entry['latency_ms']['int8']:.2f} ms" in section
    assert "No int8 graph in this file" in render(plain_model)
