"""``clipseg_ros.rviz_config`` on the shipped ``config/seg.rviz``: the RViz view follows the launch
arguments (image topic, namespace, compressed input), and the names it shows are the names a
real node started that way uses."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clipseg_ros import rviz_config
from clipseg_ros.rviz_config import RvizConfigError, resolve_topic, view_topics, write_rviz_config

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "config" / "seg.rviz"
ROLES = ("input", "overlay", "color")


def shown_topics(path: Path) -> dict[str, str]:
    """role -> topic of the produced file, read back from its Image displays."""
    cfg = yaml.safe_load(Path(path).read_text())
    images = [d for d in cfg["Visualization Manager"]["Displays"]
              if d["Class"] == "rviz_default_plugins/Image"]
    assert len(images) == 3, images
    return {rviz_config.DISPLAYS[d["Name"]]: d["Topic"]["Value"] for d in images}


def without_topics(cfg: dict) -> dict:
    for d in cfg["Visualization Manager"]["Displays"]:
        if d.get("Name") in rviz_config.DISPLAYS:
            d["Topic"].pop("Value")
    return cfg


@pytest.mark.parametrize("image, namespace, compressed, want", [
    ("/front/image_raw", "front", False,
     ("/front/image_raw", "/front/seg_node/overlay", "/front/seg_node/color")),
    ("/front/image_raw", "/front/", True,
     ("/front/image_raw/compressed", "/front/seg_node/overlay", "/front/seg_node/color")),
    ("image_raw", "robot1/cam_left", False,
     ("/robot1/cam_left/image_raw", "/robot1/cam_left/seg_node/overlay",
      "/robot1/cam_left/seg_node/color")),
    ("/camera/image_raw", "", False,          # the launch defaults: the template as shipped
     ("/camera/image_raw", "/seg_node/overlay", "/seg_node/color")),
])
def test_rendered_view_shows_the_wired_topics(tmp_path, image, namespace, compressed, want):
    path = write_rviz_config(TEMPLATE, image=image, namespace=namespace, input_compressed=compressed,
                             directory=tmp_path)
    assert path.parent == tmp_path and path.suffix == ".rviz"
    assert shown_topics(path) == dict(zip(ROLES, want))
    # everything but the three topics is the template's
    rendered = yaml.safe_load(path.read_text())
    assert without_topics(rendered) == without_topics(yaml.safe_load(TEMPLATE.read_text()))


def test_shipped_file_is_the_view_for_the_launch_defaults():
    assert shown_topics(TEMPLATE) == view_topics("/camera/image_raw", "")


def test_each_launch_gets_its_own_file(tmp_path):
    a = write_rviz_config(TEMPLATE, image="/a/image", namespace="a", directory=tmp_path)
    b = write_rviz_config(TEMPLATE, image="/b/image", namespace="b", directory=tmp_path)
    assert a != b
    assert shown_topics(a)["input"] == "/a/image" and shown_topics(b)["input"] == "/b/image"


def test_template_problems_name_the_missing_display(tmp_path):
    cfg = yaml.safe_load(TEMPLATE.read_text())
    cfg["Visualization Manager"]["Displays"] = [
        d for d in cfg["Visualization Manager"]["Displays"] if d["Name"] != "Segmentation colors"]
    broken = tmp_path / "broken.rviz"
    broken.write_text(yaml.safe_dump(cfg))
    with pytest.raises(RvizConfigError, match="Segmentation colors"):
        write_rviz_config(broken, directory=tmp_path)
    with pytest.raises(RvizConfigError, match="cannot read"):
        write_rviz_config(tmp_path / "missing.rviz", directory=tmp_path)
    (tmp_path / "text.rviz").write_text("just: [unbalanced")
    with pytest.raises(RvizConfigError, match="not YAML"):
        write_rviz_config(tmp_path / "text.rviz", directory=tmp_path)


@pytest.mark.parametrize("bad", [{"namespace": "front-cam"}, {"image": ""}, {"image": "/a//b"},
                                 {"image": "/cam/"}])
def test_invalid_arguments_are_refused(bad):
    with pytest.raises(RvizConfigError):
        view_topics(**bad)


def test_resolution_rules():
    assert resolve_topic("/abs/x", "ns") == "/abs/x"
    assert resolve_topic("x", "") == "/x"
    assert resolve_topic("x", "/") == "/x"
    assert resolve_topic("~/overlay", "a/b") == "/a/b/seg_node/overlay"
    assert resolve_topic("~/overlay", "", node_name="other") == "/other/overlay"


@pytest.mark.parametrize("image, namespace, compressed", [
    ("/front/image_raw", "/front", False),
    ("image_raw", "/robot1", False),
    ("/front/image_raw", "/front", True),
])
def test_rendered_topics_are_the_real_nodes_topics(tmp_path, image, namespace, compressed):
    """Start a real SegNode with the launch file's remapping rules for these arguments: the
    rendered view names exactly the node's input and its overlay / color publishers."""
    pytest.importorskip("rclpy")
    pytest.importorskip("onnxruntime")
    from rclpy.parameter import Parameter

    from clipseg_ros.node import SegNode
    from ros_helpers import RosHarness, known_model

    shown = shown_topics(write_rviz_config(TEMPLATE, image=image, namespace=namespace,
                                           input_compressed=compressed, directory=tmp_path))
    ros = RosHarness("test_rviz_config")
    try:
        # launch/seg.launch.py: ("image", image), ("image/compressed", [image, "/compressed"])
        remaps = ["--ros-args", "-r", f"image:={image}", "-r", f"image/compressed:={image}/compressed"]
        node = SegNode(context=ros.context, namespace=namespace, cli_args=remaps, parameter_overrides=[
            Parameter("model", value=known_model()), Parameter("device", value="cpu"),
            Parameter("input_compressed", value=compressed)])
        try:
            assert shown == {"input": node.input_topic, "overlay": node._pub_overlay.topic_name,
                             "color": node._pub_color.topic_name}
        finally:
            node.destroy_node()
    finally:
        ros.close()
