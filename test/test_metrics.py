"""clipseg_ros.metrics: confusion-matrix metrics against brute force, label remapping, reports."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipseg_ros.metrics import ConfusionMatrix, format_table, plot_confusion, plot_per_class_iou, remap_labels

IGN = 255


def brute_force(pred, target, k, ignore=IGN):
    """Per-class IoU / accuracy and pixel accuracy the slow, obvious way."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    valid = target != ignore
    ious, accs = [], []
    for c in range(k):
        tp = np.sum((pred == c) & (target == c) & valid)
        fp = np.sum((pred == c) & (target != c) & valid)
        fn = np.sum((pred != c) & (target == c) & valid)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        accs.append(tp / (tp + fn) if tp + fn else math.nan)
    n_valid = valid.sum()
    pix = np.sum((pred == target) & valid) / n_valid * 100 if n_valid else math.nan
    return np.array(ious), np.array(accs), pix


@st.composite
def pred_target(draw, max_k=6, max_n=300):
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    target = rng.integers(0, k, n).astype(np.uint8)
    target[rng.random(n) < draw(st.floats(0, 0.5))] = IGN            # ignored pixels
    pred = rng.integers(0, k, n).astype(np.int64)
    if draw(st.booleans()):                                          # some out-of-range predictions
        pred[rng.random(n) < 0.1] = rng.choice([-1, k, k + 3, 255])
    shape = draw(st.sampled_from([(n,), (1, n), (n, 1)]))
    return k, pred.reshape(shape), target.reshape(shape)


@settings(max_examples=60, deadline=None)
@given(pred_target())
def test_matches_brute_force(case):
    k, pred, target = case
    cm = ConfusionMatrix(k).update(pred, target)
    r = cm.compute()
    iou, acc, pix = brute_force(pred, target, k)
    np.testing.assert_allclose(r["iou"], iou, equal_nan=True)
    np.testing.assert_allclose(r["acc"], acc, equal_nan=True)
    if np.all(np.isnan(iou)):
        assert math.isnan(r["miou"])
    else:
        assert r["miou"] == pytest.approx(np.nanmean(iou) * 100)
    if math.isnan(pix):
        assert math.isnan(r["pixel_accuracy"])
    else:
        assert r["pixel_accuracy"] == pytest.approx(pix)
    assert cm.total == int(np.sum(target != IGN))
    assert cm.counts.shape == (k, k) and cm.counts.dtype == np.int64


@settings(max_examples=40, deadline=None)
@given(pred_target(), st.integers(0, 300))
def test_merge_equals_joint_update(case, cut):
    k, pred, target = case
    p, t = pred.ravel(), target.ravel()
    cut = min(cut, p.size)
    a = ConfusionMatrix(k).update(p[:cut], t[:cut])
    b = ConfusionMatrix(k).update(p[cut:], t[cut:])
    joint = ConfusionMatrix(k).update(p, t)
    a.merge(b)
    np.testing.assert_array_equal(a.counts, joint.counts)
    np.testing.assert_array_equal(a.invalid_pred, joint.invalid_pred)
    assert json.dumps(a.to_json_dict(None)) == json.dumps(joint.to_json_dict(None))


