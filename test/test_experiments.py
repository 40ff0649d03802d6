"""The reproduction experiment's report: mean ± std over seeds, per-class IoU, commands, plots.

Run folders are written the way ``clipseg-train`` leaves them (summary.json, best.pt with the val
metrics, val.csv), with known numbers, and the report must aggregate exactly those."""
import json

import numpy as np
import pytest
import torch

from clipseg_training import experiments as ex

CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
           "Pedestrian", "Bicyclist"]


def _fake_run(d, miou, iou, iters=600, seconds=700.0):
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"best_miou": miou, "best_iteration": iters,
                                                "train_seconds": seconds}))
    torch.save({"val": {"iou": iou, "pixel_accuracy": 0.9}}, d / "best.pt")
    (d / "val.csv").write_text("iteration,miou,pixel_accuracy\n"
                               + "".join(f"{i},{miou * i / iters:.4f},90\n" for i in range(100, iters + 1, 100)))


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    r = tmp_path / "runs"
    for seed, m in enumerate((60.0, 61.0, 62.0)):
        _fake_run(r / "baseline" / f"seed{seed}" / "baseline", m, list(rng.uniform(0.3, 0.9, 11)))
    for seed, m in enumerate((62.0, 63.5, 65.0)):
        _fake_run(r / "stage1-clip_rn50" / f"seed{seed}" / "stage1", m, [0.5] * 11)
    _fake_run(r / "minilm" / "seed0" / "stage1", 61.0, [0.6] * 11)
    _fake_run(r / "minilm" / "seed0" / "stage2", 61.5, [0.7] * 11, iters=300)
    return r


