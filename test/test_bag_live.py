"""clipseg-bag-eval live: the real seg_node as a subprocess, bags replayed through it.

The node must publish, for every frame it processes, exactly the labels offline mode computes
(same backend, CPU, one thread); replaying faster than the model must show up as dropped frames;
and the node must be gone afterwards, also when the evaluation is interrupted or killed.
DDS stays on this machine (conftest.py sets shared-memory transport and a domain id of our own;
the node subprocess inherits them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("rclpy")
pytest.importorskip("clipseg_ros.node")

from test_bag_eval import (  # noqa: E402
    N_CAMVID, VENV_BIN, assert_clean_error, camvid_bags, camvid_frames, direct_eval, jpeg_roundtrip,
    read_topic, run_cli, tiny_model,
)

from clipseg_ros.bag import cli  # noqa: E402
from clipseg_ros.bag.reader import open_bag  # noqa: E402

COMMON = ["--device", "cpu", "--backend", "onnxruntime", "--threads", "1", "--no-progress", "--quiet",
          "--timeout", "5"]


def pid_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:   # a zombie whose parent has not reaped it yet is gone for our purposes
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def node_pid(out: Path) -> int:
    return json.loads((out / "results.json").read_text())["node"]["pid"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def bags(tmp_path_factory, camvid_root):
    return camvid_bags(tmp_path_factory, camvid_root)


def _stamps(bag) -> list[int]:
    with open_bag(bag) as b:
        b.select_topics()
        return [f.stamp_ns for f in b.frames()]


def _check_labels_equal(out_bag, bag, frames_labels, processed_min):
    """The labels the node published (recorded in the output bag) equal the direct computation."""
    got = read_topic(out_bag, "/seg_node/labels")
    stamps = _stamps(bag)
    assert len(got) >= processed_min
    for stamp, labels in got.items():
        k = stamps.index(stamp)           # restored to the original stamp
        np.testing.assert_array_equal(labels, frames_labels[k], err_msg=f"frame {k}")
    return got


def test_live_matches_offline_at_recorded_rate(model, bags, camvid_root, tmp_path, capsys):
    frames = camvid_frames(camvid_root)
    labels, cm = direct_eval(model, frames)
    out, obag = tmp_path / "res", tmp_path / "outbag"
    code, stdout, err = run_cli(["live", "--bag", bags["raw"], "--model", model, "--out", out,
                                 "--output-bag", obag, *COMMON], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert pid_gone(res["node"]["pid"])
    f = res["frames"]
    assert f["sent"] == N_CAMVID and f["processed"] == N_CAMVID and f["dropped"] == 0 and f["rejected"] == 0
    assert f["with_gt"] == N_CAMVID
    lat = res["latency_ms"]
    assert lat["count"] == N_CAMVID and 0 < lat["median_ms"] < 5000 and lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert res["rate"]["sent_hz"] == pytest.approx(10.0, rel=0.3)     # recorded 10 Hz
    assert res["metrics"] == json.loads(json.dumps(cm.to_json_dict(list(res["model"]["class_names"]))))
    assert "-p" in res["node"]["command"] and "qos_depth:=1" in res["node"]["command"]
    assert res["live"]["spin_errors"] == {"count": 0, "last": []}
    # what the node resolved (from its "configured:" log line), not the requested "auto"
    assert res["model"]["description"].startswith("seg_node: onnxruntime [CPUExecutionProvider] on cpu (fp32); "
                                                  "precision auto: fp32"), res["model"]["description"]
    assert res["model"]["description"] in (out / "results.md").read_text()
    for name in ("results.md", "latency_hist.png", "latency_timeline.png", "contact_sheet.png",
                 "per_class_iou.png", "node.log"):
        assert (out / name).exists(), name
    got = _check_labels_equal(obag, bags["raw"], labels, N_CAMVID)
    assert len(got) == N_CAMVID
    with open_bag(obag) as b:
        assert b.topics["/camera/image_raw"][1] == N_CAMVID


def test_live_compressed_rate_max(model, bags, camvid_root, tmp_path, capsys):
    frames = [(jpeg_roundtrip(rgb), gt) for rgb, gt in camvid_frames(camvid_root)]
    labels, cm = direct_eval(model, frames)
    out, obag = tmp_path / "res", tmp_path / "outbag"
    code, _, err = run_cli(["live", bags["jpeg"], "--model", model, "--out", out, "--rate", "max",
                            "--output-bag", obag, *COMMON], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert pid_gone(res["node"]["pid"])
    assert res["frames"]["processed"] == N_CAMVID and res["frames"]["dropped"] == 0
    assert res["metrics"]["miou"] == pytest.approx(cm.compute()["miou"])
    _check_labels_equal(obag, bags["jpeg"], labels, N_CAMVID)


def test_live_loop_replays_the_bag_n_times_at_the_recorded_rate(model, bags, camvid_root, tmp_path, capsys):
    """--loop 3: every lap sent at 10 Hz (also across the seams), accuracy over 3x the frames,
    and a latency trend over the whole soak."""
    frames = camvid_frames(camvid_root)
    _, cm = direct_eval(model, frames)
    out = tmp_path / "res"
    code, stdout, err = run_cli(["live", bags["raw"], "--model", model, "--out", out, "--loop", "3",
                                 *COMMON], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert pid_gone(res["node"]["pid"])
    f = res["frames"]
    assert f["sent"] == 3 * N_CAMVID and f["processed"] + f["dropped"] + f["rejected"] == 3 * N_CAMVID
    assert f["processed"] == 3 * N_CAMVID, f       # a 96x72 tiny model keeps up with 10 Hz
    # seams keep the rate: 15 frames over 14 periods of 100 ms
    assert res["rate"]["sent_hz"] == pytest.approx(10.0, rel=0.15)
    assert res["metrics"]["miou"] == pytest.approx(cm.compute()["miou"])   # same frames, 3 times
    once = cm.compute()
    for i, entry in enumerate(res["metrics"]["per_class"].values()):
        assert entry["gt_pixels"] == 3 * int(once["gt_pixels"][i])
        assert entry["pred_pixels"] == 3 * int(once["pred_pixels"][i])
    trend = res["latency_trend"]
    assert trend["frames"] == 3 * N_CAMVID and trend["duration_s"] == pytest.approx(1.4, abs=0.5)
    assert trend["first_quarter_p95_ms"] > 0 and trend["last_quarter_p95_ms"] > 0
    assert "end-to-end latency slope" in (out / "results.md").read_text()


def test_latency_trend_detects_growth():
    from clipseg_ros.bag.live import latency_trend

    flat = [{"send_ns": i * 33_000_000, "latency_ms": 40.0 + (i % 3)} for i in range(3600)]
    grow = [{"send_ns": i * 33_000_000, "latency_ms": 40.0 + i * 0.05} for i in range(3600)]
    tf, tg = latency_trend(flat), latency_trend(grow)
    assert abs(tf["slope_ms_per_min"]) < 0.1 and tf["duration_s"] == pytest.approx(118.8, abs=0.1)
    assert tg["slope_ms_per_min"] == pytest.approx(0.05 * 60 / 0.033, rel=0.01)   # 0.05 ms per 33 ms frame
    assert tg["last_quarter_p95_ms"] > tg["first_quarter_p95_ms"] + 100
    assert latency_trend(flat[:5]) is None


def test_live_counts_drops_when_replayed_faster_than_the_model(model, camvid_root, tmp_path, capsys):
    bag = tmp_path / "many"
    assert cli.main(["make-bag", str(camvid_root), str(bag), "--limit", "30", "--resize", "192x144",
                     "--no-progress", "--start-time", "1700000000"]) == 0
    capsys.readouterr()
    with open_bag(bag) as b:
        b.select_topics()
        frames = [(np.array(f.rgb), f.gt) for f in b.frames()]
    labels, _ = direct_eval(model, frames)
    out, obag = tmp_path / "res", tmp_path / "outbag"
    # 30 frames recorded at 10 Hz, sent 1000x faster: 0.1 ms apart, far faster than inference
    code, _, err = run_cli(["live", bag, "--model", model, "--out", out, "--rate", "1000",
                            "--output-bag", obag, *COMMON], capsys)
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert pid_gone(res["node"]["pid"])
    f = res["frames"]
    assert f["sent"] == 30
    assert f["dropped"] > 0 and f["processed"] >= 1
    assert f["processed"] + f["dropped"] + f["rejected"] == 30
    assert res["latency_ms"]["count"] == f["processed"]
    got = _check_labels_equal(obag, bag, labels, f["processed"])
    assert len(got) == f["processed"]


def _start_cli(args, tmp_path):
    exe = VENV_BIN / "clipseg-bag-eval"
    if not exe.exists():
        pytest.skip("clipseg-bag-eval console script not installed (pip install -e .)")
    return subprocess.Popen([str(exe), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _wait_pid_line(proc) -> int:
    line = proc.stdout.readline()
    assert "seg_node started (pid" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return int(line.split("(pid ")[1].split(")")[0])


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_live_leaves_no_process_when_interrupted(how, model, bags, tmp_path):
    """Ctrl-C / SIGTERM: the CLI stops its node and exits; SIGKILL of the CLI: the node dies with it."""
    out = tmp_path / "res"
    proc = _start_cli(["live", "--bag", bags["raw"], "--model", model, "--out", out, "--rate", "0.05",
                       *COMMON], tmp_path)
    try:
        pid = _wait_pid_line(proc)
        deadline = time.monotonic() + 30
        while "segmenting" not in _read(out / "node.log") and time.monotonic() < deadline:
            time.sleep(0.05)                    # the node is up ...
        time.sleep(1.0)                         # ... and the replay under way (frames 2 s apart)
        proc.send_signal(getattr(signal, how))
        rc = proc.wait(timeout=30)
        err = proc.stderr.read()
        assert pid_gone(pid), f"seg_node pid {pid} still running after {how}"
        if how == "SIGINT":
            assert rc == 130 and "interrupted" in err and "Traceback" not in err, err
        elif how == "SIGTERM":
            assert rc == 128 + signal.SIGTERM and "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_live_node_failure_is_a_clean_error(model, bags, tmp_path, capsys):
    out = tmp_path / "res"
    code, stdout, err = run_cli(["live", "--bag", bags["raw"], "--model", model, "--out", out,
                                 "--node-param", f"model:={tmp_path / 'missing.clipseg'}", *COMMON], capsys)
    assert_clean_error(code, err, "seg_node exited")
    pid = int(stdout.split("(pid ")[1].split(")")[0])
    assert pid_gone(pid)