def test_ignore_pixels_are_excluded_and_absent_classes_are_nan():
    target = np.array([[0, 0, 1, IGN], [1, 1, IGN, IGN]], np.uint8)
    pred = np.array([[0, 1, 1, 3], [1, 0, 2, 2]], np.int64)     # predictions on ignore pixels don't count
    cm = ConfusionMatrix(4).update(pred, target)
    np.testing.assert_array_equal(cm.counts, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    r = cm.compute()
    assert r["iou"][0] == pytest.approx(1 / 3) and r["iou"][1] == pytest.approx(2 / 4)
    assert math.isnan(r["iou"][2]) and math.isnan(r["iou"][3])      # in neither GT nor prediction
    assert r["miou"] == pytest.approx((1 / 3 + 2 / 4) / 2 * 100)     # nan classes excluded
    assert r["pixel_accuracy"] == pytest.approx(3 / 5 * 100)
    assert r["macc"] == pytest.approx((1 / 2 + 2 / 3) / 2 * 100)
    assert r["fwiou"] == pytest.approx((2 / 5 * 1 / 3 + 3 / 5 * 2 / 4) * 100)
    # a class predicted but absent from the ground truth has IoU 0, and counts in the mean
    cm2 = ConfusionMatrix(3).update(np.array([0, 2]), np.array([0, 0]))
    r2 = cm2.compute()
    assert r2["iou"][2] == 0.0 and math.isnan(r2["acc"][2]) and math.isnan(r2["iou"][1])
    assert r2["miou"] == pytest.approx(25.0)


def test_out_of_range_prediction_is_wrong_but_no_false_positive():
    cm = ConfusionMatrix(2).update(np.array([0, 7, -1, 1]), np.array([0, 0, 1, 1]))
    assert cm.counts.sum() == 2 and cm.invalid_pred.tolist() == [1, 1]
    r = cm.compute()
    assert r["iou"].tolist() == [0.5, 0.5] and r["pixel_accuracy"] == pytest.approx(50.0)
    assert r["invalid_predictions"] == 2 and r["total_pixels"] == 4


def test_bad_inputs_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="7"):
        cm.update(np.zeros(2, int), np.array([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3, int), np.zeros(2, int))
    with pytest.raises(TypeError):
        cm.update(np.zeros(2, float), np.zeros(2, int))
    with pytest.raises(ValueError):
        cm.merge(ConfusionMatrix(4))
    assert cm.total == 0
    r = cm.compute()
    assert math.isnan(r["miou"]) and math.isnan(r["pixel_accuracy"])


def test_reset_and_writable_counts():
    cm = ConfusionMatrix(2).update(np.array([0, 1]), np.array([0, 0]))
    cm.counts[...] = np.array([[5, 0], [0, 5]])      # e.g. after an all-reduce
    assert cm.compute()["miou"] == 100.0
    cm.reset()
    assert cm.total == 0


def test_json_table_and_plots(tmp_path):
    names = ["sky", "road", "car"]
    cm = ConfusionMatrix(3).update(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    d = cm.to_json_dict(names)
    text = json.dumps(d, allow_nan=False)                          # strict JSON: NaN became null
    assert json.loads(text) == d
    assert d["per_class"]["car"]["iou"] is None and d["iou"][2] is None
    assert d["per_class"]["road"]["iou"] == pytest.approx(0.5)
    assert d["miou"] == pytest.approx(cm.compute()["miou"])
    with pytest.raises(ValueError):
        cm.to_json_dict(names[:2])
    table = format_table(cm.compute(), names)
    assert table.splitlines()[0].startswith("| class") and "| car | – | – |" in table
    assert f"{d['miou']:.2f}" in table
    assert format_table(d, names) == table                         # works on the JSON dict too
    p1 = plot_confusion(cm.counts, names, tmp_path / "out" / "confusion.png")
    p2 = plot_per_class_iou(cm.compute(), names, tmp_path / "out" / "iou.png")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot_confusion(cm.counts, names, tmp_path / "out" / "raw.png", normalize=False)
    assert sorted(x.name for x in (tmp_path / "out").iterdir()) == ["confusion.png", "iou.png", "raw.png"]


def test_runtime_import_needs_neither_torch_nor_matplotlib():
    code = ("import sys, clipseg_ros.metrics as m; import numpy as np; "
            "m.ConfusionMatrix(2).update(np.zeros(3, int), np.zeros(3, int)).compute(); "
            "bad = [x for x in ('torch', 'matplotlib') if x in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ------------------------------------------------------------------------------ remap_labels
def test_remap_uint8_and_uint16():
    lab = np.array([[0, 1, 11], [255, 2, 1]], np.uint8)
    out = remap_labels(lab, {0: 3, 1: 4, 2: 5, 11: 255})
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[3, 4, 255], [255, 5, 4]])
    lab16 = np.array([1000, 7, 255], np.uint16)
    np.testing.assert_array_equal(remap_labels(lab16, {1000: 0, 7: 1}), [0, 1, 255])
    np.testing.assert_array_equal(remap_labels(np.array([-1, 3, 70000]), {3: 2}, strict=False), [255, 2, 255])


def test_remap_strict_names_offending_values():
    lab = np.array([0, 1, 9, 9, 42], np.uint8)
    with pytest.raises(ValueError, match=r"9, 42"):
        remap_labels(lab, {0: 0, 1: 1})
    np.testing.assert_array_equal(remap_labels(lab, {0: 0, 1: 1}, strict=False), [0, 1, 255, 255, 255])
    with pytest.raises(ValueError, match="-5"):
        remap_labels(np.array([-5, 0]), {0: 0})
    with pytest.raises(TypeError):
        remap_labels(np.zeros(2, float), {0: 0})


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.integers(0, 300), st.integers(0, 20), max_size=8), st.integers(0, 2**32 - 1))
def test_remap_matches_dict_lookup(mapping, seed):
    keys = sorted(mapping) or [0]
    rng = np.random.default_rng(seed)
    lab = rng.choice(keys + [IGN], size=50).astype(np.uint16)
    want = np.array([mapping.get(int(v), IGN) if int(v) in mapping or int(v) == IGN else -1 for v in lab])
    if (want < 0).any():
        with pytest.raises(ValueError):
            remap_labels(lab, mapping)
    else:
        np.testing.assert_array_equal(remap_labels(lab, mapping), want)
