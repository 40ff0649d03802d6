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
                 "text.dim=64",
                 # fp32: clipseg-eval (archive) runs fp32, so on a bf16 CPU a bf16-trained run's
                 # recorded evaluation would differ from it in the last digits
                 "run.precision=fp32"]
    args = ["run", "--root", str(root), "--rows", "baseline", "random", "--seeds", "0", "1"]
    for o in overrides:
        args += ["--override", o]
    monkeypatch.chdir(tmp_path)
    assert decisive_main(args + ["--jobs", "2"]) == 0            # two real trainings side by side
    for row in ("baseline", "random"):
        for seed in (0, 1):
            stage = "baseline" if row == "baseline" else "stage1"
            assert (root / row / f"seed{seed}" / stage / "summary.json").is_file()
            assert (root / row / f"seed{seed}" / "train.log").is_file()   # each parallel run's output
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
    # guided − baseline at every evaluation (the plot's curves; results.md's first / last column)
    for seed in ("0", "1"):
        want = [[i, round(m - dict(base["curves"][seed])[i], 3)] for i, m in rnd["curves"][seed]]
        assert p["at_evaluations"][seed] == want and len(want) == 4
    # training time: the trainer's own train_seconds, per run
    for r, row, stage in ((base, "baseline", "baseline"), (rnd, "random", "stage1")):
        summary = json.loads((root / row / "seed0" / stage / "summary.json").read_text())
        assert r["per_seed"]["0"]["train_seconds"] == round(summary["train_seconds"], 1) > 0
    assert (out / "guided_minus_baseline.png").stat().st_size > 5000
    md = (out / "results.md").read_text()
    assert "abc123" in md and "authors' logs" in md
    a0 = p["at_evaluations"]["0"]
    assert f"0: {a0[0][1]:+.2f} / {a0[-1][1]:+.2f}" in md
    # per-class IoU of the final weights: recorded by the trainer at the last evaluation
    for r, row, stage in ((base, "baseline", "baseline"), (rnd, "random", "stage1")):
        c = r["class_iou"]
        assert c["class_names"] == ["sky", "road", "car", "tree"] and set(c["per_seed"]) == {"0", "1"}
        summary = json.loads((root / row / "seed0" / stage / "summary.json").read_text())
        assert c["per_seed"]["0"] == pytest.approx(summary["history"][-1]["iou"], abs=0.01)
        assert np.mean(summary["history"][-1]["iou"]) == pytest.approx(summary["history"][-1]["miou"], abs=0.01)
        assert c["mean"] == pytest.approx(np.mean([c["per_seed"][k] for k in ("0", "1")], axis=0), abs=0.01)
    assert "Per-class val IoU" in md and "| sky | road | car | tree |" in md
    # archive: the records (never checkpoints) go to the repository's folder; a second call copies nothing
    dest = tmp_path / "repo_runs"
    # what produced each run: the trainer's runtime record (precision, threads, commit)
    runtime = json.loads((root / "baseline" / "seed0" / "baseline" / "summary.json").read_text())["runtime"]
    assert runtime["precision"] == "fp32" and runtime["threads"] == 1 and runtime["device"] == "cpu"
    from clipseg_training.provenance import code_commit
    assert runtime["commit"] == code_commit()              # this checkout's commit (None outside git)
    assert result["rows"]["baseline"]["per_seed"]["0"]["provenance"]["precision"] == "fp32"
    assert "What produced each run:" in md
    assert decisive_main(["archive", "--root", str(root), "--to", str(dest), "--rows", "baseline", "random",
                          "--provenance", "machine=test box"]) == 0
    prov = json.loads((dest / "random" / "seed1" / "stage1" / "provenance.json").read_text())
    assert prov == {"machine": "test box"}
    assert decisive_main(["report", "--root", str(dest), "--out", str(tmp_path / "rep2"), "--rows", "random"]) == 0
    again = json.loads((tmp_path / "rep2" / "results.json").read_text())["rows"]["random"]["per_seed"]["1"]
    assert again["provenance"]["machine"] == "test box" and again["provenance"]["precision"] == "fp32"
    assert "| test box |" in (tmp_path / "rep2" / "results.md").read_text()
    with pytest.raises(SystemExit):
        decisive_main(["archive", "--root", str(root), "--to", str(dest), "--provenance", "colour=red"])
    kept = sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file())
    names = ("config.yaml", "log.csv", "provenance.json", "summary.json", "val.csv")
    assert kept == sorted(f"{row}/seed{s}/{st}/{name}" for row, st in (("baseline", "baseline"), ("random", "stage1"))
                          for s in (0, 1) for name in names)
    from clipseg_training.decisive import ROWS, archive
    assert archive([r for r in ROWS if r.name == "baseline"], root, dest) == []
    # a run trained before per-class IoU was recorded: archive evaluates its last.pt
    src = root / "baseline" / "seed0" / "baseline"
    old = json.loads((src / "summary.json").read_text())
    for h in old["history"]:
        del h["iou"]
    (src / "summary.json").write_text(json.dumps(old))
    assert decisive_main(["archive", "--root", str(root), "--to", str(dest), "--rows", "baseline"]) == 0
    m = json.loads((dest / "baseline" / "seed0" / "baseline" / "eval_last" / "metrics.json").read_text())
    assert m["checkpoint"] == "runs/baseline/seed0/baseline/last.pt"
    assert m["metrics"]["miou"] == pytest.approx(old["history"][-1]["miou"], abs=1e-6)   # the same final weights
    assert not (dest / "baseline" / "seed0" / "baseline" / "eval_last" / "confusion.png").exists()
    (src / "last.pt").unlink()
    (dest / "baseline" / "seed0" / "baseline" / "summary.json").unlink()
    assert decisive_main(["archive", "--root", str(root), "--to", str(tmp_path / "other"), "--rows", "baseline"]) == 1
    # runs trained before per-class IoU was recorded: read from clipseg-eval's metrics.json instead
    stage_dir = root / "baseline" / "seed1" / "baseline"
    summary = json.loads((stage_dir / "summary.json").read_text())
    for h in summary["history"]:
        del h["iou"]
    (stage_dir / "summary.json").write_text(json.dumps(summary))
    (stage_dir / "eval_last").mkdir()
    (stage_dir / "eval_last" / "metrics.json").write_text(json.dumps(
        {"metrics": {"class_names": ["sky", "road", "car", "tree"], "iou": [0.9, 0.8, 0.1, 0.5]}}))
    assert decisive_main(["report", "--root", str(root), "--out", str(out), "--rows", "baseline"]) == 0
    again = json.loads((out / "results.json").read_text())["rows"]["baseline"]["class_iou"]
    assert again["per_seed"]["1"] == pytest.approx([90.0, 80.0, 10.0, 50.0])


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


