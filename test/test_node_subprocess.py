"""The real ``seg_node`` console script as a subprocess.

The subprocess inherits os.environ, so it uses the shared-memory-only DDS transport, domain id and
log folder that conftest.py set.  ``device:=cpu backend:=onnxruntime`` keeps PyTorch out of the
node's start-up (faster).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from clipseg_ros import image_codec  # noqa: E402
from ros_helpers import (  # noqa: E402
    RosHarness, compressed_msg, image_msg, kill_process, known_model, make_header, pattern_image,
    REPO_ROOT, png_bomb, process_output, seg_node_command, start_process, stop_process, truncated_copy,
    wait_for,
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


# ------------------------------------------------------------------------------------------------
# robustness: a node process measured from outside
# ------------------------------------------------------------------------------------------------

class NodeProc:
    """A ``seg_node`` subprocess in namespace ``ns`` with the tester's input publisher, a labels
    collector (reliable) and a /diagnostics collector; :meth:`up` waits for the first labels."""

    def __init__(self, ros, model, tmp_path, ns, *params, compressed=False, env=None,
                 reliable_outputs=True):
        self.ros, self.ns = ros, ns
        name = "image/compressed" if compressed else "image"
        in_topic = f"/test{ns}/{name}"
        cmd = seg_node_command() + ["--ros-args", "-p", f"model:={model}", *FAST,
                                    "-p", "diagnostics_period:=0.2", *params,
                                    "-r", f"{name}:={in_topic}", "-r", f"__ns:={ns}"]
        if compressed:
            cmd += ["-p", "input_compressed:=true"]
        self.proc = start_process(cmd, log_path=tmp_path / f"node{ns.replace('/', '_')}.log", env=env)
        self.msg_type = CompressedImage if compressed else Image
        self.pub = ros.publisher(self.msg_type, in_topic, reliable=True)
        self.labels = ros.collect(Image, f"{ns}/seg_node/labels", reliable=reliable_outputs)
        self.diag = ros.collect(DiagnosticArray, "/diagnostics")
        self.prefix = f"{ns.strip('/')}/seg_node: "

    def up(self, first_msg) -> None:
        def ready():
            assert self.proc.poll() is None, process_output(self.proc)
            return (self.pub.get_subscription_count() > 0
                    and self.ros.node.count_publishers(f"{self.ns}/seg_node/labels") > 0)

        wait_for(ready, 60.0, interval=0.05, what="seg_node to come up")
        wait_for(lambda: self.labels.sub.get_publisher_count() > 0, 10.0, what="labels publisher matched")

        def first_labels():   # discovery is not symmetric between processes: resend until labels come
            self.pub.publish(first_msg())
            try:
                return self.labels.wait(1, timeout=0.5)
            except AssertionError:
                return None

        wait_for(first_labels, 30.0, interval=0.0, what="the first labels")

    def values(self, predicate=lambda v: True, timeout=20.0, start=0) -> dict:
        """The key/values of the first status of this node (from index ``start``) with ``predicate``."""
        def match(m):
            st = next((s for s in m.status if s.name.startswith(self.prefix)), None)
            return st is not None and predicate({kv.key: kv.value for kv in st.values})
        msg = self.diag.wait_until(match, timeout, what=f"a {self.prefix} status", start=start)
        st = next(s for s in msg.status if s.name.startswith(self.prefix))
        return {"level": st.level, "message": st.message, **{kv.key: kv.value for kv in st.values}}

    def peak_rss_mb(self) -> float:
        """VmHWM of the node process: its peak resident set size so far."""
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def close(self) -> None:
        kill_process(self.proc)
        self.ros.unsubscribe(self.labels)
        self.ros.unsubscribe(self.diag)
        self.ros.node.destroy_publisher(self.pub)


def _png_msg(data: bytes):
    msg = CompressedImage(header=make_header(), format="png")
    msg.data = data
    return msg


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc (Linux)")
def test_png_bomb_is_rejected_without_the_memory_of_decoding_it(ros, model, tmp_path):
    """A 0.4 MB PNG declaring 20000x20000 (decoded: 1.2 GB of RGB) sent to a real node process:
    rejected with the reason, and the process's peak RSS hardly moves."""
    bomb = png_bomb(20000, 20000)
    node = NodeProc(ros, model, tmp_path, "/sub_bomb", compressed=True)
    try:
        node.up(lambda: compressed_msg(pattern_image(36, 52), "png"))
        before = node.peak_rss_mb()
        node.pub.publish(_png_msg(bomb))
        values = node.values(lambda v: v["frames rejected"] == "1", timeout=60.0)
        after = node.peak_rss_mb()
        print(f"\nPNG bomb ({len(bomb)} bytes, 20000x20000): node peak RSS {before:.0f} MB before, "
              f"{after:.0f} MB after (+{after - before:.0f} MB)")
        assert after - before < 150.0, (before, after)      # decoding costs > 1200 MB
        assert "declares 20000x20000" in values["last rejection reason"], values
        assert "not decoded" in values["last rejection reason"], values
        # still working
        sent = compressed_msg(pattern_image(36, 52), "png")
        node.pub.publish(sent)
        assert np.all(image_codec.image_to_array(node.labels.wait_stamp(sent.header.stamp, 20.0)) == LABEL)
        assert stop_process(node.proc, signal.SIGTERM, timeout=20.0) == 0, process_output(node.proc)
    finally:
        node.close()


