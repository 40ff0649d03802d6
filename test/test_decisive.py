"""The decisive experiment's runner and report on real (tiny) training runs of a synthetic dataset:
paired seeds, the last-two-evaluations score, the 95 % interval, the plot; the random-vector control."""
import json

import numpy as np
import pytest
import torch

from clipseg_training.decisive import history, main as decisive_main, paired, score, t95
from clipseg_training.text_encoders import build_text_encoder

from test_training_speed import synthetic_folder_dataset


def test_random_text_control_is_deterministic_unit_vectors():
    enc = build_text_encoder({"type": "random", "dim": 256, "seed": 3})
    a = enc.encode_class_names(["Road", "Car", "Sky"])
    b = build_text_encoder({"type": "random", "dim": 256, "seed": 3}).encode_class_names(["road", "car", "sky"])
    assert a.shape == (3, 256) and torch.allclose(a.norm(dim=1), torch.ones(3))
    assert torch.equal(a, b)                                   # per name, case-insensitive, reproducible
    other_seed = build_text_encoder({"type": "random", "dim": 256, "seed": 4})
    assert not torch.equal(a, other_seed.encode_class_names(["road", "car", "sky"]))
    off = (a @ a.T - torch.eye(3)).abs().max()
    assert off < 0.3                                           # nearly orthogonal, unlike CLIP's 0.84
    with pytest.raises(Exception, match="prompt learning"):
        enc.encode_with_context(["road"], torch.zeros(1, 4, 8))


def test_history_counts_an_evaluation_repeated_after_a_resume_once(tmp_path):
    (tmp_path / "val.csv").write_text("230,48.9,88.0\n460,62.9,90.0\n460,63.0,90.1\n690,66.5,91.0\n")
    assert history(tmp_path) == [(230, 48.9), (460, 63.0), (690, 66.5)]


def test_score_and_interval():
    assert score([(1, 10.0)]) is None
    assert score([(1, 10.0), (2, 20.0), (3, 30.0)]) == 25.0
    data = {"baseline": {"per_seed": {"0": {"last2": 60.0}, "1": {"last2": 61.0}, "2": {"last2": 59.0}}},
            "g": {"per_seed": {"0": {"last2": 61.0}, "1": {"last2": 63.0}, "2": {"last2": 60.0}, "5": {"last2": 99.0}}}}
    p = paired(data, "g")
    assert p["seeds"] == [0, 1, 2] and p["differences"] == [1.0, 2.0, 1.0]   # unpaired seed 5 left out
    d = np.array([1.0, 2.0, 1.0])
    half = t95(2) * d.std(ddof=1) / np.sqrt(3)
    assert p["ci95"] == [round(d.mean() - half, 3), round(d.mean() + half, 3)]


@pytest.mark.slow
def test_runner_and_report_on_real_runs(tmp_path, monkeypatch):
    data = synthetic_folder_dataset(tmp_path / "data", n_train=4, n_val=2)
    root, out = tmp_path / "runs", tmp_path / "report"
    overrides = [f"data.root={data}", "data.dataset=folder", "data.crop_size=[64,96]", "data.batch_size=2",
                 "stage1.iters=4", "run.val_interval=1", "run.ckpt_interval=2", "run.progress=false",
                 "run.threads=1", "model.pretrained=null", "data.eval_size=null", "optim.warmup_iters=1",
                 "text.dim=64"]
    args = ["run", "--root", str(root), "--rows", "baseline", "random", "--seeds", "0", "1"]
    for o in overrides:
        args += ["--override", o]
    monkeypatch.chdir(tmp_path)
    assert decisive_main(args) == 0
    for row in ("baseline", "random"):
        for seed in (0, 1):
            stage = "baseline" if row == "baseline" else "stage1"
            assert (root / row / f"seed{seed}" / stage / "summary.json").is_file()
    # a second run skips finished work
    assert decisive_main(args) == 0
    assert decisive_main(["report", "--root", str(root), "--out", str(out), "--rows", "baseline", "random",
                          "--commit", "abc123"]) == 0
    result = json.loads((out / "results.json").read_text())
    base, rnd = result["rows"]["baseline"], result["rows"]["random"]
    for r in (base, rnd):
        assert r["n"] == 2 and r["iters"] == 4 and r["batch_size"] == 2 and r["crop_size"] == [64, 96]
        assert r["scoring"].startswith("mean of the last two")
        for seed, v in r["per_seed"].items():
            hist = r["curves"][seed]
            assert len(hist) == 4
            assert v["last2"] == pytest.approx(np.mean([m for _, m in hist[-2:]]), abs=1e-3)
            assert v["best"] == pytest.approx(max(m for _, m in hist), abs=1e-3)
    p = result["paired"]["random"]
    assert p["seeds"] == [0, 1] and len(p["ci95"]) == 2
    assert p["differences"][0] == pytest.approx(rnd["per_seed"]["0"]["last2"] - base["per_seed"]["0"]["last2"],
                                                abs=1e-2)
    assert (out / "guided_minus_baseline.png").stat().st_size > 5000
    md = (out / "results.md").read_text()
    assert "abc123" in md and "authors' logs" in md


def test_run_skips_finished_runs_and_seeds_beyond_a_rows_count(tmp_path, capsys):
    """Every run finished on disk: nothing is trained; the control row stops at its seed count."""
    from clipseg_training.decisive import ROWS, run_dir

    seeds = [0, 1, 2, 3]
    for row in ROWS:
        for seed in seeds:
            marker = run_dir(tmp_path, row, seed) / row.stage / "summary.json"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("{}")
    assert decisive_main(["run", "--root", str(tmp_path), "--seeds", *map(str, seeds)]) == 0
    out = capsys.readouterr().out
    assert "clipseg-train" not in out
    assert out.count(": done") == 2 * 4 + 3                    # random runs on 3 seeds only
    assert "[decisive] random seed 3" not in out


def test_run_stops_on_a_failing_run_with_its_exit_code(tmp_path, capfd):
    """A real clipseg-train that fails (its data folder does not exist) stops the loop."""
    root = tmp_path / "runs"
    rc = decisive_main(["run", "--root", str(root), "--rows", "baseline", "random", "--seeds", "0",
                        "--override", f"data.root={tmp_path / 'missing'}", "--override", "data.dataset=folder"])
    assert rc != 0
    out = capfd.readouterr().out
    assert f"[decisive] baseline seed 0 stopped with exit code {rc}; rerun the same command to continue" in out
    assert "[decisive] random seed 0" not in out                # the loop stopped
    assert "--out " + str(root / "baseline" / "seed0") in out    # the builder passes --out
