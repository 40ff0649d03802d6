"""launch/seg.launch.py, config/params.yaml and config/seg.rviz.

The launch description itself needs launch_ros (a ROS installation, not on PyPI), so that test runs
where launch_ros is installed and skips elsewhere; the RViz view the launch file writes is
clipseg_ros.rviz_config, tested on the real template in test_rviz_config.py; the installed layout
the launch file relies on (share/clipseg_ros/{launch,config}, the ament index marker) is checked by
the colcon build in .ci/colcon_check.sh.  The other checks always run:
the launch file compiles, params.yaml only names parameters the node declares and is accepted by
the real node (through ``--params-file``, in a namespace), seg.rviz is a YAML RViz2 config with the
three Image displays.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch" / "seg.launch.py"
PARAMS = REPO / "config" / "params.yaml"
RVIZ = REPO / "config" / "seg.rviz"

LAUNCH_ARGS = {"model", "image", "input_compressed", "device", "backend", "namespace", "params_file",
               "autostart", "use_rviz"}


def test_launch_file_is_valid_python():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")


def _load_launch_module():
    spec = importlib.util.spec_from_file_location("seg_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _text(value) -> str:
    """A plain string out of a str or a list of TextSubstitution (launch keeps either)."""
    if isinstance(value, str):
        return value
    return "".join(getattr(v, "text", str(v)) for v in value)


def test_launch_description_generates():
    pytest.importorskip("launch_ros")
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    ld = _load_launch_module().generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    args = {a.name: a for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert LAUNCH_ARGS <= set(args)
    assert Path(_text(args["params_file"].default_value)).name == "params.yaml"
    assert _text(args["image"].default_value) == "/camera/image_raw"
    nodes = [e for e in ld.entities if isinstance(e, Node)]
    executables = [_text(n.node_executable) for n in nodes]
    assert "seg_node" in executables
    # rviz2 comes from an OpaqueFunction that renders config/seg.rviz for the arguments
    from launch import LaunchContext
    from launch.actions import OpaqueFunction

    opaque, = [e for e in ld.entities if isinstance(e, OpaqueFunction)]
    context = LaunchContext()
    context.launch_configurations.update(
        {"image": "/front/image_raw", "namespace": "front", "input_compressed": "false"})
    rviz, = opaque.execute(context)
    assert isinstance(rviz, Node) and _text(rviz.node_executable) == "rviz2"


def _params_section() -> dict:
    data = yaml.safe_load(PARAMS.read_text())
    assert isinstance(data, dict) and len(data) == 1, data
    (key, section), = data.items()
    assert key.split("/")[-1] == "seg_node", key
    return section["ros__parameters"]


def test_params_yaml_names_only_declared_parameters():
    from clipseg_ros.node_params import PARAMETER_NAMES, validate_parameter

    params = _params_section()
    assert params, "no parameters in params.yaml"
    unknown = set(params) - set(PARAMETER_NAMES)
    assert not unknown, f"params.yaml sets parameters the node does not declare: {sorted(unknown)}"
    for name, value in params.items():
        assert validate_parameter(name, value) is None, (name, value)
    # every parameter is documented in the file (set, or shown in a comment)
    text = PARAMS.read_text()
    for name in PARAMETER_NAMES:
        assert f"{name}:" in text, f"{name} is not documented in params.yaml"


# A valid non-default value for every parameter params.yaml sets (to see that the file is applied).
_CHANGED = {"device": "cpu", "backend": "onnxruntime", "precision": "fp32", "threads": 1,
            "input_compressed": True, "qos_reliability": "reliable", "qos_depth": 3,
            "output_qos_reliability": "best_effort", "diagnostics_period": 2.5, "overlay_alpha": 0.25,
            "publish_color": False, "publish_overlay": False, "publish_confidence": True,
            "max_image_pixels": 123456, "label_groups": "(a file written by the test)",
            "autostart": False}


@pytest.mark.parametrize("variant", ["as_shipped", "changed"])
def test_the_node_accepts_params_yaml(variant, tmp_path):
    pytest.importorskip("rclpy")
    pytest.importorskip("onnxruntime")
    from rclpy.parameter import Parameter

    from clipseg_ros.node import SegNode
    from ros_helpers import RosHarness, known_model

    params = _params_section()
    path = PARAMS
    if variant == "changed":
        assert set(params) <= set(_CHANGED), "add the new parameter to _CHANGED"
        params = {k: _CHANGED[k] for k in params}
        if "label_groups" in params:        # a groups file for known_model's class0..class3
            groups = tmp_path / "groups.yaml"
            groups.write_text("first: [class0, class2]\nsecond: [class1]\n")
            params["label_groups"] = str(groups)
        for k, v in params.items():
            assert v != _params_section()[k] or k == "precision", k   # fp16 needs CUDA
        data = yaml.safe_load(PARAMS.read_text())
        (key, _), = data.items()
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump({key: {"ros__parameters": params}}))
    ros = RosHarness("test_launch", args=["test", "--ros-args", "--params-file", str(path)])
    try:
        # in a namespace, as the launch file's `namespace` argument would put it
        node = SegNode(context=ros.context, namespace="/launch_ns",
                       parameter_overrides=[Parameter("model", value=known_model())])
        try:
            for name, value in params.items():
                got = node.get_parameter(name).value
                assert got == value, (name, got, value)
            assert node.config.overlay_alpha == params["overlay_alpha"]
            topic = "/launch_ns/image" + ("/compressed" if params["input_compressed"] else "")
            assert node.input_topic == topic
        finally:
            node.destroy_node()
    finally:
        ros.close()


def test_rviz_config_shows_input_overlay_and_color():
    cfg = yaml.safe_load(RVIZ.read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    images = [d for d in displays if d["Class"] == "rviz_default_plugins/Image"]
    topics = [d["Topic"]["Value"] for d in images]
    assert topics == ["/camera/image_raw", "/seg_node/overlay", "/seg_node/color"]
    for d in images:
        assert d["Topic"]["Reliability Policy"] in ("Best Effort", "Reliable")
        assert d["Enabled"] is True
    assert {p["Class"] for p in cfg["Panels"]} >= {"rviz_common/Displays"}
