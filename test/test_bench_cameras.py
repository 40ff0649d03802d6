"""``python -m clipseg_ros.bench.cameras``: real seg_node processes fed several camera streams.

A short run of every set-up (one node serving two cameras, the same with a dynamic-batch copy of
the model, two nodes) on the tiny known-class model: each camera's labels come back, the rows carry
fps, latency, RSS and CPU, and the Markdown / PNG are written.  The numbers themselves are a
benchmark (docs/bench/cameras.md), not asserted here."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from clipseg_ros.bench import cameras  # noqa: E402
from clipseg_ros.segmenter import Segmenter  # noqa: E402
from ros_helpers import fixed_batch_copy, known_model, pattern_image  # noqa: E402

pytestmark = pytest.mark.ros


def test_batchable_copy_takes_a_batch_and_segments_alike(tmp_path):
    from clipseg_ros.conventions import DEFAULT_MODEL

    fixed = fixed_batch_copy(DEFAULT_MODEL, tmp_path / "fixed.clipseg")     # as files before batching
    copy = cameras.batchable_copy(fixed, tmp_path / "batch.clipseg")
    seg, orig = Segmenter(copy, device="cpu", threads=1), Segmenter(fixed, device="cpu", threads=1)
    assert seg.batchable and not orig.batchable
    assert seg.class_names == orig.class_names and seg.input_size == orig.input_size
    frames = [pattern_image(120, 160, seed=s) for s in (1, 5)]
    batch = seg.segment_batch(frames)
    assert [r.timings["batch"] for r in batch] == [2, 2]
    for frame, res in zip(frames, batch):
        ref = orig(frame).labels
        # the same weights, exported again: the labels agree (fp rounding may flip a rare tie)
        assert res.labels.shape == ref.shape and np.mean(res.labels == ref) > 0.999


def test_a_short_run_of_every_setup(tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["--cameras", "2", "--seconds", "1.5", "--warmup", "0.5", "--rate", "5", "--threads", "1",
            "--model", known_model(2), "--out", str(out), "--node-startup-timeout", "90"]
    assert cameras.main(argv) == 0
    result = json.loads((out / "cameras.json").read_text())
    rows = result["rows"]
    assert [(r["setup"], r["cameras"], r["processes"]) for r in rows] == [
        ("one node", 2, 1), ("one node, batched", 2, 1), ("N nodes", 2, 2)]
    for r in rows:
        assert r["status"] == "ok", r
        assert len(r["per_camera"]) == 2
        for c in r["per_camera"]:
            assert c["sent"] >= 5 and 0 < c["processed"] <= c["sent"] + 1, c
            assert c["latency"]["median_ms"] > 0
        assert r["peak_rss_mb"] > 50 and r["cpu_percent"] > 0
    assert rows[2]["peak_rss_mb"] > rows[0]["peak_rss_mb"]        # two processes hold two models
    assert result["model_batchable"] is True                       # the tests' exports take a batch
    md = (out / "cameras.md").read_text()
    assert md.count("\n| one node") == 2 and "| N nodes | 2 | 2 |" in md
    assert (out / "cameras.png").stat().st_size > 5000
    assert str(Path(known_model(2)).parent) not in md              # no machine paths in the report


def test_bad_arguments_are_refused(tmp_path, capsys):
    assert cameras.main(["--cameras", "0", "--model", known_model(2), "--out", str(tmp_path)]) == 1
    assert "--cameras must be at least 1" in capsys.readouterr().err
