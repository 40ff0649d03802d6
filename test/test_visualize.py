"""Tests for clipseg_ros.visualize (palettes, colorizer, overlay, contact sheets, PNG output)."""
import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipseg_ros import visualize as vz
from clipseg_ros.visualize import IGNORE_LABEL, Colorizer


# ------------------------------------------------------------------------------------------
# palettes
# ------------------------------------------------------------------------------------------

def test_camvid_palette_is_the_segnet_one():
    expected = {
        "Sky": (128, 128, 128), "Building": (128, 0, 0), "Pole": (192, 192, 128),
        "Road": (128, 64, 128), "Pavement": (60, 40, 222), "Tree": (128, 128, 0),
        "SignSymbol": (192, 128, 128), "Fence": (64, 64, 128), "Car": (64, 0, 128),
        "Pedestrian": (64, 64, 0), "Bicyclist": (0, 128, 192),
    }
    assert vz.CAMVID_PALETTE.shape == (11, 3) and vz.CAMVID_PALETTE.dtype == np.uint8
    assert list(vz.CAMVID_CLASSES) == list(expected)
    for name, color in zip(vz.CAMVID_CLASSES, vz.CAMVID_PALETTE):
        assert tuple(int(c) for c in color) == expected[name]


def test_cityscapes_palette():
    assert vz.CITYSCAPES_PALETTE.shape == (19, 3) and len(vz.CITYSCAPES_CLASSES) == 19
    assert tuple(vz.CITYSCAPES_PALETTE[0]) == (128, 64, 128)  # road
    assert tuple(vz.CITYSCAPES_PALETTE[18]) == (119, 11, 32)  # bicycle


def test_default_palette_distinct_deterministic_and_bounded():
    p = vz.default_palette(256)
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == 256
    assert not (p == 0).all(axis=1).any()  # black is reserved for "ignore"
    np.testing.assert_array_equal(p[:19], vz.CITYSCAPES_PALETTE)
    np.testing.assert_array_equal(vz.default_palette(40), p[:40])
    assert vz.default_palette(0).shape == (0, 3)
    p[0] = 0  # a copy: the module's palette is not modified
    assert tuple(vz.default_palette(1)[0]) == (128, 64, 128)
    for bad in (-1, 257):
        with pytest.raises(ValueError, match="num_classes"):
            vz.default_palette(bad)


# ------------------------------------------------------------------------------------------
# Colorizer
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ignore", [(0, 0, 0), (255, 0, 255)])
def test_colorize_maps_every_label_value(ignore):
    c = Colorizer(vz.CAMVID_PALETTE, ignore_color=ignore)
    labels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = c.colorize(labels)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    flat = out.reshape(256, 3)
    np.testing.assert_array_equal(flat[:11], vz.CAMVID_PALETTE)
    np.testing.assert_array_equal(flat[11:], np.broadcast_to(ignore, (245, 3)))


def test_colorize_full_palette_still_ignores_255():
    pal = vz.default_palette(256)
    out = Colorizer(pal, ignore_color=(1, 2, 3)).colorize(np.array([[254, 255]], np.uint8))
    np.testing.assert_array_equal(out[0], [pal[254], (1, 2, 3)])


def test_colorize_other_integer_dtypes():
    c = Colorizer(vz.CAMVID_PALETTE)
    labels = np.array([[0, 10, -1], [300, 255, 3]], dtype=np.int64)
    out = c(labels)
    np.testing.assert_array_equal(out[0, :2], vz.CAMVID_PALETTE[[0, 10]])
    np.testing.assert_array_equal(out[1, 2], vz.CAMVID_PALETTE[3])
    assert (out[0, 2] == 0).all() and (out[1, :2] == 0).all()
    with pytest.raises(ValueError, match="integer"):
        c.colorize(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="HxW"):
        c.colorize(np.zeros((2, 2, 1), np.uint8))


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), k=st.integers(1, 256), seed=st.integers(0, 2**32 - 1))
def test_property_colorize_out_buffer_reuse(h, w, k, seed):
    rng = np.random.default_rng(seed)
    c = Colorizer(vz.default_palette(k))
    out = np.full((h, w, 3), 77, np.uint8)
    for _ in range(2):  # the same buffer reused over frames
        labels = rng.integers(0, 256, (h, w), dtype=np.uint8)
        res = c.colorize(labels, out=out)
        assert res is out
        np.testing.assert_array_equal(res, c.colorize(labels))
        np.testing.assert_array_equal(res, c.lut[labels])
    strided = rng.integers(0, 256, (h, 2 * w), dtype=np.uint8)[:, ::2]  # non-contiguous labels
    np.testing.assert_array_equal(c.colorize(strided, out=out), c.lut[strided])


