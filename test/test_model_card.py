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


TWIN_RUN = REPO / "docs/results/select/inverse_log/baseline/twin/baseline"


def test_a_twin_run_folder_gives_a_single_seed_estimate(trainval_model, tmp_path, capsys):
    """--twin-run: a recipe outside the decisive rows (the committed inverse_log twin, seed 0): its
    score (mean of its last two evaluations) and its final per-class IoU, said to be one seed; a
    baseline's card claims no text encoder; a folder without evaluations is a clear error."""
    from clipseg_training.decisive import final_class_iou, history, score

    out = tmp_path / "card.md"
    assert card_main([str(trainval_model), "--out", str(out), "--twin-run", str(TWIN_RUN)]) == 0
    card = out.read_text()
    want = score(history(TWIN_RUN))
    assert f"| val mIoU | **{want:.1f}**: the honest estimate, from its train-only twin" in card
    assert "one seed (so no spread)" in card and "±" not in card.split("## Data", 1)[0]
    names, ious = final_class_iou(TWIN_RUN)
    assert "(the train-only twin, CamVid val, one seed, final weights)" in card
    for name, iou in zip(names, ious):
        assert f"| {name} | {iou:.1f} |" in card
    assert "Per seed" not in card
    assert "**Text knowledge**: none" in card and "OpenAI CLIP RN50" not in card
    assert "upsampled bilinearly to the input size before the argmax" in card
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(SystemExit):
        card_main([str(trainval_model), "--out", str(tmp_path / "x.md"), "--twin-run", str(empty)])
    assert "--twin-run" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_bad_twin_and_peer_inputs_are_clear_errors(trainval_model, tmp_path, capsys):
    out = tmp_path / "card.md"
    with pytest.raises(SystemExit):
        card_main([str(trainval_model), "--out", str(out), "--twin", str(TWIN), "--twin-row", "nope"])
    assert "no finished row 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        card_main([str(trainval_model), "--out", str(out), "--peer", str(tmp_path / "missing")])
    assert "--peer" in capsys.readouterr().err and not out.exists()


def test_speed_section_lists_every_deployed_precision_and_the_fastest(trainval_model, tmp_path):
    """The card's speed table takes the bench's deployed rows at every precision, and the LRASPP
    sentence names the backend and precision the ratio came from."""
    def row(model, backend, precision, ms):
        return {"model": model, "backend": backend, "precision": precision, "status": "ok", "size": "480x360",
                "pixels": 480 * 360, "median_ms": ms, "p90_ms": ms + 1, "fps": 1000 / ms}

    bench = {"machine": {"cpu_model": "test CPU", "threads": 2, "date": "2026-12-07"},
             "rows": [row("default-native", "onnxruntime", "fp32", 30.0),
                      row("default-native-bf16", "torch", "bf16", 20.0),
                      row("default-native-int8", "onnxruntime", "int8", 25.0),
                      row("lraspp-mbv3", "torch", "fp32", 45.0),
                      dict(row("default-native-int8", "torch", "int8", 1.0), status="skipped")],
             "ratios": {"deployed_default_vs_lraspp": {
                 "status": "ok", "size": "480x360", "default_backend": "torch", "default_precision": "bf16",
                 "default_ms": 20.0, "lraspp_torch_ms": 45.0, "ratio": 0.4444}}}
    bench_path = tmp_path / "bench.json"
    bench_path.write_text(json.dumps(bench))
    out = tmp_path / "card.md"
    assert card_main([str(trainval_model), "--out", str(out), "--bench", str(bench_path)]) == 0
    card = out.read_text()
    assert "| 480x360 | torch | bf16 | 20.0 | 21.0 | 50 |" in card
    assert "| 480x360 | onnxruntime | int8 | 25.0 | 26.0 | 40 |" in card
    assert "| 480x360 | onnxruntime | fp32 | 30.0 | 31.0 | 33 |" in card
    assert "| 1.0 |" not in card and "45.0 |" not in card          # skipped and reference rows are not ours
    assert "(torch, bf16) 20.0 ms vs 45.0 ms (ratio 0.44)" in card
