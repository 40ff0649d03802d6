"""The model card of a model trained on train+val: its accuracy comes from the train-only twins
(the committed decisive records), never from the file's own val score."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipseg_training.model_card import main as card_main

REPO = Path(__file__).resolve().parents[1]
TWIN = REPO / "docs/results/decisive/results.json"
CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]


@pytest.fixture(scope="module")
def trainval_model(tmp_path_factory):
    import torch

    from clipseg_ros.model_file import save_model_file
    from clipseg_ros.networks import create_model

    torch.manual_seed(0)
    net = create_model("mobilenetv2", 11, detail_head=False, aux_heads=False).eval()
    path = tmp_path_factory.mktemp("card") / "trainval.clipseg"
    recipe = {"model": {"pretrained": "mobilenet_v2-b0353104.pth", "detail_head": True, "feat32_channels": 1024},
              "data": {"batch_size": 8, "crop_size": [360, 480], "scale_range": [0.5, 2.5]},
              "loss": {"ohem_min_kept_div": 1, "tau": 0.07}, "stage1": {"iters": 2925},
              "optim": {"lr": 0.05, "warmup_iters": 200, "backbone_lr_mult": 0.1, "weight_decay": 5e-4}}
    save_model_file(path, net, CLASSES, input_size=[64, 96],
                    provenance={"stage": "baseline", "iteration": 2925, "dataset": "camvid",
                                "train_split": "train+val", "val_split": "", "recipe": recipe,
                                "val_miou": None, "val_per_class_iou": None})
    return path


def test_a_trainval_card_takes_its_accuracy_from_the_twins(trainval_model, tmp_path):
    peer = tmp_path / "peer"
    peer.mkdir()
    (peer / "val.csv").write_text("230,40.0,80.0\n460,66.0,90.0\n690,67.0,91.0\n")
    out = tmp_path / "card.md"
    assert card_main([str(trainval_model), "--out", str(out), "--twin", str(TWIN), "--peer", str(peer),
                      "--command", "python -m clipseg_training.final run --arm baseline --epochs 50"]) == 0
    card = out.read_text()
    row = json.loads(TWIN.read_text())["rows"]["baseline"]
    assert f"**{row['mean']:.1f}** ± {row['std']:.1f}" in card and f"{row['n']} seeds" in card
    assert "its own val score is not an estimate" in card
    for name, iou in zip(row["class_iou"]["class_names"], row["class_iou"]["mean"]):
        assert f"| {name} | {iou:.1f} |" in card
    assert "train and val splits together" in card and "selected on 101 val frames" not in card
    assert "Final checkpoint, iteration 2925" in card and "Best validation checkpoint" not in card
    assert "plain cross-entropy" in card and "textual loss" not in card     # a baseline: no text loss
    assert "(50 epochs)" in card                                          # 2925 x 8 / 468
    assert "**66.5** val mIoU" in card and "best 67.0" in card            # the peer: last two, best
    assert "not an estimate of its accuracy" in card.split("## Limits", 1)[1]


def test_bad_twin_and_peer_inputs_are_clear_errors(trainval_model, tmp_path, capsys):
    out = tmp_path / "card.md"
    with pytest.raises(SystemExit):
        card_main([str(trainval_model), "--out", str(out), "--twin", str(TWIN), "--twin-row", "nope"])
    assert "no finished row 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        card_main([str(trainval_model), "--out", str(out), "--peer", str(tmp_path / "missing")])
    assert "--peer" in capsys.readouterr().err and not out.exists()