def test_malformed_set_parameters_request_does_not_stop_the_node(ros, model, tmp_path):
    """A SetParameters request with ParameterValue type 99 makes rclpy's parameter service raise
    ValueError inside the executor; the node logs it, counts it and goes on; SIGTERM still stops it."""
    node = NodeProc(ros, model, tmp_path, "/sub_badparam")
    try:
        node.up(lambda: image_msg(pattern_image(36, 52)))
        client = ros.node.create_client(SetParameters, "/sub_badparam/seg_node/set_parameters")
        try:
            assert client.wait_for_service(timeout_sec=20.0)
            bad = ParameterMsg(name="overlay_alpha", value=ParameterValue(type=99, double_value=0.3))
            for _ in range(2):
                client.call_async(SetParameters.Request(parameters=[bad]))
            def counted_or_exited():
                if node.proc.poll() is not None:
                    return True
                try:
                    return node.values(lambda v: v.get("callback errors") == "2", timeout=0.3)
                except AssertionError:
                    return None
            wait_for(counted_or_exited, 30.0, interval=0.0, what="the node to count both requests")
            assert node.proc.poll() is None, (f"the node exited with rc {node.proc.returncode}:\n"
                                              + process_output(node.proc)[-3000:])
            values = node.values(lambda v: v.get("callback errors") == "2")
            assert "ValueError" in values["last callback error"] and "99" in values["last callback error"]
            # the parameter service itself still answers good requests
            ok = SetParameters.Request(parameters=[Parameter("overlay_alpha", value=0.25).to_parameter_msg()])
            future = client.call_async(ok)
            wait_for(future.done, 20.0, what="the set_parameters response")
            assert future.result().results[0].successful
        finally:
            ros.node.destroy_client(client)
        for _ in range(3):   # frames are still processed
            sent = image_msg(pattern_image(36, 52))
            node.pub.publish(sent)
            assert np.all(image_codec.image_to_array(node.labels.wait_stamp(sent.header.stamp, 20.0)) == LABEL)
        rc = stop_process(node.proc, signal.SIGTERM, timeout=20.0)
        out = process_output(node.proc)
        assert rc == 0, out
        assert "a callback failed and was skipped" in out and "is not a valid Parameter.Type" in out, out
        assert "Traceback" not in out, out
    finally:
        node.close()


# ------------------------------------------------------------------------------------------------
# large images over shared memory: the DDS setting of the tests, and config/'s profile
# ------------------------------------------------------------------------------------------------

ROAD = (128, 64, 128)     # the CamVid road colour: 0x80 sits at byte -60 of an rgb8 image of it


def _road_palette() -> str:
    pal = [[0, 0, 0]] * K
    pal[LABEL] = list(ROAD)
    return "palette:=[" + ",".join(str(v) for c in pal for v in c) + "]"


def _send_and_check(node: NodeProc, rgb: np.ndarray, outputs: dict, timeout: float = 60.0) -> None:
    """Publish ``rgb`` and check labels, color and overlay of that frame arrive intact."""
    sent = image_msg(rgb)
    node.pub.publish(sent)
    try:
        labels = node.labels.wait_stamp(sent.header.stamp, timeout)
    except AssertionError as exc:
        diag = node.diag.messages[-1].status if node.diag.messages else []
        values = [(kv.key, kv.value) for st in diag for kv in st.values]
        raise AssertionError(f"{exc}; last diagnostics: {values}") from None
    h, w = rgb.shape[:2]
    assert (labels.width, labels.height, len(labels.data)) == (w, h, w * h)
    assert np.all(image_codec.image_to_array(labels) == LABEL)
    del labels
    color = outputs["color"].wait_stamp(sent.header.stamp, timeout)
    assert (color.width, color.height, len(color.data)) == (w, h, w * h * 3)
    assert np.all(image_codec.image_to_rgb(color) == ROAD)
    del color
    overlay = outputs["overlay"].wait_stamp(sent.header.stamp, timeout)
    assert (overlay.width, overlay.height, len(overlay.data)) == (w, h, w * h * 3)
    # overlay_alpha 0.5: 2*overlay ~ input + color (each channel rounded once)
    twice = image_codec.image_to_rgb(overlay).astype(np.int16) * 2
    del overlay
    twice -= rgb.astype(np.int16)
    twice -= np.asarray(ROAD, np.int16)
    assert np.abs(twice).max() <= 2


