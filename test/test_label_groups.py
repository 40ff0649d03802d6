"""clipseg_ros.label_groups (YAML validation with line numbers, the group lookup table),
clipseg_ros.label_codec (lossless PNG labels) and clipseg_ros.camera_info (sibling topic, scaling)."""
from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from clipseg_ros.camera_info import camera_info_topic, for_labels, scale_camera_info
from clipseg_ros.label_codec import LABELS_PNG_FORMAT, decode_labels_png, encode_labels_png
from clipseg_ros.label_groups import IGNORE, LabelGroupsError, load_label_groups, parse_label_groups
from clipseg_ros.visualize import CAMVID_CLASSES, CAMVID_PALETTE

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "label_groups_camvid.yaml"


# ------------------------------------------------------------------------------------------------
# label groups
# ------------------------------------------------------------------------------------------------

def test_shipped_camvid_example():
    g = load_label_groups(EXAMPLE, CAMVID_CLASSES, CAMVID_PALETTE)
    assert g.names == ("drivable", "obstacle", "other")
    idx = {c: i for i, c in enumerate(CAMVID_CLASSES)}
    assert g.classes[0] == (idx["Road"],)
    assert set(g.classes[1]) == {idx[c] for c in ("Car", "Pedestrian", "Bicyclist", "Pole", "Fence")}
    assert g.unmapped == ()                      # every CamVid class is in a group
    assert g.palette[0].tolist() == CAMVID_PALETTE[idx["Road"]].tolist()   # first class's color
    assert g.palette[2].tolist() == [128, 128, 128]                        # its own color
    labels = np.array([[idx["Road"], idx["Car"], idx["Sky"], 255]], np.uint8)
    assert g.apply(labels).tolist() == [[0, 1, 2, IGNORE]]


def test_lut_maps_every_class_and_leaves_the_rest_unlabeled():
    g = parse_label_groups("a: [c1, c3]\nb: [c0]\n", ["c0", "c1", "c2", "c3"])
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    want = np.full(256, IGNORE, np.uint8)
    want[[1, 3]] = 0
    want[0] = 1
    assert np.array_equal(g.apply(labels).reshape(-1), want)
    assert g.unmapped == ("c2",)
    out = np.empty((16, 16), np.uint8)
    assert g.apply(labels, out=out) is out


def test_single_class_and_long_forms():
    g = parse_label_groups("road: Road\ncars:\n  classes: [Car]\n  color: [1, 2, 3]\n", CAMVID_CLASSES)
    assert g.names == ("road", "cars") and g.palette[1].tolist() == [1, 2, 3]


@pytest.mark.parametrize("text, line, words", [
    ("drivable: [Road]\nobstacle: [Car, Pedestrain]\n", 2, ["unknown class 'Pedestrain'", "Pedestrian"]),
    ("drivable: [Road]\nobstacle:\n  - Car\n  - road\n", 4, ["unknown class 'road'", "'Road'"]),
    ("drivable: [Road]\nobstacle: [Car]\nother: [Sky, Car]\n", 3,
     ["'Car'", "group 'obstacle' (line 2)", "'other'", "overlap"]),
    ("drivable: [Road, Road]\n", 1, ["listed twice"]),
    ("a: [Road]\nb: [Sky]\na: [Car]\n", 3, ["'a' is defined twice", "line 1"]),
    ("a: []\n", 1, ["no classes"]),
    ("a: [Road]\nb: {classes: [Car], color: [1, 2]}\n", 2, ["color"]),
    ("a: [Road]\nb: {classes: [Car], color: [1, 2, 300]}\n", 2, ["color"]),
    ("a: [Road]\nb: {klasses: [Car]}\n", 2, ["unknown key 'klasses'"]),
    ("a: [Road]\nb: 3\n", 2, ["list of class names"]),
    ("a: [Road\nb: [Car]\n", None, ["not valid YAML"]),
    ("- Road\n- Car\n", 1, ["mapping"]),
    ("", None, ["empty"]),
])
def test_errors_name_the_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "groups.yaml"
    path.write_text(text)
    with pytest.raises(LabelGroupsError) as exc:
        load_label_groups(path, CAMVID_CLASSES)
    msg = str(exc.value)
    assert msg.startswith(str(path)), msg
    if line is not None:
        assert f"{path} line {line}:" in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def test_unreadable_file(tmp_path):
    with pytest.raises(LabelGroupsError, match="cannot read"):
        load_label_groups(tmp_path / "missing.yaml", CAMVID_CLASSES)