def test_the_committed_runs_rebuild_the_committed_report(tmp_path):
    """docs/results.md says the finished runs live in the repository and the report is rebuilt
    from them: check it on this checkout (a fresh clone in CI), and that no checkpoint is kept."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    runs, committed = repo / "docs/results/decisive/runs", repo / "docs/results/decisive/results.json"
    want = json.loads(committed.read_text())
    assert not list(runs.rglob("*.pt"))
    assert decisive_main(["report", "--root", str(runs), "--out", str(tmp_path)]) == 0
    got = json.loads((tmp_path / "results.json").read_text())
    for name, row in want["rows"].items():
        assert got["rows"][name]["per_seed"] == row["per_seed"], name
        assert got["rows"][name]["class_iou"] == row["class_iou"], name
    assert sum(r["n"] for r in got["rows"].values()) >= 2
    # guided − non-CLIP control, paired by seed (what a gain owes to CLIP, not to the textual loss)
    contrast = got["versus_control"]["clip_rn50-random"]
    clip, rnd = got["rows"]["clip_rn50"]["per_seed"], got["rows"]["random"]["per_seed"]
    common = sorted(set(clip) & set(rnd), key=int)
    md = (tmp_path / "results.md").read_text()
    assert "| guided − non-CLIP control, paired by seed |" in md
    if not common:
        assert contrast is None
        assert "(non-CLIP control) | 0 | — | — | — |" in md
    else:
        assert contrast["seeds"] == [int(s) for s in common]
        assert contrast["differences"] == pytest.approx(
            [clip[s]["last2"] - rnd[s]["last2"] for s in common], abs=1e-3)
        assert f"{common[0]}: {contrast['differences'][0]:+.2f}" in md


def test_report_writes_its_rows_into_the_results_index(tmp_path):
    """`report --index` puts every decisive row into the project's results index with the fields
    issue 12 names (n, epochs, crop size, iterations, batch size, scoring rule, per-seed scores) and
    keeps the index's other rows; a broken index is an error naming the file."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    index = tmp_path / "results.json"
    index.write_text(json.dumps({"baseline": {"n": 4}, "decisive/stale": {"n": 1}}))
    assert decisive_main(["report", "--root", str(repo / "docs/results/decisive/runs"),
                          "--out", str(tmp_path / "rep"), "--index", str(index)]) == 0
    data = json.loads(index.read_text())
    assert data["baseline"] == {"n": 4} and "decisive/stale" not in data
    rows = json.loads((tmp_path / "rep" / "results.json").read_text())["rows"]
    assert {k for k in data if k.startswith("decisive/")} == {"decisive/" + k for k in rows}
    for name, row in rows.items():
        got = data["decisive/" + name]
        for key in ("n", "epochs", "crop_size", "iters", "batch_size", "scoring", "per_seed", "mean"):
            assert got[key] == row[key], (name, key)
    index.write_text("{not json")
    assert decisive_main(["report", "--root", str(repo / "docs/results/decisive/runs"),
                          "--out", str(tmp_path / "rep"), "--index", str(index)]) == 1


def test_the_committed_results_index_holds_the_committed_decisive_rows():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    index = json.loads((repo / "docs/results/results.json").read_text())
    rows = json.loads((repo / "docs/results/decisive/results.json").read_text())["rows"]
    for name, row in rows.items():
        got = index["decisive/" + name]
        assert got["per_seed"] == row["per_seed"] and got["n"] == row["n"] == len(row["per_seed"]), name
        assert (got["epochs"], got["crop_size"], got["iters"], got["batch_size"]) == \
            (row["epochs"], row["crop_size"], row["iters"], row["batch_size"]), name