@pytest.mark.parametrize("size", [(480, 640), (3000, 4000)], ids=["640x480_gray128_rows", "4000x3000"])
def test_large_frames_and_outputs_arrive_intact(ros, model, tmp_path, size):
    """Under the tests' DDS setting every large message arrives whole: a 640x480 frame whose last
    rows are gray 128 and its road-coloured ~/color and ~/overlay (0x80 at byte -60), and a
    4000x3000 frame (36 MB in, 12 + 36 + 36 MB out).  With SHM?max_msg_size=4MB&sockets_size=32MB
    these arrived 60 bytes short (or not at all over 4 MB) and rclpy dropped them."""
    h, w = size
    # reliable input, as from a bag player: a best-effort 36 MB message is ~550 fragments of 64 KB
    # under the builtin SHM transport, and one lost fragment loses it (see docs/node.md)
    node = NodeProc(ros, model, tmp_path, f"/sub_large_{w}", "-p", _road_palette(),
                    "-p", "qos_reliability:=reliable", "-p", "qos_depth:=2")
    outputs = {name: ros.collect(Image, f"{node.ns}/seg_node/{name}", reliable=True, depth=2)
               for name in ("color", "overlay")}
    try:
        node.up(lambda: image_msg(pattern_image(36, 52)))
        for col in outputs.values():
            wait_for(lambda col=col: col.sub.get_publisher_count() > 0, 20.0, what="output matched")
        wait_for(lambda: ros.node.count_subscribers(f"{node.ns}/seg_node/overlay") > 0, 20.0,
                 what="the node to see our subscriptions")
        time.sleep(0.5)   # the node's publishers match our readers asynchronously too
        rgb = pattern_image(h, w, seed=5)
        rgb[-max(8, h // 12):] = 128                          # gray-128 bottom rows
        assert image_msg(rgb).data[-60] == 0x80
        _send_and_check(node, rgb, outputs)
        assert stop_process(node.proc, signal.SIGTERM, timeout=30.0) == 0, process_output(node.proc)
    finally:
        for col in outputs.values():
            ros.unsubscribe(col)
        node.close()


def shm_only_profile(dest: Path) -> Path:
    """config/fastdds_large_images.xml without its UDP transport, so DDS stays on this machine."""
    import xml.etree.ElementTree as ET

    ns = "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"
    ET.register_namespace("", ns)
    tree = ET.parse(REPO_ROOT / "config" / "fastdds_large_images.xml")
    root = tree.getroot()
    descriptors = root.find(f"{{{ns}}}transport_descriptors")
    udp_ids = set()
    for td in list(descriptors):
        if td.find(f"{{{ns}}}type").text.strip() != "SHM":
            udp_ids.add(td.find(f"{{{ns}}}transport_id").text.strip())
            descriptors.remove(td)
    users = root.find(f"{{{ns}}}participant/{{{ns}}}rtps/{{{ns}}}userTransports")
    for t in list(users):
        if t.text.strip() in udp_ids:
            users.remove(t)
    assert udp_ids and len(users) == 1, "the profile should list an SHM and a UDP transport"
    tree.write(dest, xml_declaration=True, encoding="UTF-8")
    return dest


def test_fastdds_profile_delivers_large_best_effort_images(ros, model, tmp_path):
    """The shipped profile (its SHM part) under a node that publishes 1280x720 outputs best-effort:
    the frames arrive.  Without it, Fast DDS's 512 KB default segment lost nearly all of them
    (0 to 5 of 24 in our runs).  FASTDDS_BUILTIN_TRANSPORTS=SHM stays set as a safety net."""
    profile = shm_only_profile(tmp_path / "fastdds_shm_only.xml")
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS="SHM", FASTRTPS_DEFAULT_PROFILES_FILE=str(profile),
               FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    node = NodeProc(ros, model, tmp_path, "/sub_profile", "-p", "output_qos_reliability:=best_effort",
                    "-p", _road_palette(), env=env, reliable_outputs=False)
    color = ros.collect(Image, f"{node.ns}/seg_node/color", reliable=False, depth=30)
    try:
        node.up(lambda: image_msg(pattern_image(36, 52)))
        wait_for(lambda: color.sub.get_publisher_count() > 0, 20.0, what="color publisher matched")
        wait_for(lambda: ros.node.count_subscribers(f"{node.ns}/seg_node/color") > 0, 20.0,
                 what="the node to see our color subscription")
        time.sleep(0.5)
        rgb = pattern_image(720, 1280, seed=6)
        arrived = 0
        for _ in range(10):
            sent = image_msg(rgb)
            node.pub.publish(sent)
            node.labels.wait_stamp(sent.header.stamp, 30.0)   # small enough for any segment
            try:
                got = color.wait_stamp(sent.header.stamp, 5.0)
            except AssertionError:
                continue
            assert len(got.data) == 1280 * 720 * 3 and np.all(image_codec.image_to_rgb(got) == ROAD)
            arrived += 1
        assert arrived >= 8, f"only {arrived} of 10 best-effort 2.7 MB color images arrived"
        assert "XMLPARSER" not in process_output(node.proc), process_output(node.proc)
    finally:
        ros.unsubscribe(color)
        node.close()
