"""The thin-class probe report reads the committed probe records against the decisive baseline
seeds, matches evaluations by iteration, and names a broken record."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from clipseg_training import probes

REPO = Path(__file__).resolve().parents[1]
SELECT = REPO / "docs/results/select"
BASELINE = REPO / "docs/results/decisive/runs/baseline"


def test_report_on_the_committed_records(tmp_path, capsys):
    assert probes.main(["--probes", str(SELECT), "--baseline", str(BASELINE), "--out", str(tmp_path)]) == 0
    rows = {r["probe"]: r for r in json.loads((tmp_path / "probes.json").read_text())}
    assert {"median_frequency", "ohem16", "skip4"} <= set(rows)
    mf = rows["median_frequency"]
    summary = json.loads((SELECT / "median_frequency" / probes.RUN / "summary.json").read_text())
    pole = summary["class_names"].index("Pole")
    last2 = summary["history"][-2:]
    assert mf["finished"] and mf["iteration"] == summary["history"][-1]["iteration"]
    assert abs(mf["class_last2"]["Pole"] - sum(e["iou"][pole] for e in last2) / 2) < 1e-9
    assert mf["baseline_iterations"] == [2300] and "median_frequency" in mf["change"]
    assert not rows["ohem16"]["finished"] and "ohem_min_kept_div: 16" in rows["ohem16"]["change"]
    assert rows["skip4"]["change"] == "`model.skip4: True`"
    md = (tmp_path / "probes.md").read_text()
    assert "| ohem16 |" in md and "(stopped)" in md
    assert (tmp_path / "probes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_probe_record_is_named(tmp_path, capsys):
    bad = tmp_path / "probes" / "broken" / probes.RUN
    bad.mkdir(parents=True)
    (bad / "history.json").write_text("{not json")
    shutil.copytree(SELECT / "skip4", tmp_path / "probes" / "skip4")
    assert probes.main(["--probes", str(tmp_path / "probes"), "--baseline", str(BASELINE),
                        "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "broken" in err and "history.json" in err and "not valid JSON" in err
    assert probes.main(["--probes", str(SELECT), "--baseline", str(BASELINE), "--out", str(tmp_path / "o2"),
                        "--classes", "Lamp"]) == 2
    assert "Lamp" in capsys.readouterr().err
