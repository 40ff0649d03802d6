"""Several cameras, one model (the ``cameras`` parameter), through the real node with real messages.

The planning of topics and output names is plain Python (``node_cameras``); the rest drives a real
SegNode: per-camera outputs with each input's header, per-camera drop-oldest mailboxes, frames that
wait together going through one batched inference call (a dynamic-batch model file) or one after
the other (the bundled model's fixed batch of one), per-camera diagnostics and camera_info, the
lifecycle, start-up errors and the console script with a ``cameras`` list on its command line.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from clipseg_ros import node_cameras
from clipseg_ros.node_params import validate_parameter

# ------------------------------------------------------------------------------------------------
# planning (no ROS)
# ------------------------------------------------------------------------------------------------


def test_plan_names_outputs_after_each_cameras_namespace():
    plans = node_cameras.plan_cameras(["/front/image_raw", "rear/image_raw", "/robot/left/image"],
                                      ["/front/image_raw", "/ns/rear/image_raw", "/robot/left/image"],
                                      compressed=False)
    assert [p.key for p in plans] == ["front", "ns/rear", "robot/left"]
    assert [p.subscribe for p in plans] == ["/front/image_raw", "/ns/rear/image_raw", "/robot/left/image"]
    assert plans[0].output("labels") == "~/front/labels"
    assert plans[2].output("groups/color") == "~/robot/left/groups/color"
    comp = node_cameras.plan_cameras(["/front/image_raw"], ["/front/image_raw"], compressed=True)
    assert comp[0].subscribe == "/front/image_raw/compressed" and comp[0].key == "front"
    single, = node_cameras.single_camera(compressed=False)
    assert (single.key, single.subscribe, single.output("labels")) == ("", "image", "~/labels")
    assert node_cameras.single_camera(True)[0].subscribe == "image/compressed"


@pytest.mark.parametrize("entries, words", [
    (["/image_raw"], ["cameras[0]", "'/image_raw'", "no namespace"]),
    (["/a/image_raw", "/a/image_rect"], ["cameras[1]", "cameras[0]", "/a", "collide"]),
    (["/a/image_raw", "/b/image_raw", "/a/image_raw"], ["cameras[2]", "same topic", "cameras[0]"]),
    (["/a/image_raw/compressed"], ["cameras[0]", "not its /compressed sibling"]),
])
def test_plan_rejects_cameras_it_cannot_serve(entries, words):
    compressed = entries[0].endswith("/compressed")
    with pytest.raises(node_cameras.CameraPlanError) as exc:
        node_cameras.plan_cameras(entries, entries, compressed=compressed)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_cameras_parameter_validation():
    assert validate_parameter("cameras", ()) is None
    assert validate_parameter("cameras", ("/a/image_raw", "/b/image_raw")) is None
    assert "cameras[1]" in validate_parameter("cameras", ("/a/image_raw", " "))
    reason = validate_parameter("cameras", ("/a/image_raw", "/a/image_raw"))
    assert "cameras[1]" in reason and "repeats cameras[0]" in reason


# ------------------------------------------------------------------------------------------------
# the real node
# ------------------------------------------------------------------------------------------------

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from clipseg_ros import image_codec  # noqa: E402
from clipseg_ros.node import DEFAULT_MODEL, SegNode, StartupError  # noqa: E402
from clipseg_ros.segmenter import Segmenter  # noqa: E402
from ros_helpers import (  # noqa: E402
    RosHarness, compressed_msg, fixed_batch_copy, image_msg, known_model, make_header, pattern_image, stamp_ns,
    wait_for,
)

pytestmark = pytest.mark.ros
TIMEOUT = 20.0
_ids = itertools.count()


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness("test_node_cameras")
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def batch_model(tmp_path_factory) -> str:
    """The bundled CamVid network re-exported with a dynamic batch dimension (whatever batch the
    bundled file's graph has)."""
    from clipseg_ros.model_file import ModelFile, save_model_file

    mf = ModelFile(DEFAULT_MODEL)
    path = tmp_path_factory.mktemp("batch") / "camvid_dynamic_batch.clipseg"
    save_model_file(path, mf.build_network(), mf.meta.class_names, palette=mf.meta.palette,
                    input_size=mf.meta.input_size, mean=mf.meta.mean, std=mf.meta.std)
    return str(path)


class Gate:
    """Holds the node's worker before it processes the next frames, so that frames pile up in the
    mailboxes exactly as they would behind a slow inference; :meth:`release` lets it go on."""

    def __init__(self, node):
        self.node = node
        self.event = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []
        inner = node._process

        def gated(batch):
            self.batches.append([cam.key for cam, _ in batch])
            self.entered.set()
            self.event.wait(TIMEOUT)
            return inner(batch)

        node._process = gated

    def release(self) -> None:
        self.event.set()


class Cams:
    """A SegNode with ``cameras`` = ``/cN_<k>/image_raw`` for each key, our publishers and
    collectors of each camera's labels."""

    def __init__(self, ros, model: str, keys=("a", "b"), compressed: bool = False, **params):
        self.ros = ros
        n = next(_ids)
        self.node_name = f"multi{n}"
        self.keys = [f"c{n}_{k}" for k in keys]
        topics = [f"/{k}/image_raw" for k in self.keys]
        params = {"model": model, "device": "cpu", "threads": 1, "cameras": topics,
                  "input_compressed": compressed, **params}
        self.node = ros.add(SegNode(self.node_name, context=ros.context,
                                    parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
        self.pub = {k: ros.publisher(CompressedImage if compressed else Image,
                                     f"/{k}/image_raw" + ("/compressed" if compressed else ""),
                                     reliable=True, depth=30) for k in self.keys}
        self.labels = {k: ros.collect(Image, self.out(k, "labels"), reliable=True) for k in self.keys}
        for k in self.keys:
            ros.wait_matched(self.pub[k])
            wait_for(lambda k=k: self.labels[k].sub.get_publisher_count() >= 1, TIMEOUT,
                     what=f"{k} labels matched")
        cams = {c.key: c for c in self.node._cameras}
        for k in self.keys:
            wait_for(lambda k=k: cams[k].sub.get_publisher_count() >= 1, TIMEOUT, what=f"{k} image matched")

    def out(self, key: str, name: str) -> str:
        return f"/{self.node_name}/{key}/{name}"

    def send(self, key: str, msg) -> None:
        self.pub[key].publish(msg)

    def close(self) -> None:
        for col in self.labels.values():
            self.ros.unsubscribe(col)
        self.ros.remove(self.node)


@pytest.fixture
def rigs(ros):
    made = []

    def make(*args, **kwargs):
        rig = Cams(ros, *args, **kwargs)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def _header(frame_id: str, sec: int, nanosec: int = 0):
    h = make_header(frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def _now_header(ros, frame_id: str):
    return make_header(frame_id, ros.node.get_clock().now().to_msg())


def test_each_camera_gets_its_own_outputs_with_its_own_header(rigs, ros):
    """Different images on two cameras: each camera's ~/<camera>/labels is what the model gives
    for that camera's image, with that image's header, and nothing crosses over."""
    rig = rigs(str(DEFAULT_MODEL))
    a, b = rig.keys
    assert rig.node.cameras == [a, b]
    assert rig.node.input_topics == [f"/{a}/image_raw", f"/{b}/image_raw"]
    seg = Segmenter(DEFAULT_MODEL, device="cpu", threads=1)
    images = {a: pattern_image(120, 160, seed=1), b: pattern_image(120, 160, seed=7)}
    want = {k: seg(img).labels for k, img in images.items()}
    assert not np.array_equal(want[a], want[b]), "the test images must segment differently"
    color = ros.collect(Image, rig.out(b, "color"), reliable=True)
    wait_for(lambda: rig.node._cameras[1].pubs["color"].get_subscription_count() >= 1, TIMEOUT,
             what="b color matched")
    try:
        for i in range(3):       # a round at a time: the mailboxes keep only the newest frame
            for j, k in enumerate((a, b)):
                rig.send(k, image_msg(images[k], header=_header(f"{k}_optical", 100 + i, j * 1000)))
            for k in (a, b):
                rig.labels[k].wait(i + 1, TIMEOUT)
        for k in (a, b):
            msgs = rig.labels[k].wait(3, TIMEOUT)
            for i, msg in enumerate(msgs):
                assert msg.header.frame_id == f"{k}_optical"
                assert stamp_ns(msg.header.stamp) == (100 + i) * 10**9 + (0 if k == a else 1000)
                np.testing.assert_array_equal(image_codec.image_to_array(msg), want[k])
        # ~/b/color only for b (nobody subscribed a's): the palette colors of b's labels
        got = color.wait_until(lambda m: stamp_ns(m.header.stamp) == 102 * 10**9 + 1000, TIMEOUT)
        palette = np.asarray(seg.palette, np.uint8)
        np.testing.assert_array_equal(image_codec.image_to_array(got), palette[want[b]])
        # the counters are updated after the frame's last output went out
        wait_for(lambda: rig.node.camera_stats(b)["color_published"] == 3, TIMEOUT, what="b's counters")
        sa, sb = rig.node.camera_stats(a), rig.node.camera_stats(b)
        assert sa["processed"] == sb["processed"] == 3
        assert sa["color_published"] == 0 and sb["color_published"] == 3
        assert rig.node.stats["processed"] == 6
        with pytest.raises(KeyError, match="no camera"):
            rig.node.camera_stats("nope")
    finally:
        ros.unsubscribe(color)


def test_waiting_frames_are_batched_into_one_inference_call(rigs, batch_model):
    """With a dynamic-batch model file, frames that wait together go through ONE inference call;
    the labels equal the single-frame results, and each mailbox keeps only its newest frame."""
    # keep last 10, reliable: every frame sent reaches the callback (and the mailbox)
    rig = rigs(batch_model, keys=("a", "b", "c"), qos_depth=10, qos_reliability="reliable")
    node = rig.node
    a, b, c = rig.keys
    assert node.segmenter.batchable
    seg = Segmenter(batch_model, device="cpu", threads=1)
    imgs = {k: pattern_image(96, 128, seed=s) for k, s in zip(rig.keys, (2, 3, 4))}
    want = {k: seg(img).labels for k, img in imgs.items()}
    calls = []
    run_batch = node.segmenter._backend.run_batch

    def counting(images, want_confidence):
        calls.append(len(images))
        return run_batch(images, want_confidence)

    node.segmenter._backend.run_batch = counting
    gate = Gate(node)
    rig.send(a, image_msg(imgs[a], header=_header("a", 1)))          # the worker takes it and waits
    assert gate.entered.wait(TIMEOUT)
    for sec in (2, 3, 4):                                            # a: two of three are dropped
        rig.send(a, image_msg(imgs[a], header=_header("a", sec)))
    rig.send(b, image_msg(imgs[b], header=_header("b", 5)))
    rig.send(c, image_msg(imgs[c], header=_header("c", 6)))
    cams = {cam.key: cam for cam in node._cameras}
    wait_for(lambda: node.camera_stats(a)["received"] == 4 and all(
        cams[k].slot is not None for k in rig.keys), TIMEOUT, what="a frame waiting on every camera")
    gate.release()
    got_a = rig.labels[a].wait(2, TIMEOUT)
    assert [m.header.stamp.sec for m in got_a] == [1, 4]              # the newest of the waiting ones
    got_b, = rig.labels[b].wait(1, TIMEOUT)
    got_c, = rig.labels[c].wait(1, TIMEOUT)
    assert (got_b.header.stamp.sec, got_c.header.stamp.sec) == (5, 6)
    for k, msg in ((a, got_a[1]), (b, got_b), (c, got_c)):
        np.testing.assert_array_equal(image_codec.image_to_array(msg), want[k])
    assert gate.batches == [[a], [a, b, c]]
    assert calls == [3], calls                 # the first frame alone (no batch), then one call of 3
    wait_for(lambda: node.stats["processed"] == 4, TIMEOUT, what="the counters")
    sa = node.camera_stats(a)
    assert (sa["received"], sa["processed"], sa["dropped"], sa["batched"]) == (4, 2, 2, 1)
    for k in (b, c):
        s = node.camera_stats(k)
        assert (s["received"], s["processed"], s["dropped"], s["batched"]) == (1, 1, 0, 1)


def test_a_fixed_batch_model_runs_waiting_frames_one_after_the_other(rigs, tmp_path):
    """A model file with a fixed batch of one (as files exported before batching came): frames
    that wait together still all get segmented (one call each) and the diagnostics say that the
    node does not batch."""
    fixed = fixed_batch_copy(DEFAULT_MODEL, tmp_path / "fixed_batch.clipseg")
    rig = rigs(str(fixed), qos_depth=10, qos_reliability="reliable")
    node = rig.node
    a, b = rig.keys
    assert not node.segmenter.batchable
    gate = Gate(node)
    rig.send(a, image_msg(pattern_image(seed=1), header=_header("a", 1)))
    assert gate.entered.wait(TIMEOUT)
    rig.send(a, image_msg(pattern_image(seed=1), header=_header("a", 2)))
    rig.send(b, image_msg(pattern_image(seed=2), header=_header("b", 3)))
    cams = {cam.key: cam for cam in node._cameras}
    wait_for(lambda: all(cams[k].slot is not None for k in (a, b)), TIMEOUT, what="both waiting")
    gate.release()
    assert [m.header.stamp.sec for m in rig.labels[a].wait(2, TIMEOUT)] == [1, 2]
    assert rig.labels[b].wait(1, TIMEOUT)[0].header.stamp.sec == 3
    assert gate.batches == [[a], [a, b]]
    wait_for(lambda: node.stats["processed"] == 3, TIMEOUT, what="the counters")
    assert node.stats["batched"] == 0
    values = {kv.key: kv.value for kv in node.diagnostic_status(b).values}
    assert values["batched inference"].startswith("no")


def test_bad_frame_on_one_camera_does_not_touch_the_other(rigs):
    rig = rigs(known_model(label=1), compressed=True)
    a, b = rig.keys
    bad = CompressedImage(header=_header("a", 7), format="jpeg", data=b"not a jpeg at all")
    rig.send(a, bad)
    rig.send(b, compressed_msg(pattern_image(), "png", header=_header("b", 8)))
    msg, = rig.labels[b].wait(1, TIMEOUT)
    assert msg.header.stamp.sec == 8 and int(image_codec.image_to_array(msg).max()) == 1
    wait_for(lambda: rig.node.camera_stats(a)["rejected"] == 1 and rig.node.camera_stats(b)["processed"] == 1,
             TIMEOUT, what="a's rejection and b's counters")
    sa, sb = rig.node.camera_stats(a), rig.node.camera_stats(b)
    assert sa["processed"] == 0 and "jpeg" in sa["last_rejection"].lower()
    assert sb["rejected"] == 0 and sb["processed"] == 1
    assert len(rig.labels[a]) == 0


def test_per_camera_diagnostics_and_camera_info(rigs, ros):
    rig = rigs(known_model(), diagnostics_period=0.2, qos_depth=10, qos_reliability="reliable")
    a, b = rig.keys
    diag = ros.collect(DiagnosticArray, "/diagnostics")
    info_pub = ros.publisher(CameraInfo, f"/{a}/camera_info", reliable=True)
    info_out = {k: ros.collect(CameraInfo, rig.out(k, "camera_info"), reliable=True) for k in (a, b)}
    cams = {cam.key: cam for cam in rig.node._cameras}
    try:
        wait_for(lambda: cams[a].sub_camera_info.get_publisher_count() >= 1, TIMEOUT, what="info matched")
        for k in (a, b):
            wait_for(lambda k=k: info_out[k].sub.get_publisher_count() >= 1, TIMEOUT, what="info out")
        stamp = _header("a", 50, 5)
        info = CameraInfo(header=stamp, width=64, height=48, k=[40.0, 0, 32, 0, 40.0, 24, 0, 0, 1])
        info_pub.publish(info)
        wait_for(lambda: len(cams[a].caminfos) == 1, TIMEOUT, what="camera_info stored")
        for _ in range(2):
            rig.send(a, image_msg(pattern_image(), header=_now_header(ros, "a")))
        rig.send(a, image_msg(pattern_image(), header=_header("a", 50, 5)))
        rig.send(b, image_msg(pattern_image(), header=_now_header(ros, "b")))
        rig.labels[b].wait(1, TIMEOUT)
        wait_for(lambda: rig.node.camera_stats(a)["processed"] + rig.node.camera_stats(a)["dropped"] == 3,
                 TIMEOUT, what="a's frames")
        out = info_out[a].wait_until(lambda m: m.header.stamp.sec == 50, TIMEOUT)
        assert out.header.frame_id == "a" and list(out.k) == list(info.k)
        assert len(info_out[b]) == 0          # b has no camera_info: none published for it

        names = {k: f"{rig.node_name}: segmentation {k}" for k in (a, b)}

        def both(m):
            st = {s.name: s for s in m.status}
            if not set(names.values()) <= set(st):
                return None
            va = {kv.key: kv.value for kv in st[names[a]].values}
            vb = {kv.key: kv.value for kv in st[names[b]].values}
            return m if (va["frames received"], vb["frames received"], vb["frames processed"]) == (
                "3", "1", "1") else None

        msg = diag.wait_until(both, TIMEOUT, what="a status for each camera")
        st = {s.name: s for s in msg.status}
        va = {kv.key: kv.value for kv in st[names[a]].values}
        vb = {kv.key: kv.value for kv in st[names[b]].values}
        assert va["camera"] == a and vb["camera"] == b
        assert va["input topic"] == f"/{a}/image_raw" and vb["input topic"] == f"/{b}/image_raw"
        assert va["cameras in this node"] == "2" and va["batched inference"] == "yes"
        assert vb["frames processed"] == "1"
    finally:
        for col in (diag, *info_out.values()):
            ros.unsubscribe(col)


def test_lifecycle_with_several_cameras(rigs, ros):
    """deactivate drops every camera's subscriptions and keeps the model; activate brings them back."""
    from rclpy.lifecycle import TransitionCallbackReturn

    rig = rigs(known_model())
    node = rig.node
    a, b = rig.keys
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == "inactive"
    assert all(cam.sub is None for cam in node._cameras) and node.segmenter is not None
    for k in (a, b):
        wait_for(lambda k=k: ros.node.count_subscribers(f"/{k}/image_raw") == 0, TIMEOUT,
                 what=f"{k} unsubscribed")
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for k in (a, b):
        wait_for(lambda k=k: rig.pub[k].get_subscription_count() >= 1, TIMEOUT, what=f"{k} again")
        rig.send(k, image_msg(pattern_image(), header=_header(k, 9)))
        assert rig.labels[k].wait(1, TIMEOUT)[0].header.stamp.sec == 9


@pytest.mark.parametrize("cameras, words", [
    (["/image_raw"], ["parameter cameras", "cameras[0]", "no namespace"]),
    (["/x/image_raw", "/x/image_rect"], ["parameter cameras", "cameras[1]", "collide"]),
    (["/x/image raw"], ["parameter cameras", "cameras[0]", "not a valid topic name"]),
    (["/x/image_raw", ""], ["parameter cameras", "cameras[1]"]),
])
def test_unusable_cameras_are_startup_errors(ros, cameras, words):
    with pytest.raises(StartupError) as exc:
        SegNode(f"bad_cams{next(_ids)}", context=ros.context, parameter_overrides=[
            Parameter("model", value=known_model()), Parameter("device", value="cpu"),
            Parameter("cameras", value=cameras)])
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_console_script_serves_a_cameras_list(tmp_path):
    """seg_node as users start it: ``-p cameras:="[...]"`` on the command line, a real process."""
    from ros_helpers import process_output, seg_node_command, start_process, stop_process

    n = next(_ids)
    keys = [f"p{n}_front", f"p{n}_rear"]
    topics = ",".join(f"'/{k}/image_raw'" for k in keys)
    with RosHarness("test_cams_proc") as ros:
        labels = {k: ros.collect(Image, f"/cams_proc{n}/{k}/labels", reliable=True) for k in keys}
        pubs = {k: ros.publisher(Image, f"/{k}/image_raw", reliable=True) for k in keys}
        proc = start_process(seg_node_command() + [
            "--ros-args", "-r", f"__node:=cams_proc{n}", "-p", f"model:={known_model(3)}",
            "-p", "device:=cpu", "-p", "threads:=1", "-p", "qos_reliability:=reliable",
            "-p", f"cameras:=[{topics}]"], tmp_path / "node.log")
        try:
            for k in keys:
                ros.wait_matched(pubs[k], timeout=60.0)
            for k in keys:
                wait_for(lambda k=k: labels[k].sub.get_publisher_count() >= 1, 60.0, what="labels")
            for i, k in enumerate(keys):
                pubs[k].publish(image_msg(pattern_image(), header=_header(k, 20 + i)))
            for i, k in enumerate(keys):
                msg, = labels[k].wait(1, 60.0)
                assert msg.header.frame_id == k and msg.header.stamp.sec == 20 + i
                assert int(image_codec.image_to_array(msg).max()) == 3
            assert proc.poll() is None, process_output(proc)
        finally:
            assert stop_process(proc) == 0, process_output(proc)
