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
