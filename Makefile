# clipseg_ros developer entry points.  `make demo` and `make test` each take a fresh machine from
# nothing to a result: they create the venv (PyTorch, ROS 2 Jazzy wheels, ONNX Runtime, the package)
# on first use and reuse it afterwards.
#
# DDS stays on this machine for everything started from here: shared-memory transport only, a
# domain id of our own, logs in a temp folder.  The node itself sets none of this (robots need
# the network).  sockets_size=64MB carries camera-sized messages whole; never add max_msg_size
# (with it, messages whose byte 60 from the end is 0x80 arrive short and are dropped; see
# docs/node.md, "Large images and DDS").
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check --no-input
STAMP := $(VENV)/.clipseg-installed

export FASTDDS_BUILTIN_TRANSPORTS := SHM?sockets_size=64MB
export ROS_DOMAIN_ID ?= 73
export ROS_LOG_DIR ?= $(shell mktemp -d -t clipseg_roslog.XXXXXX 2>/dev/null || echo /tmp/clipseg_roslog)
export OMP_NUM_THREADS ?= 2

DEMO_OUT ?= outputs/demo
SAMPLE_BAG ?= data/sample_bag/camvid_val_sample
# soak: a 30 Hz 640x480 raw rgb8 camera replayed for 2 minutes (101 CamVid val frames x 36 laps)
CAMVID_ROOT ?= ../shared/data/camvid
SOAK_BAG ?= outputs/soak_bag_640x480_30hz
SOAK_LOOPS ?= 36
SOAK_OUT ?= outputs/soak

.PHONY: venv test lint colcon-check demo bench bench-cameras soak clean-venv

venv: $(STAMP)

# torch/torchvision are pinned so pip takes the wheels on this machine's disk (and never resolves
# a multi-GB CUDA build from the network); rclpy and messages come from the ROS 2 Jazzy PyPI wheels.
$(STAMP): setup.py package.xml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) install -q torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "^WARNING: Location" || true
	@$(PIP) install -q -e ".[ros,onnx,openvino,bag,train,test]" 2>&1 | grep -v "^WARNING: Location" | grep -v "^ *$$" || true
	@$(PY) -c "import torch, rclpy, onnxruntime, openvino, rosbags, clipseg_ros, clipseg_training" \
	  || { echo "venv set-up failed"; exit 1; }
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -q

# ruff with the repository's ruff.toml (pinned, so that a new ruff release cannot fail CI on its own)
lint: $(STAMP)
	@$(PIP) install -q ruff==0.17.5 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/ruff check .

# colcon build (colcon-core + colcon-ros from PyPI) into a temp workspace; checks the install layout
# ros2 run / ros2 launch need and the installed seg_node
colcon-check: $(STAMP)
	VENV=$(VENV) bash .ci/colcon_check.sh

demo: $(STAMP)
	$(VENV)/bin/clipseg-bag-eval live --bag $(SAMPLE_BAG) --out $(DEMO_OUT)

bench: $(STAMP)
	$(VENV)/bin/clipseg-bench $(BENCH_ARGS)

# several cameras: one seg_node serving 2 and 3 cameras at 15 Hz against one node per camera
bench-cameras: $(STAMP)
	$(PY) -m clipseg_ros.bench.cameras $(BENCH_CAMERAS_ARGS)

soak: $(STAMP)
	@test -d $(SOAK_BAG) || $(VENV)/bin/clipseg-bag-eval make-bag $(CAMVID_ROOT) $(SOAK_BAG) --split val \
	  --resize 640x480 --rate-hz 30 --start-time 1700000000 --no-progress
	$(VENV)/bin/clipseg-bag-eval live --bag $(SOAK_BAG) --loop $(SOAK_LOOPS) --out $(SOAK_OUT) $(SOAK_ARGS)

clean-venv:
	rm -rf $(VENV)