def test_colorizer_validation():
    with pytest.raises(ValueError, match="shape"):
        Colorizer(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match="K <= 256"):
        Colorizer(np.zeros((257, 3), np.uint8))
    with pytest.raises(ValueError, match="0..255"):
        Colorizer(np.array([[0, 0, 300]]))
    with pytest.raises(ValueError, match="ignore_color"):
        Colorizer(vz.CAMVID_PALETTE, ignore_color=(0, 0))
    c = Colorizer(vz.CAMVID_PALETTE)
    for bad in (np.empty((2, 3, 3), np.uint8), np.empty((3, 2, 3), np.float32),
                np.empty((3, 2, 6), np.uint8)[:, :, ::2]):
        with pytest.raises(ValueError, match="out must be"):
            c.colorize(np.zeros((3, 2), np.uint8), out=bad)


# ------------------------------------------------------------------------------------------
# overlay
# ------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 48), w=st.integers(1, 48), alpha=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_property_overlay_formula_and_out_reuse(h, w, alpha, seed):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    col = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    expected = np.rint((1 - alpha) * img.astype(np.float64) + alpha * col.astype(np.float64))
    res = vz.overlay(img, col, alpha)
    assert res.dtype == np.uint8 and res.shape == img.shape
    assert np.abs(res.astype(int) - expected.astype(int)).max() <= 1
    out = np.zeros_like(img)
    assert vz.overlay(img, col, alpha, out=out) is out
    np.testing.assert_array_equal(out, res)
    np.testing.assert_array_equal(vz.overlay(img, col, alpha, out=out), res)


def test_overlay_alpha_extremes_exact():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    col = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(vz.overlay(img, col, 0.0), img)
    np.testing.assert_array_equal(vz.overlay(img, col, 1), col)


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), float("inf"), "half", None])
def test_overlay_alpha_validation(alpha):
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        vz.overlay(img, img, alpha)


