"""seg_node's derived outputs, through the real node with real messages:
``~/camera_info`` from the camera's camera_info, ``~/labels/compressed`` (lossless PNG), and the
class groups ``~/groups`` / ``~/groups/color`` from a ``label_groups`` file.

Varied labels come from the bundled CamVid model on a colorful test image (a constant label
image would survive even a lossy codec); exact-header checks use the tiny known-class models.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("onnxruntime")

from builtin_interfaces.msg import Time  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from clipseg_ros import image_codec  # noqa: E402
from clipseg_ros.label_codec import decode_labels_png  # noqa: E402
from clipseg_ros.node import DEFAULT_MODEL, SegNode, StartupError  # noqa: E402
from clipseg_ros.visualize import CAMVID_CLASSES  # noqa: E402
from ros_helpers import (  # noqa: E402
    RosHarness, compressed_msg, image_msg, known_model, make_header, pattern_image, stamp_ns, wait_for,
)

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_GROUPS = REPO / "config" / "label_groups_camvid.yaml"
TIMEOUT = 20.0
_ids = itertools.count()


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness("test_node_outputs")
    yield harness
    harness.close()


class Rig:
    """A SegNode in ``/oN`` whose input is remapped to ``/oN_cam/image_raw`` (so its camera_info
    is ``/oN_cam/camera_info``), our image and camera_info publishers, and collectors."""

    def __init__(self, ros, model: str, compressed: bool = False, **params):
        self.ros = ros
        n = next(_ids)
        self.ns, self.cam = f"/o{n}", f"/o{n}_cam"
        params = {"model": model, "device": "cpu", "threads": 1, "input_compressed": compressed, **params}
        image = f"{self.cam}/image_raw"
        remaps = ["--ros-args", "-r", f"image:={image}", "-r", f"image/compressed:={image}/compressed"]
        self.node = ros.add(SegNode(context=ros.context, namespace=self.ns, cli_args=remaps,
                                    parameter_overrides=[Parameter(k, value=v) for k, v in params.items()]))
        self.out = f"{self.ns}/seg_node"
        self.pub = ros.publisher(CompressedImage if compressed else Image,
                                 image + ("/compressed" if compressed else ""), reliable=True, depth=30)
        self.info_pub = ros.publisher(CameraInfo, f"{self.cam}/camera_info", reliable=True, depth=30)
        self.col = {}
        ros.wait_matched(self.pub)
        wait_for(lambda: self.node._sub.get_publisher_count() >= 1, TIMEOUT, what="image matched")

    def subscribe(self, name: str, msg_type=Image):
        col = self.col[name] = self.ros.collect(msg_type, f"{self.out}/{name}", reliable=True)
        pub = getattr(self.node, "_pub_" + name.replace("/", "_"))
        wait_for(lambda: pub.get_subscription_count() >= 1 and col.sub.get_publisher_count() >= 1,
                 TIMEOUT, what=f"{name} matched")
        return col

    def unsubscribe(self, name: str) -> None:
        self.ros.unsubscribe(self.col.pop(name))
        pub = getattr(self.node, "_pub_" + name.replace("/", "_"))
        wait_for(lambda: pub.get_subscription_count() == 0, TIMEOUT, what=f"no subscription on {name}")

    def send(self, msg, wait=("labels",)) -> dict:
        self.pub.publish(msg)
        return {name: self.col[name].wait_stamp(msg.header.stamp, TIMEOUT) for name in wait}

    def close(self):
        self.ros.remove(self.node)
        for col in self.col.values():
            self.ros.unsubscribe(col)
        self.ros.node.destroy_publisher(self.pub)
        self.ros.node.destroy_publisher(self.info_pub)


@pytest.fixture
def rigs(ros):
    made = []

    def make(model, **kw):
        rig = Rig(ros, model, **kw)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


def camera_info(stamp_sec: int, fx: float = 500.0, width: int = 64, height: int = 48) -> CameraInfo:
    info = CameraInfo(header=make_header("camera_optical", Time(sec=stamp_sec, nanosec=7)),
                      width=width, height=height, distortion_model="plumb_bob")
    info.d = [-0.2, 0.05, 0.001, -0.002, 0.0]
    info.k = [fx, 0.0, 31.5, 0.0, fx + 1.0, 23.5, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, 31.5, -12.5, 0.0, fx + 1.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.binning_x, info.binning_y = 1, 1
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 2, 3, 60, 40
    return info


def same_header(a, b) -> bool:
    return stamp_ns(a.header.stamp) == stamp_ns(b.header.stamp) and a.header.frame_id == b.header.frame_id


def send_until_camera_info(rig, predicate, what: str):
    """Send frames until a ~/camera_info that satisfies ``predicate`` comes back (the node has
    the camera_info we published); returns it."""
    col = rig.col["camera_info"]

    def attempt():
        start = len(col)
        rig.send(image_msg(pattern_image(48, 64)))
        try:
            return col.wait_until(predicate, 0.5, what=what, start=start)
        except AssertionError:
            return None

    return wait_for(attempt, TIMEOUT, interval=0.0, what=what)


# ------------------------------------------------------------------------------------------------
# camera_info
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "compressed"])
def test_camera_info_follows_the_image_topic_and_carries_the_labels_header(rigs, compressed):
    rig = rigs(known_model(2, 4), compressed=compressed)
    # the sibling of the remapped image topic (image_transport convention)
    assert rig.node.camera_info_topic == f"{rig.cam}/camera_info"
    assert rig.node._sub_camera_info.topic_name == f"{rig.cam}/camera_info"
    rig.subscribe("labels")
    rig.subscribe("camera_info", CameraInfo)
    wait_for(lambda: rig.node._sub_camera_info.get_publisher_count() >= 1, TIMEOUT, what="info matched")
    sent_info = camera_info(stamp_sec=1)
    rig.info_pub.publish(sent_info)
    rgb = pattern_image(48, 64)

    def frame(frame_id):
        if compressed:
            return compressed_msg(rgb, "png", make_header(frame_id))
        return image_msg(rgb, header=make_header(frame_id))

    col = rig.col["camera_info"]

    def first():
        start = len(col)
        rig.pub.publish(frame("warmup"))
        try:
            return col.wait_until(lambda m: True, 0.5, start=start)
        except AssertionError:
            return None

    wait_for(first, TIMEOUT, interval=0.0, what="the first ~/camera_info")
    for i in range(3):
        sent = frame(f"cam_rgb_{i}")
        got = rig.send(sent, wait=("labels", "camera_info"))
        labels, info = got["labels"], got["camera_info"]
        assert same_header(info, labels) and same_header(info, sent)
        assert info.header.frame_id == f"cam_rgb_{i}"            # not the camera_info's own
        assert (info.width, info.height) == (sent_info.width, sent_info.height) == (labels.width, labels.height)
        assert info.distortion_model == "plumb_bob"
        for field in ("d", "k", "r", "p"):
            assert list(getattr(info, field)) == list(getattr(sent_info, field)), field
        assert (info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height) == (2, 3, 60, 40)
        assert (info.binning_x, info.binning_y) == (1, 1)
    assert rig.node.stats["camera_info_published"] >= 3


def test_camera_info_with_the_images_stamp_is_preferred(rigs):
    rig = rigs(known_model(2, 4))
    rig.subscribe("labels")
    rig.subscribe("camera_info", CameraInfo)
    wait_for(lambda: rig.node._sub_camera_info.get_publisher_count() >= 1, TIMEOUT, what="info matched")
    old, new = camera_info(stamp_sec=100, fx=111.0), camera_info(stamp_sec=200, fx=222.0)
    rig.info_pub.publish(old)
    rig.info_pub.publish(new)
    # an image whose stamp no camera_info has: the newest one
    send_until_camera_info(rig, lambda m: m.k[0] == 222.0, "the newest camera_info")
    # an image with the old one's stamp: that one
    sent = image_msg(pattern_image(48, 64), header=make_header("cam", Time(sec=100, nanosec=7)))
    info = rig.send(sent, wait=("camera_info",))["camera_info"]
    assert info.k[0] == 111.0 and same_header(info, sent)


def test_without_camera_info_outputs_are_unchanged_and_one_notice(ros, rigs):
    rosout = ros.collect(Log, "/rosout", reliable=True, depth=1000)
    try:
        rig = rigs(known_model(2, 4))
        rig.subscribe("labels")
        rig.subscribe("camera_info", CameraInfo)
        rig.subscribe("overlay")
        for _ in range(4):
            got = rig.send(image_msg(pattern_image(48, 64)), wait=("labels", "overlay"))
            assert np.all(image_codec.image_to_array(got["labels"]) == 2)
        logger = rig.out.strip("/").replace("/", ".")

        def notices():
            return [m for m in rosout.messages if m.name == logger and "no camera_info" in m.msg]

        wait_for(notices, TIMEOUT, what="the camera_info notice on /rosout")
        rig.send(image_msg(pattern_image(48, 64)))
        wait_for(lambda: rig.node.stats["processed"] == 5, TIMEOUT, what="5 frames")
        assert len(notices()) == 1, [m.msg for m in notices()]
        assert f"{rig.cam}/camera_info" in notices()[0].msg
        assert len(rig.col["camera_info"]) == 0 and rig.node.stats["camera_info_published"] == 0
    finally:
        ros.unsubscribe(rosout)


# ------------------------------------------------------------------------------------------------
# ~/labels/compressed
# ------------------------------------------------------------------------------------------------

def test_labels_compressed_decodes_to_exactly_the_labels(rigs):
    rig = rigs(str(DEFAULT_MODEL), backend="onnxruntime")
    rig.subscribe("labels")
    rig.subscribe("labels/compressed", CompressedImage)
    classes_seen = set()
    for seed in range(3):
        sent = image_msg(pattern_image(120, 160, seed=seed), header=make_header(f"cam{seed}"))
        got = rig.send(sent, wait=("labels", "labels/compressed"))
        labels = image_codec.image_to_array(got["labels"])
        comp = got["labels/compressed"]
        assert comp.format == "mono8; png compressed"
        assert same_header(comp, sent)
        assert bytes(comp.data[:8]) == b"\x89PNG\r\n\x1a\n"
        decoded = decode_labels_png(comp.data)
        assert decoded.dtype == np.uint8 and decoded.shape == labels.shape == (120, 160)
        assert np.array_equal(decoded, labels)
        classes_seen |= set(np.unique(labels).tolist())
    assert len(classes_seen) >= 3, classes_seen          # edges a lossy codec would blur
    # computed only while subscribed
    rig.unsubscribe("labels/compressed")
    before = rig.node.stats
    rig.send(image_msg(pattern_image(120, 160)))
    wait_for(lambda: rig.node.stats["processed"] == before["processed"] + 1, TIMEOUT, what="one more")
    assert rig.node.stats["labels_compressed_published"] == before["labels_compressed_published"] == 3


# ------------------------------------------------------------------------------------------------
# class groups
# ------------------------------------------------------------------------------------------------

def test_groups_from_the_shipped_camvid_example(rigs):
    rig = rigs(str(DEFAULT_MODEL), backend="onnxruntime", label_groups=str(EXAMPLE_GROUPS))
    for name in ("labels", "groups", "groups/color"):
        rig.subscribe(name)
    # the mapping, read independently from the shipped file
    spec = yaml.safe_load(EXAMPLE_GROUPS.read_text())
    want_lut = np.full(256, 255, np.uint8)
    colors = {}
    for g, (name, value) in enumerate(spec.items()):
        classes = value["classes"] if isinstance(value, dict) else value
        for c in classes:
            want_lut[CAMVID_CLASSES.index(c)] = g
        colors[g] = (value.get("color") if isinstance(value, dict) else None) or \
            rig.node.segmenter.palette[CAMVID_CLASSES.index(classes[0])].tolist()
    assert list(spec) == ["drivable", "obstacle", "other"]
    seen = set()
    for seed in range(3):
        sent = image_msg(pattern_image(96, 128, seed=seed))
        got = rig.send(sent, wait=("labels", "groups", "groups/color"))
        labels = image_codec.image_to_array(got["labels"])
        groups = image_codec.image_to_array(got["groups"])
        assert got["groups"].encoding == "mono8" and same_header(got["groups"], sent)
        assert np.array_equal(groups, want_lut[labels])
        color = image_codec.image_to_rgb(got["groups/color"])
        assert got["groups/color"].encoding == "rgb8" and same_header(got["groups/color"], sent)
        for g in np.unique(groups):
            assert np.all(color[groups == g] == colors[int(g)]), g
        seen |= set(np.unique(groups).tolist())
    assert len(seen) >= 2, seen
    # ~/groups/color only while subscribed; ~/groups always
    rig.unsubscribe("groups/color")
    before = rig.node.stats
    rig.send(image_msg(pattern_image(96, 128)), wait=("groups",))
    wait_for(lambda: rig.node.stats["groups_published"] == before["groups_published"] + 1, TIMEOUT,
             what="groups counted")
    assert rig.node.stats["groups_color_published"] == before["groups_color_published"]


def test_no_groups_without_label_groups(rigs):
    rig = rigs(known_model(2, 4))
    rig.subscribe("labels")
    rig.subscribe("groups")
    rig.send(image_msg(pattern_image(48, 64)))
    rig.send(image_msg(pattern_image(48, 64)))
    wait_for(lambda: rig.node.stats["processed"] == 2, TIMEOUT, what="2 frames")
    assert rig.node.stats["groups_published"] == 0 and len(rig.col["groups"]) == 0


def test_classes_in_no_group_are_255(rigs, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("others: [class0, class1]\n")          # the model's class 2 is in no group
    rig = rigs(known_model(2, 4), label_groups=str(path))
    rig.subscribe("groups")
    got = rig.send(image_msg(pattern_image(48, 64)), wait=("groups",))["groups"]
    assert np.all(image_codec.image_to_array(got) == 255)


@pytest.mark.parametrize("text, words", [
    ("a: [class0]\nb: [class1, clas2]\n", ["line 2", "unknown class 'clas2'", "'class2'"]),
    ("a: [class0, class1]\nb: [class2]\nc: [class1]\n", ["line 3", "'class1'", "(line 1)"]),
])
def test_bad_groups_file_stops_the_node_naming_the_line(ros, tmp_path, text, words):
    path = tmp_path / "bad_groups.yaml"
    path.write_text(text)
    with pytest.raises(StartupError) as exc:
        SegNode(context=ros.context, namespace=f"/bad_groups{next(_ids)}", parameter_overrides=[
            Parameter("model", value=known_model(2, 4)), Parameter("device", value="cpu"),
            Parameter("label_groups", value=str(path))])
    msg = str(exc.value)
    assert "label_groups" in msg and "bad_groups.yaml" in msg, msg
    for w in words:
        assert w in msg, (w, msg)
