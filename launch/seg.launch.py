"""Launch ``seg_node`` (and optionally RViz2 showing the input, the overlay and the color mask).

    ros2 launch clipseg_ros seg.launch.py model:=/path/to/model.clipseg image:=/camera/image_raw
    ros2 launch clipseg_ros seg.launch.py input_compressed:=true use_rviz:=true

Arguments
---------
``model``             .clipseg file; empty = the package's default model
``image``             the camera's raw image topic (default ``/camera/image_raw``).  With
                      ``input_compressed:=true`` the node subscribes to ``<image>/compressed``
                      (the image_transport convention)
``input_compressed``  subscribe to sensor_msgs/CompressedImage (jpeg/png) instead of Image
``device``            auto | cpu | cuda | cuda:N
``backend``           auto | torch | onnxruntime
``namespace``         namespace of the node (outputs become ``<namespace>/seg_node/...``)
``params_file``       parameters YAML (default: the installed ``config/params.yaml``); the
                      arguments above override the values in it
``autostart``         ``true`` (default): the managed node walks to active at start; ``false``: it
                      waits in unconfigured for ``ros2 lifecycle set <node> configure`` / ``activate``
``use_rviz``          start rviz2 showing the input, ``~/overlay`` and ``~/color`` of this node:
                      ``config/seg.rviz`` rendered at launch time for the ``image``,
                      ``input_compressed`` and ``namespace`` given (``clipseg_ros.rviz_config``)
"""
import atexit
import os
import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "clipseg_ros"


def _share_dir() -> str:
    """The installed share folder, or the source tree when the package is not installed by colcon."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # pragma: no cover - ament_index_python ships with launch_ros
        return str(Path(__file__).resolve().parents[1])
    try:
        return get_package_share_directory(PACKAGE)
    except (PackageNotFoundError, OSError):     # OSError: AMENT_PREFIX_PATH not set
        return str(Path(__file__).resolve().parents[1])


def generate_launch_description() -> LaunchDescription:
    share = _share_dir()
    model = LaunchConfiguration("model")
    image = LaunchConfiguration("image")
    input_compressed = LaunchConfiguration("input_compressed")
    device = LaunchConfiguration("device")
    backend = LaunchConfiguration("backend")
    namespace = LaunchConfiguration("namespace")
    params_file = LaunchConfiguration("params_file")
    use_rviz = LaunchConfiguration("use_rviz")
    autostart = LaunchConfiguration("autostart")

    args = [
        DeclareLaunchArgument("model", default_value="",
                              description="Path of the .clipseg model file; empty = the package's default model"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Input image topic (raw); with input_compressed the node "
                                          "subscribes to <image>/compressed"),
        DeclareLaunchArgument("input_compressed", default_value="false", choices=["true", "false"],
                              description="Subscribe to sensor_msgs/CompressedImage instead of Image"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("backend", default_value="auto", choices=["auto", "torch", "onnxruntime"],
                              description="Inference backend"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("params_file", default_value=str(Path(share) / "config" / "params.yaml"),
                              description="Parameters YAML for seg_node"),
        DeclareLaunchArgument("autostart", default_value="true", choices=["true", "false"],
                              description="Walk the managed node to active at start (false: wait for "
                                          "configure / activate on ~/change_state)"),
        DeclareLaunchArgument("use_rviz", default_value="false", choices=["true", "false"],
                              description="Start rviz2 on the input, ~/overlay and ~/color of this "
                                          "node (config/seg.rviz rendered for image and namespace)"),
    ]

    seg_node = Node(
        package=PACKAGE,
        executable="seg_node",
        name="seg_node",
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[
            params_file,
            {
                "model": ParameterValue(model, value_type=str),
                "device": ParameterValue(device, value_type=str),
                "backend": ParameterValue(backend, value_type=str),
                "input_compressed": ParameterValue(input_compressed, value_type=bool),
                "autostart": ParameterValue(autostart, value_type=bool),
            },
        ],
        # Only one of the two names is subscribed (input_compressed decides), so both rules can
        # stay: "image" for raw input, "image/compressed" -> "<image>/compressed" for compressed.
        remappings=[
            ("image", image),
            ("image/compressed", [image, "/compressed"]),
        ],
    )

    # RViz needs the topics this launch actually wired, known only once the arguments are
    # evaluated: render config/seg.rviz then (nothing is written without use_rviz:=true).
    rviz = OpaqueFunction(function=_rviz_actions, args=[share], condition=IfCondition(use_rviz))

    return LaunchDescription(args + [seg_node, rviz])


def _rviz_config_module():
    try:
        from clipseg_ros import rviz_config
    except ImportError:       # launched from the source tree without the package installed
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from clipseg_ros import rviz_config
    return rviz_config


def _rviz_actions(context, share):
    """The rviz2 node, on ``config/seg.rviz`` rendered for this launch's arguments."""
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    rviz_config = _rviz_config_module()
    path = rviz_config.write_rviz_config(
        os.path.join(share, "config", "seg.rviz"),
        image=arg("image"), namespace=arg("namespace"),
        input_compressed=arg("input_compressed").strip().lower() == "true")
    atexit.register(_remove, str(path))
    return [Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(path)],
                 output="screen")]


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