def test_too_many_groups():
    names = [f"c{i}" for i in range(256)]
    text = "".join(f"g{i}: [c{i}]\n" for i in range(256))
    with pytest.raises(LabelGroupsError, match="at most 255"):
        parse_label_groups(text, names)
    g = parse_label_groups("".join(f"g{i}: [c{i}]\n" for i in range(255)), names)
    assert len(g.names) == 255 and g.lut[254] == 254 and g.lut[255] == IGNORE


# ------------------------------------------------------------------------------------------------
# labels as PNG
# ------------------------------------------------------------------------------------------------

def test_png_labels_are_lossless_where_jpeg_is_not():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, (60, 80)).astype(np.uint8)
    labels[:10] = 255
    data = encode_labels_png(labels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_labels_png(data), labels)
    # the reason for PNG: JPEG moves label values at edges
    ok, jpg = cv2.imencode(".jpg", labels, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok and not np.array_equal(cv2.imdecode(jpg, cv2.IMREAD_UNCHANGED), labels)
    assert LABELS_PNG_FORMAT == "mono8; png compressed"


def test_png_rejects_non_label_arrays():
    with pytest.raises(ValueError):
        encode_labels_png(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        decode_labels_png(b"not a png")


# ------------------------------------------------------------------------------------------------
# camera_info
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image, compressed, want", [
    ("/cam/image_raw", False, "/cam/camera_info"),
    ("/cam/image_raw/compressed", True, "/cam/camera_info"),
    ("/front/left/image_rect", False, "/front/left/camera_info"),
    ("/image", False, "/camera_info"),
    ("/t3/image/compressed", True, "/t3/camera_info"),
])
def test_camera_info_is_the_image_topics_sibling(image, compressed, want):
    assert camera_info_topic(image, compressed) == want


def _info(w=640, h=480):
    roi = types.SimpleNamespace(x_offset=40, y_offset=20, width=320, height=240, do_rectify=True)
    return types.SimpleNamespace(
        header="camera header", width=w, height=h, distortion_model="plumb_bob",
        d=[-0.1, 0.01, 0.0, 0.0, 0.0], k=[500.0, 0.5, 320.0, 0.0, 510.0, 240.0, 0.0, 0.0, 1.0],
        r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        p=[500.0, 0.0, 320.0, -35.0, 0.0, 510.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x=0, binning_y=0, roi=roi)


def test_scaling_follows_the_pixels():
    """A 3D point projected with the scaled P lands on the scaled pixel."""
    info = scale_camera_info(_info(), 0.5, 0.25)
    assert (info.width, info.height) == (320, 120)
    assert info.k == [250.0, 0.25, 160.0, 0.0, 127.5, 60.0, 0.0, 0.0, 1.0]
    assert info.p == [250.0, 0.0, 160.0, -17.5, 0.0, 127.5, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    roi = info.roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height, roi.do_rectify) == (20, 5, 160, 60, True)
    assert info.d == [-0.1, 0.01, 0.0, 0.0, 0.0] and info.r == _info().r
    X = np.array([0.3, -0.2, 2.0, 1.0])
    u0, v0, w0 = np.asarray(_info().p).reshape(3, 4) @ X
    u1, v1, w1 = np.asarray(info.p).reshape(3, 4) @ X
    assert u1 / w1 == pytest.approx(0.5 * u0 / w0) and v1 / w1 == pytest.approx(0.25 * v0 / w0)


def test_same_size_is_an_exact_copy_with_the_labels_header():
    src = _info()
    out = for_labels(src, "labels header", (640, 480), (640, 480))
    assert out is not src and out.header == "labels header" and src.header == "camera header"
    assert out.k == src.k and out.p == src.p and (out.width, out.height) == (640, 480)
    half = for_labels(src, "h", (640, 480), (320, 240))
    assert half.k[0] == 250.0 and src.k[0] == 500.0       # the source is not touched
    with pytest.raises(ValueError):
        scale_camera_info(_info(), 0.0, 1.0)
