"""``python -m clipseg_training.final``: the shipped model's runs (train-only twin, train+val file,
LR-ASPP peer), planned from the epochs, really trained (tiny) and exported with the int8 graph."""
from __future__ import annotations

import json

import pytest
import yaml

from clipseg_training import final
from clipseg_training.config import load_config


def test_plan_sets_the_same_epochs_for_every_run():
    twin, trainval, peer = final.plan("clip_rn50", 150)
    assert (twin.name, trainval.name, peer.name) == ("twin", "trainval", "peer")
    assert twin.stage == trainval.stage == "stage1" and peer.stage == "baseline"
    assert "stage1.iters=6890" in twin.overrides            # ceil(150 * 367 / 8) = 6882, up to 10 x 689
    assert "stage1.iters=8775" in trainval.overrides        # ceil(150 * 468 / 8)
    assert "stage1.iters=6890" in peer.overrides              # the baseline runs stage 1's schedule
    assert "data.train_split=train+val" in trainval.overrides and "run.val_interval=0" in trainval.overrides
    assert "run.val_interval=689" in twin.overrides          # 10 evaluations, the 10th at the end
    short = final.plan("baseline", 50)[0]                      # the decisive experiment's schedule
    assert "stage1.iters=2300" in short.overrides and "run.val_interval=230" in short.overrides
    # every planned config with its overrides is a valid config
    for run in (twin, trainval, peer):
        cfg = load_config(final._config_path(run.config), list(run.overrides))
        assert cfg["data"]["crop_size"] == [360, 480] and cfg["data"]["batch_size"] == 8
    cfg = load_config(final._config_path(trainval.config), list(trainval.overrides))
    assert cfg["data"]["train_split"] == "train+val" and not cfg["data"]["val_split"]
    assert load_config(final._config_path(peer.config), list(peer.overrides))["model"]["name"] == "lraspp_mobilenetv2"
    with pytest.raises(ValueError, match="--arm"):
        final.plan("nope", 150)
    assert final.main(["plan", "--arm", "baseline", "--epochs", "0"]) == 2


def test_plan_prints_the_commands(capsys):
    assert final.main(["plan", "--arm", "baseline", "--epochs", "10", "--root", "r"]) == 0
    out = capsys.readouterr().out
    assert out.count("clipseg-train ") == 3 and "--out r/baseline/trainval" in out and "--resume" in out


@pytest.mark.slow
def test_run_and_export_for_real(tmp_path, camvid_root, monkeypatch):
    """Three tiny runs through the real runner and clipseg-train, then the export with int8."""
    pytest.importorskip("onnxruntime")
    from clipseg_ros.model_file import ModelFile
    from test_training import tiny_config

    cfg = tiny_config(tmp_path, camvid_root, model__name="mobilenetv2", model__guidance=False)
    data = yaml.safe_load(cfg.read_text())
    data["data"].pop("limit_train")
    cfg.write_text(yaml.safe_dump(data))
    monkeypatch.setattr(final, "ARMS", {"baseline": (str(cfg), "baseline")})
    monkeypatch.setattr(final, "PEER", (str(cfg), "baseline"))
    n_train = len((camvid_root / "train.txt").read_text().split()) // 2
    monkeypatch.setattr(final, "CAMVID_TRAIN", n_train)
    monkeypatch.setattr(final, "CAMVID_VAL", len((camvid_root / "val.txt").read_text().split()) // 2)
    monkeypatch.setattr(final, "BATCH", 2)
    # 2 evaluations: the twin's iterations round up to a multiple of it, which at this tiny size
    # would otherwise outgrow the train+val run's
    monkeypatch.setattr(final, "EVALUATIONS", 2)
    root = tmp_path / "final"
    assert final.main(["run", "--arm", "baseline", "--epochs", "0.5", "--root", str(root)]) == 0
    twin = json.loads((root / "baseline" / "twin" / "baseline" / "summary.json").read_text())
    ship = json.loads((root / "baseline" / "trainval" / "baseline" / "summary.json").read_text())
    assert twin["train_images"] == n_train and twin["history"]            # evaluated on val
    assert ship["train_split"] == "train+val" and ship["val_images"] == 0 and not ship["history"]
    assert ship["iterations"] > twin["iterations"]                           # same epochs, more images
    # a second run finds everything done
    assert final.main(["run", "--arm", "baseline", "--epochs", "0.5", "--root", str(root)]) == 0
    # (a network trained for a few iterations has no int8 graph worth checking: the int8 export
    # is tested on its own in test_training.py)
    out = tmp_path / "ship.clipseg"
    assert final.main(["export", "--arm", "baseline", "--epochs", "0.5", "--root", str(root), "--out", str(out),
                       "--calib", "none"]) == 0
    mf = ModelFile(out)
    assert mf.int8_bytes is None and mf.meta.provenance["stage"] == "baseline"
    assert mf.meta.provenance["iteration"] == ship["iterations"]             # the final weights
    assert final.main(["export", "--arm", "baseline", "--epochs", "9", "--root", str(root),
                       "--out", str(out)]) == 1                               # that run does not exist
