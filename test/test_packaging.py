"""Packaging that colcon and pip users can trust: one version string, the licence, zip_safe, the
data files ``ros2 run`` / ``ros2 launch`` need, and package.xml declaring every runtime import.

The colcon build itself (install layout, the installed ``seg_node`` starting and failing cleanly
on a missing model) is checked by ``.ci/colcon_check.sh`` (``make colcon-check``, run by CI).
"""
from __future__ import annotations

import ast
import re
import runpy
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE_XML = ET.parse(REPO / "package.xml").getroot()

# Third-party imports of the runtime (the clipseg_ros package and the launch file) -> how a user
# gets them.  An import in neither table fails test_every_runtime_import_is_declared.
ROS_DEPENDS = {  # module: package.xml <exec_depend> (a rosdep key)
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "sensor_msgs": "sensor_msgs",
    "diagnostic_msgs": "diagnostic_msgs", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "yaml": "python3-yaml", "launch": "launch", "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
}
PIP_REQUIRED = {"numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "pyyaml"}   # install_requires
OPTIONAL = {  # module: (setup.py extra, pip requirement) - backends and offline tools, imported lazily
    "torch": ("torch", "torch"), "torchvision": ("torch", "torchvision"), "onnxruntime": ("onnx", "onnxruntime"),
    "onnx": ("onnx", "onnx"), "openvino": ("openvino", "openvino"),
    "rosbags": ("bag", "rosbags"), "matplotlib": ("bag", "matplotlib"), "tqdm": ("bag", "tqdm"),
}


@pytest.fixture(scope="module")
def setup_kwargs():
    """What setup.py hands to setuptools.setup()."""
    import setuptools

    captured = {}
    real = setuptools.setup
    setuptools.setup = lambda **kw: captured.update(kw)
    try:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    finally:
        setuptools.setup = real
    assert captured, "setup.py did not call setup()"
    return captured


def _xml(tag: str) -> list[str]:
    return [e.text.strip() for e in PACKAGE_XML.findall(tag)]


def test_one_version_string(setup_kwargs):
    import clipseg_ros

    (version,) = _xml("version")
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    assert setup_kwargs["version"] == version
    assert clipseg_ros.__version__ == version
    # setuptools itself, as colcon and pip run it
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == version
    # the newest CHANGELOG entry is this version
    changelog = (REPO / "CHANGELOG.rst").read_text()
    first = re.search(r"^(\d+\.\d+\.\d+) \((?:\d{4}-\d\d-\d\d|unreleased)\)\n-+$", changelog, re.M)
    assert first and first.group(1) == version, "add a CHANGELOG.rst entry for " + version


def test_licence_is_apache_2_everywhere(setup_kwargs):
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text[:200] and "Version 2.0, January 2004" in text[:200]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert _xml("license") == ["Apache-2.0"] and setup_kwargs["license"] == "Apache-2.0"


def test_setup_installs_what_ros2_run_and_launch_need(setup_kwargs):
    assert setup_kwargs["zip_safe"] is False          # models, configs, launch file load by path
    assert setup_kwargs["name"] == _xml("name")[0] == "clipseg_ros"
    assert PACKAGE_XML.get("format") == "3"
    assert PACKAGE_XML.find("export/build_type").text == "ament_python"
    files = {dest: sorted(Path(f).name for f in srcs) for dest, srcs in setup_kwargs["data_files"]}
    assert files["share/ament_index/resource_index/packages"] == ["clipseg_ros"]
    assert (REPO / "resource" / "clipseg_ros").is_file()
    assert files["share/clipseg_ros"] == ["package.xml"]
    assert files["share/clipseg_ros/launch"] == sorted(p.name for p in (REPO / "launch").glob("*.py"))
    assert "seg.launch.py" in files["share/clipseg_ros/launch"]
    assert files["share/clipseg_ros/config"] == sorted(p.name for p in (REPO / "config").iterdir())
    assert {"params.yaml", "seg.rviz"} <= set(files["share/clipseg_ros/config"])
    assert "seg_node = clipseg_ros.node:main" in setup_kwargs["entry_points"]["console_scripts"]
    # the console scripts go where `ros2 run clipseg_ros <exe>` looks: lib/clipseg_ros
    cfg = (REPO / "setup.cfg").read_text()
    assert "script_dir=$base/lib/clipseg_ros" in cfg and "install_scripts=$base/lib/clipseg_ros" in cfg
    assert "models/*.clipseg" in setup_kwargs["package_data"]["clipseg_ros"]
    assert (REPO / "clipseg_ros" / "models" / "default.clipseg").is_file()


def _third_party_imports(paths) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("clipseg_ros", "clipseg_training"):
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_runtime_import_is_declared(setup_kwargs):
    runtime = sorted((REPO / "clipseg_ros").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    imports = _third_party_imports(runtime)
    assert {"rclpy", "rcl_interfaces", "ament_index_python", "cv2"} <= set(imports)   # the scan works
    unknown = {m: sorted(f) for m, f in imports.items() if m not in ROS_DEPENDS and m not in OPTIONAL}
    assert not unknown, (f"new runtime imports {unknown}: add them to package.xml (and ROS_DEPENDS "
                         f"here) or to a setup.py extra (and OPTIONAL here)")
    exec_depends = set(_xml("exec_depend"))
    missing = {ROS_DEPENDS[m] for m in imports if m in ROS_DEPENDS} - exec_depends
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"
    requires = {re.split(r"[<>=\[ ]", r)[0] for r in setup_kwargs["install_requires"]}
    assert {PIP_REQUIRED[m] for m in imports if m in PIP_REQUIRED} <= requires
    extras = {k: {re.split(r"[<>=\[ ]", r)[0] for r in v} for k, v in setup_kwargs["extras_require"].items()}
    for module, (extra, requirement) in OPTIONAL.items():
        if module in imports:
            assert requirement in extras[extra], (module, extra)
    # the message packages of the pip set-up (the ROS 2 Jazzy wheels); rcl_interfaces comes with rclpy
    for module in ("rclpy", "sensor_msgs", "diagnostic_msgs"):
        if module in imports:
            assert "ros-jazzy-" + module.replace("_", "-") in extras["ros"], module
