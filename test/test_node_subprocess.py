"""The real ``seg_node`` console script as a subprocess.

The subprocess inherits os.environ, so it uses the shared-memory-only DDS transport, domain id and
log folder that conftest.py set.  ``device:=cpu backend:=onnxruntime`` keeps PyTorch out of the
node's start-up (faster).
"""
from __future__ import annotations

import signal

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from sensor_msgs.msg import Image  # noqa: E402

from clipseg_ros import image_codec  # noqa: E402
from ros_helpers import (  # noqa: E402
    RosHarness, image_msg, kill_process, known_model, pattern_image, process_output, seg_node_command,
    start_process, stop_process, truncated_copy, wait_for,
)

pytestmark = pytest.mark.ros

LABEL, K = 3, 5
FAST = ["-p", "device:=cpu", "-p", "backend:=onnxruntime", "-p", "threads:=1"]


@pytest.fixture(scope="module")
def model():
    return known_model(LABEL, K, (64, 96))


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness("test_node_subprocess")
    yield harness
    harness.close()


def run_to_exit(cmd, tmp_path, timeout=60.0):
    proc = start_process(cmd, log_path=tmp_path / "node.log")
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_process(proc)
    return proc.returncode, process_output(proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_console_script_segments_and_stops_cleanly(ros, model, tmp_path, sig):
    ns = f"/sub_{sig.name.lower()}"
    cmd = seg_node_command() + ["--ros-args", "-p", f"model:={model}", *FAST,
                                "-r", f"image:=/test{ns}/image", "-r", f"__ns:={ns}"]
    proc = start_process(cmd, log_path=tmp_path / "node.log")
    try:
        pub = ros.publisher(Image, f"/test{ns}/image", reliable=True)
        labels = ros.collect(Image, f"{ns}/seg_node/labels", reliable=True)

        def up():
            assert proc.poll() is None, process_output(proc)
            return pub.get_subscription_count() > 0 and ros.node.count_publishers(f"{ns}/seg_node/labels") > 0

        wait_for(up, 60.0, interval=0.05, what="seg_node to come up")
        wait_for(lambda: labels.sub.get_publisher_count() > 0, 10.0, what="labels publisher matched")
        rgb = pattern_image(36, 52)
        # discovery is not symmetric between processes: resend until the first labels come back
        def first_labels():
            pub.publish(image_msg(rgb))
            try:
                return labels.wait(1, timeout=0.5)
            except AssertionError:
                return None

        wait_for(first_labels, 30.0, interval=0.0, what="the first labels")
        for i in range(3):
            sent = image_msg(rgb, "bgr8")
            pub.publish(sent)
            got = labels.wait_stamp(sent.header.stamp, 20.0)
            assert got.header.frame_id == sent.header.frame_id
            arr = image_codec.image_to_array(got)
            assert arr.shape == (36, 52) and np.all(arr == LABEL)
        rc = stop_process(proc, sig, timeout=20.0)
        out = process_output(proc)
        assert rc == 0, out
        assert "Traceback" not in out, out
        assert "segmenting /test" in out
    finally:
        kill_process(proc)


def test_truncated_model_exits_nonzero_naming_the_file(model, tmp_path):
    cut = truncated_copy(model, tmp_path / "cut_model.clipseg")
    rc, out = run_to_exit(seg_node_command() + ["--ros-args", "-p", f"model:={cut}", *FAST], tmp_path)
    assert rc not in (0, None) and rc > 0, out
    assert "cut_model.clipseg" in out and "Traceback" not in out, out


def test_missing_model_exits_nonzero_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_dir" / "nothing.clipseg"
    rc, out = run_to_exit(seg_node_command() + ["--ros-args", "-p", f"model:={missing}", *FAST], tmp_path)
    assert rc not in (0, None) and rc > 0, out
    assert str(missing) in out and "Traceback" not in out, out


def test_bad_parameter_at_start_exits_nonzero(model, tmp_path):
    rc, out = run_to_exit(seg_node_command() + ["--ros-args", "-p", f"model:={model}",
                                                "-p", "device:=gpu7"], tmp_path)
    assert rc == 1, out
    assert "gpu7" in out and "Traceback" not in out, out