def test_report_aggregates_seeds(root, tmp_path):
    out = tmp_path / "report"
    ex.report(list(ex.ROWS), root, out, CLASSES)
    data = json.loads((out / "results.json").read_text())
    b, s1 = data["baseline"], data["stage1-clip_rn50"]
    assert b["n"] == 3 and b["miou_mean"] == pytest.approx(61.0) and b["miou_std"] == pytest.approx(1.0)
    assert s1["miou_mean"] == pytest.approx(63.5) and s1["miou_std"] == pytest.approx(1.5)
    assert data["stage1-minilm"]["n"] == 1 and data["stage1-minilm"]["miou_std"] is None
    assert data["stage2-minilm"]["miou_mean"] == pytest.approx(61.5)
    assert s1["iou_mean"] == pytest.approx([0.5] * 11)
    assert [r["seed"] for r in b["runs"]] == [0, 1, 2]
    assert "--seed 2" in b["runs"][2]["command"] and "--stage baseline" in b["runs"][2]["command"]
    assert data["stage2-minilm"]["runs"][0]["command"].count("--stage both") == 1
    table = (out / "results_table.md").read_text()
    assert "| 3 | 61.00 ± 1.00 | 60.00, 61.00, 62.00 | 12 min |" in table   # 700 s, no log pauses
    assert "| stage1-clip_rn50 | " + " | ".join(["50.0"] * 11) + " |" in table
    for png in ("per_class_iou.png", "val_miou_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_keeps_the_rows_other_reports_put_in_the_index(root, tmp_path):
    """docs/results/results.json also holds the decisive experiment's rows (decisive/<row>, from
    `decisive report --index`); rebuilding the 13-epoch rows must not drop them."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"baseline": {"n": 99}, "decisive/baseline": {"n": 5}}))
    ex.report(list(ex.ROWS), root, out, CLASSES)
    data = json.loads((out / "results.json").read_text())
    assert data["decisive/baseline"] == {"n": 5}
    assert data["baseline"]["n"] == 3                       # its own rows are rebuilt, not kept


def test_unfinished_rows_are_reported_empty(tmp_path):
    out = tmp_path / "report"
    ex.report(list(ex.ROWS), tmp_path / "nothing", out, CLASSES)
    data = json.loads((out / "results.json").read_text())
    assert all(r["n"] == 0 and r["miou_mean"] is None for r in data.values())
    assert "| Baseline (no textual guidance) | 0 | – | – | – |" in (out / "results_table.md").read_text()


def test_embedding_similarity_of_a_precomputed_file(tmp_path):
    """Known geometry: e0 and e1 at cosine 0.6, e2 orthogonal to both."""
    emb = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 2.0]], dtype=np.float32)
    path = tmp_path / "e.npz"
    np.savez(path, embeddings=emb, class_names=np.array(["a", "b", "c"]))
    r = ex.embedding_similarity(path)
    assert r["classes"] == ["a", "b", "c"] and r["most_similar"] == ["a", "b"]
    assert r["max"] == pytest.approx(0.6) and r["min"] == pytest.approx(0.0)
    assert r["mean"] == pytest.approx(0.2)
    assert ex.main(["embeddings", str(path)]) == 0


def test_paired_differences_and_curves(root, tmp_path):
    out = tmp_path / "report"
    ex.report(list(ex.ROWS), root, out, CLASSES)
    data = json.loads((out / "results.json").read_text())
    table = (out / "results_table.md").read_text()
    # stage1-clip_rn50 − baseline, seed by seed: +2.0, +2.5, +3.0
    assert "| stage1-clip_rn50 − baseline | 3 | +2.00, +2.50, +3.00 | +2.50 ± 0.50 |" in table
    assert "| stage2-minilm − stage1-minilm | 1 | +0.50 | +0.50 |" in table
    # each run keeps its validation curve; a stage 2 continues after its stage 1 (600 iterations)
    assert data["baseline"]["runs"][0]["val_curve"][-1] == [600, pytest.approx(60.0)]
    assert [c[0] for c in data["stage2-minilm"]["runs"][0]["val_curve"]] == [700, 800, 900]
    # diagnostic rows without runs are left out; the four main rows are always listed
    assert set(data) == set(ex.MAIN_ROWS)


def test_carried_runs_fill_in_missing_seeds(root, tmp_path):
    first = tmp_path / "first"
    ex.report(list(ex.ROWS), root, first, CLASSES)
    earlier = json.loads((first / "results.json").read_text())
    # the runs directory of baseline seed 1 and of stage1-clip_rn50 is gone ...
    import shutil
    shutil.rmtree(root / "baseline" / "seed1")
    shutil.rmtree(root / "stage1-clip_rn50")
    out = tmp_path / "second"
    ex.report(list(ex.ROWS), root, out, CLASSES, carry=earlier)
    data = json.loads((out / "results.json").read_text())
    b = data["baseline"]
    assert [r["seed"] for r in b["runs"]] == [0, 1, 2] and b["miou_mean"] == pytest.approx(61.0)
    assert [bool(r.get("carried")) for r in b["runs"]] == [False, True, False]
    assert data["stage1-clip_rn50"]["n"] == 3
    table = (out / "results_table.md").read_text()
    assert "60.00, 61.00†, 62.00" in table and "† carried over" in table
    # without carry, the missing runs are missing
    ex.report(list(ex.ROWS), root, tmp_path / "third", CLASSES)
    assert json.loads((tmp_path / "third" / "results.json").read_text())["baseline"]["n"] == 2
    # an unreadable --carry file is named
    with pytest.raises(SystemExit, match="nope.json"):
        ex.main(["report", "--root", str(root), "--out", str(tmp_path / "x"), "--carry", str(tmp_path / "nope.json")])


def test_control_row_starts_from_the_minilm_stage1(tmp_path):
    row = next(r for r in ex.ROWS if r.name == "stage2ctl-minilm")
    cmd = ex.command(row, 2, tmp_path, [])
    assert "--stage" in cmd and cmd[cmd.index("--stage") + 1] == "stage2"
    assert "stage2.learn_prompts=false" in cmd
    assert f"stage2.init={tmp_path / 'minilm' / 'seed2' / 'stage1' / 'best.pt'}" in cmd
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "minilm-ctl" / "seed2")


def test_embedding_similarity_of_the_bundled_minilm():
    """``minilm``: the class-name embeddings the MiniLM rows train with (real bundled encoder)."""
    from clipseg_training.config import load_config

    r = ex.embedding_similarity("minilm")
    names = load_config(ex.CONFIGS / "camvid-mobilenetv2-stage12-minilm-240x320.yaml")["text"]["prompt_names"]
    assert r["classes"] == names and len(names) == 11
    assert -1.0 <= r["min"] <= r["mean"] <= r["max"] <= 1.0
    assert r["most_similar"][0] != r["most_similar"][1]


def test_shuffled_text_column_reads_the_cached_evaluation(root, tmp_path):
    d = root / "stage1-clip_rn50" / "seed0" / "stage1" / "eval_val_ablate-shuffle"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"metrics": {"miou": 61.75}}))
    out = tmp_path / "report"
    ex.report(list(ex.ROWS), root, out, CLASSES)           # no --ablate: nothing is computed
    data = json.loads((out / "results.json").read_text())
    runs = data["stage1-clip_rn50"]["runs"]
    assert runs[0]["miou_text_shuffled"] == pytest.approx(61.75) and runs[1]["miou_text_shuffled"] is None
    assert all(r["miou_text_shuffled"] is None for r in data["baseline"]["runs"])
    assert "| stage1-clip_rn50 | 0 | 62.00 | 61.75 | -0.25 | – |" in (out / "results_table.md").read_text()
    assert runs[0]["miou_score_map"] is None


def _py(code: str) -> list[str]:
    """A real command the runner resolves next to the interpreter (``<venv>/bin/python``)."""
    return ["python", "-c", code]


def test_run_matrix_stops_at_the_first_failure_with_its_exit_code(tmp_path, capsys):
    from types import SimpleNamespace

    from clipseg_training.runner import run_matrix

    rows = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    log = tmp_path / "log.txt"

    def command(row, seed):
        if (row.name, seed) == ("b", 0):
            return _py("import sys; sys.exit(3)")
        return _py(f"import sys; open({str(log)!r}, 'a').write('{row.name}{seed} ' + sys.argv[-1] + chr(10))")

    assert run_matrix(rows, [0, 1], tag="t", command=command, finished=lambda r, s: False) == 3
    assert log.read_text().splitlines() == ["a0 --resume"]          # b0 failed, seed 1 never started
    out = capsys.readouterr().out
    assert "[t] b seed 0 stopped with exit code 3; rerun the same command to continue" in out


def test_run_matrix_skips_finished_and_shared_runs(tmp_path, capsys):
    from types import SimpleNamespace

    from clipseg_training.runner import run_matrix

    rows = [SimpleNamespace(name="one", key="k"), SimpleNamespace(name="two", key="k"),
            SimpleNamespace(name="other", key="o")]
    log = tmp_path / "log.txt"
    command = lambda row, seed: _py(f"open({str(log)!r}, 'a').write('{row.name}{seed}' + chr(10))")  # noqa: E731
    rc = run_matrix(rows, [0, 1], tag="t", command=command,
                    finished=lambda r, s: (r.name, s) == ("other", 1),
                    run_key=lambda r, s: (r.key, s))
    assert rc == 0
    assert log.read_text().splitlines() == ["one0", "other0", "one1"]   # "two" shares one's run
    out = capsys.readouterr().out
    assert "[t] two seed 0: the same run as one" in out and "[t] other seed 1: done" in out


def test_run_matrix_jobs_runs_in_parallel_with_a_log_per_run(tmp_path, capsys):
    """Two runs that each wait for the other's start marker can only both succeed side by side."""
    from types import SimpleNamespace

    from clipseg_training.runner import run_matrix

    rows = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    other = {"a": "b", "b": "a"}

    def command(row, seed):
        me, peer = tmp_path / f"{row.name}.started", tmp_path / f"{other[row.name]}.started"
        return _py(f"import pathlib, sys, time; pathlib.Path({str(me)!r}).touch(); t = time.time()\n"
                   f"while not pathlib.Path({str(peer)!r}).exists():\n"
                   f"    time.sleep(0.05)\n"
                   f"    if time.time() - t > 60: sys.exit(9)\n"
                   f"print('{row.name} ran with', sys.argv[-1])")

    logs = lambda row, seed: tmp_path / "logs" / f"{row.name}{seed}.log"  # noqa: E731
    assert run_matrix(rows, [0], tag="t", command=command, finished=lambda r, s: False,
                      jobs=2, log_path=logs) == 0
    assert (tmp_path / "logs" / "a0.log").read_text().strip() == "a ran with --resume"
    assert (tmp_path / "logs" / "b0.log").read_text().strip() == "b ran with --resume"
    out = capsys.readouterr().out
    assert "[t] a seed 0: finished" in out and "[t] b seed 0: finished" in out


def test_run_matrix_jobs_starts_nothing_new_after_a_failure(tmp_path, capsys):
    from types import SimpleNamespace

    from clipseg_training.runner import run_matrix

    rows = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    log = tmp_path / "started.txt"

    def command(row, seed):
        code, wait = (4, 0) if (row.name, seed) == ("a", 0) else (0, 2)   # b0 still runs when a0 fails
        return _py(f"open({str(log)!r}, 'a').write('{row.name}{seed}' + chr(10)); import sys, time; "
                   f"time.sleep({wait}); sys.exit({code})")

    rc = run_matrix(rows, [0, 1, 2], tag="t", command=command, finished=lambda r, s: False,
                    jobs=2, log_path=lambda r, s: tmp_path / f"{r.name}{s}.log")
    assert rc == 4
    assert sorted(log.read_text().splitlines()) == ["a0", "b0"]       # b0 finished, nothing new began
    assert "[t] a seed 0 stopped with exit code 4" in capsys.readouterr().out


def test_run_matrix_jobs_needs_a_log_path():
    from clipseg_training.runner import run_matrix

    with pytest.raises(ValueError, match="log_path"):
        run_matrix([], [0], tag="t", command=lambda r, s: [], finished=lambda r, s: False, jobs=2)


def test_run_skips_rows_whose_runs_are_finished_on_disk(tmp_path, capsys):
    rows = [r for r in ex.ROWS if r.name in ("baseline", "stage1-minilm", "stage2-minilm")]
    for seed in (0, 1):
        for row in rows:
            marker = ex.run_dir(tmp_path, row, seed) / row.report_stage / "summary.json"
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("{}")
    assert ex.main(["run", "--root", str(tmp_path), "--rows", *[r.name for r in rows], "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count(": done") == 6 and "clipseg-train" not in out
