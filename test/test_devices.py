"""One device resolution for the node, the tools and training (clipseg_ros/devices.py)."""
from __future__ import annotations

import pytest

from clipseg_ros import devices
from clipseg_ros.segmenter import SegmenterConfigError
from clipseg_ros.segmenter import resolve_device as segmenter_device


@pytest.mark.parametrize("name, rank, want", [
    ("cpu", 0, "cpu"), (" CPU ", 0, "cpu"), ("cuda", 0, "cuda:0"), ("cuda", 2, "cuda:2"),
    ("cuda:3", 0, "cuda:3"), ("cuda:3", 1, "cuda:3"),
])
def test_explicit_names(name, rank, want):
    assert devices.resolve_device(name, rank) == want


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "cuda:", "tpu:0"])
def test_unknown_names_are_errors_naming_the_value(bad):
    with pytest.raises(devices.DeviceError, match=repr(bad)):
        devices.resolve_device(bad)
    with pytest.raises(SegmenterConfigError, match=repr(bad)):
        segmenter_device(bad)


def test_auto_follows_what_is_there():
    want_gpu = devices.cuda_available()
    assert devices.resolve_device("auto", 1, onnxruntime=False) == ("cuda:1" if want_gpu else "cpu")
    assert devices.resolve_device(None, onnxruntime=False) == devices.resolve_device("auto", onnxruntime=False)


def test_training_gets_a_torch_device_and_config_errors():
    import torch

    from clipseg_training.config import ConfigError
    from clipseg_training.train import resolve_device as train_device

    assert train_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="run.device"):
        train_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            train_device("cuda")
