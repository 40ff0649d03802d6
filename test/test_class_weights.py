"""Class-weighted losses (``loss.class_weight``): the weight rules on known counts, the weighted
OHEM mean against PyTorch's weighted cross-entropy, label statistics read from real label files,
config errors, and a real training run that records and applies the weights."""
import json

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from clipseg_training.config import ConfigError, load_config
from clipseg_training.datasets import build_dataset
from clipseg_training.losses import OhemCrossEntropy, SegmentationCriterion, class_weights
from clipseg_training.train import main as train_main

from test_training_speed import CLASSES, synthetic_folder_dataset, write_config


def test_median_frequency_and_inverse_log_on_known_counts():
    counts, present = [10, 30, 60, 0], [100, 100, 60, 0]
    # f = 0.1, 0.3, 1.0 (the absent class is left out of the median and weighs 1)
    assert np.allclose(class_weights("median_frequency", counts, present), [3.0, 1.0, 0.3, 1.0])
    p = np.array([0.1, 0.3, 0.6])
    assert np.allclose(class_weights("inverse_log", counts, present)[:3], 1 / np.log(1.02 + p), rtol=1e-6)
    assert np.allclose(class_weights([1, 2, 3, 4.5], counts), [1, 2, 3, 4.5])
    with pytest.raises(ValueError, match="4 positive numbers"):
        class_weights([1, 2], counts)
    with pytest.raises(ValueError, match="4 positive numbers"):
        class_weights([1, 2, 0, 1], counts)
    with pytest.raises(ValueError, match="'balanced' is not one of"):
        class_weights("balanced", counts, present)
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_weights("inverse_log", [0, 0, 0, 0], [0, 0, 0, 0])


def test_weighted_ohem_mean_is_torch_weighted_cross_entropy_forward_and_backward():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 8, requires_grad=True)
    labels = torch.randint(0, 4, (2, 6, 8))
    labels[0, 0, :3] = 255
    w = torch.tensor([0.5, 2.0, 1.0, 4.0])
    ours = OhemCrossEntropy(min_kept_div=1, weight=w)(logits, labels)       # keeps every pixel
    ref = F.cross_entropy(logits, labels, weight=w, ignore_index=255)
    assert torch.allclose(ours, ref, atol=1e-6)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    assert torch.allclose(g_ours, g_ref, atol=1e-7)
    plain = OhemCrossEntropy(min_kept_div=1)(logits, labels)
    assert not torch.allclose(ours, plain)
    # with hard-pixel selection the weights apply to the kept pixels only
    hard = OhemCrossEntropy(thresh=0.7, min_kept_div=16, weight=w)
    pixel = F.cross_entropy(logits.detach(), labels, ignore_index=255, reduction="none")
    keep = (labels != 255) & (torch.exp(-pixel) < 0.7)
    wk = w[labels[keep]]
    assert torch.allclose(hard(logits, labels), (pixel[keep] * wk).sum() / wk.sum(), atol=1e-6)
    # every CE term of the criterion is weighted (the textual loss too)
    crit = SegmentationCriterion(class_weight=w, detail_weight=0)
    score = torch.randn(2, 4, 3, 4)
    _, parts = crit({"logits": logits, "score_map": score}, labels)
    assert parts["text"] == pytest.approx(float(OhemCrossEntropy(weight=w)(score / 0.07, labels)), rel=1e-5)


def test_class_pixel_counts_read_the_label_files(tmp_path):
    root = synthetic_folder_dataset(tmp_path / "data", n_train=5, n_val=1)
    ds = build_dataset("folder", root, "train")
    counts, present = ds.class_pixel_counts()
    want_c, want_p = np.zeros(len(CLASSES), np.int64), np.zeros(len(CLASSES), np.int64)
    for f in sorted((root / "labels" / "train").glob("*.png")):
        lab = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        c = np.bincount(lab[lab < len(CLASSES)], minlength=len(CLASSES))
        want_c += c
        want_p[c > 0] += int((lab != 255).sum())
    assert counts.tolist() == want_c.tolist() and present.tolist() == want_p.tolist()
    ds.cache(64)
    assert [a.tolist() for a in ds.class_pixel_counts()] == [want_c.tolist(), want_p.tolist()]
    (root / "labels" / "train" / "f002.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="f002.png"):
        build_dataset("folder", root, "train").class_pixel_counts()


@pytest.mark.parametrize("value", ["balanced", [1, -2, 3, 4], [], True])
def test_bad_class_weight_values_are_config_errors(tmp_path, value):
    cfg = write_config(tmp_path, tmp_path)
    with pytest.raises(ConfigError, match="loss.class_weight"):
        load_config(cfg, [f"loss.class_weight={json.dumps(value)}"])


def test_training_with_median_frequency_weights_records_and_applies_them(tmp_path, capsys):
    data = synthetic_folder_dataset(tmp_path / "data", n_train=4, n_val=2)
    cfg = write_config(tmp_path, data, stage1__iters=2, run__val_interval=0)
    out = tmp_path / "run" / "stage1"
    assert train_main([str(cfg), "--stage", "baseline", "loss.class_weight=median_frequency",
                       f"run.out_dir={tmp_path / 'run'}"]) == 0
    summary = json.loads((tmp_path / "run" / "baseline" / "summary.json").read_text())
    rec = summary["info"]["class_weight"]
    counts, present = build_dataset("folder", data, "train").class_pixel_counts()
    assert rec["rule"] == "median_frequency"
    assert np.allclose(rec["weights"], class_weights("median_frequency", counts, present), atol=1e-4)
    weighted = (tmp_path / "run" / "baseline" / "log.csv").read_text().splitlines()[1].split(",")
    assert train_main([str(cfg), "--stage", "baseline", f"run.out_dir={tmp_path / 'plain'}"]) == 0
    plain = (tmp_path / "plain" / "baseline" / "log.csv").read_text().splitlines()[1].split(",")
    assert weighted[4] != plain[4]                          # the same first batch, another seg loss
    assert not out.exists()
    # a list with the wrong number of classes names the count
    capsys.readouterr()
    assert train_main([str(cfg), "--stage", "baseline", "loss.class_weight=[1, 2]",
                       f"run.out_dir={tmp_path / 'bad'}"]) != 0
    err = capsys.readouterr().err
    assert "loss.class_weight must list 4 positive numbers" in err and str(data) in err