def test_overlay_shape_validation():
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValueError, match="differ"):
        vz.overlay(img, np.zeros((2, 3, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        vz.overlay(img.astype(np.float32), img, 0.5)
    with pytest.raises(ValueError, match="labels shape"):
        vz.overlay(img, img, 0.5, labels=np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="out must be"):
        vz.overlay(img, img, 0.5, out=np.zeros((2, 2, 3), np.float32))


@pytest.mark.parametrize("in_place", [False, True])
def test_overlay_keeps_ignored_pixels(in_place):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    labels = rng.integers(0, 11, (8, 9), dtype=np.uint8)
    labels[::2, ::3] = IGNORE_LABEL
    col = Colorizer(vz.CAMVID_PALETTE).colorize(labels)
    plain = vz.overlay(img, col, 0.6)
    src = img.copy()
    out = src if in_place else None
    res = vz.overlay(src, col, 0.6, out=out, labels=labels)
    ign = labels == IGNORE_LABEL
    np.testing.assert_array_equal(res[ign], img[ign])
    np.testing.assert_array_equal(res[~ign], plain[~ign])
    if in_place:
        assert res is src


# ------------------------------------------------------------------------------------------
# confidence
# ------------------------------------------------------------------------------------------

def test_confidence_to_image():
    conf = np.array([[-0.5, 0.25, 1.5], [np.nan, np.inf, -np.inf]], dtype=np.float64)
    before = conf.copy()
    out = vz.confidence_to_image(conf)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[0, 0.25, 1], [0, 1, 0]])
    np.testing.assert_array_equal(conf, before)  # input untouched
    f32 = np.random.default_rng(3).random((4, 5), dtype=np.float32)
    out2 = vz.confidence_to_image(f32)
    assert out2 is not f32
    np.testing.assert_array_equal(out2, f32)
    with pytest.raises(ValueError, match="HxW"):
        vz.confidence_to_image(np.zeros((2, 2, 1), np.float32))
    with pytest.raises(ValueError, match="real-valued"):
        vz.confidence_to_image(np.zeros((2, 2), np.complex64))


# ------------------------------------------------------------------------------------------
# contact sheet, legend, save_png
# ------------------------------------------------------------------------------------------

def solid(h, w, color):
    return np.broadcast_to(np.array(color, np.uint8), (h, w, 3)).copy()


def test_contact_sheet_shape_and_tile_placement():
    red, green, blue = solid(30, 40, (255, 0, 0)), solid(60, 80, (0, 255, 0)), solid(15, 20, (0, 0, 255))
    sheet = vz.contact_sheet([[red, green, blue], [blue, red]], pad=4)
    # tile = first image size (40x30), 3 columns, 2 rows, no titles
    assert sheet.shape == (4 + 2 * (30 + 4), 4 + 3 * (40 + 4), 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[4:34, 4:44], red)
    np.testing.assert_array_equal(sheet[4:34, 48:88], solid(30, 40, (0, 255, 0)))  # shrunk
    np.testing.assert_array_equal(sheet[4:34, 92:132], solid(30, 40, (0, 0, 255)))  # enlarged
    np.testing.assert_array_equal(sheet[38:68, 92:132], solid(30, 40, (255, 255, 255)))  # empty cell


def test_contact_sheet_titles_max_width_and_gray_inputs():
    img = solid(120, 160, (10, 20, 30))
    gray = np.full((120, 160), 200, np.uint8)
    labels16 = np.full((120, 160), 65535, np.uint16)
    sheet = vz.contact_sheet([[img, gray, labels16]], titles=["image", "ground truth", "prediction"],
                             max_width=300, pad=2)
    assert sheet.shape[1] <= 300
    tile_w = (300 - 2 * 4) // 3
    assert sheet.shape[1] == 2 + 3 * (tile_w + 2)
    title_band = sheet[:sheet.shape[0] - (round(tile_w * 120 / 160) + 4)]
    assert (title_band < 128).any()  # some dark title text was drawn
    bottom = sheet[-3]  # last tile row: gray tile has value 200, 16-bit tile full white
    assert (bottom[2 + tile_w + 2 + 5] == 200).all()
    with pytest.raises(ValueError, match="titles"):
        vz.contact_sheet([[img, img]], titles=["only one"])
    with pytest.raises(ValueError, match="no images"):
        vz.contact_sheet([[]])
    with pytest.raises(ValueError, match="too small"):
        vz.contact_sheet([[img] * 5], max_width=10)
    with pytest.raises(ValueError, match="expected HxWx3"):
        vz.contact_sheet([[img, np.zeros((4, 4, 3), np.float32)]])


def test_legend_contains_swatches():
    leg = vz.legend(vz.CAMVID_CLASSES, vz.CAMVID_PALETTE, swatch=16, pad=4)
    assert leg.ndim == 3 and leg.shape[2] == 3 and leg.dtype == np.uint8
    assert leg.shape[0] >= 11 * 16
    colors = {tuple(int(v) for v in px) for px in leg.reshape(-1, 3)}
    for c in vz.CAMVID_PALETTE:
        assert tuple(int(v) for v in c) in colors
    np.testing.assert_array_equal(leg[4:20, 4:20], solid(16, 16, vz.CAMVID_PALETTE[0]))
    with pytest.raises(ValueError, match="palette colors"):
        vz.legend(["a", "b", "c"], vz.CAMVID_PALETTE[:2])


def test_save_png_round_trip_atomic(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = tmp_path / "sheet.png"
    assert vz.save_png(path, rgb) == str(path)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(back[:, :, ::-1], rgb)  # stored as BGR -> same colors
    vz.save_png(path, rgb[::-1].copy())  # overwrite in place
    np.testing.assert_array_equal(cv2.imread(str(path))[:, :, ::-1], rgb[::-1])
    labels = np.arange(63, dtype=np.uint16).reshape(7, 9) * 1000
    vz.save_png(tmp_path / "labels.png", labels)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "labels.png"), cv2.IMREAD_UNCHANGED), labels)
    assert sorted(os.listdir(tmp_path)) == ["labels.png", "sheet.png"]  # no temp files left
    assert (os.stat(path).st_mode & 0o777) == 0o644


def test_save_png_errors_name_the_path(tmp_path):
    missing = tmp_path / "no_such_dir" / "x.png"
    with pytest.raises(OSError, match="no_such_dir"):
        vz.save_png(missing, np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="bad.png"):
        vz.save_png(tmp_path / "bad.png", np.zeros((2, 2, 3), np.float32))
    assert os.listdir(tmp_path) == []
