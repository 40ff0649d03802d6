"""Checkpoint I/O (``clipseg_training.checkpoint``) on checkpoints a real (tiny) training run wrote:
networks rebuilt from the stored architecture, old checkpoints without it, and atomic saves."""
from __future__ import annotations

import pytest
import torch

from clipseg_training import checkpoint
from clipseg_training.checkpoint import atomic_torch_save, load_checkpoint_network
from clipseg_training.train import main as train_main
from clipseg_ros.networks import arch_spec
from test_training import NPZ, tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, camvid_root):
    """A 2-iteration stage-1 run (MobileNetV2, precomputed 32-d text embeddings), validated once."""
    tmp = tmp_path_factory.mktemp("ckpt_run")
    cfg = tiny_config(tmp, camvid_root, text__type="precomputed", text__path=str(NPZ), text__prompt_names=None,
                      stage1__iters=2, run__val_interval=2, run__ckpt_interval=2)
    assert train_main([str(cfg), "--stage", "stage1"]) == 0
    return tmp / "run" / "stage1"


def _outputs(net, seed=0):
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = net(x)
    if isinstance(out, dict):
        return torch.cat([v.flatten() for _, v in sorted(out.items()) if isinstance(v, torch.Tensor)])
    return out[0] if isinstance(out, (tuple, list)) else out


def _no_fallback(*args, **kwargs):
    raise AssertionError("the architecture must come from the checkpoint's arch entry")


def _no_spec(*args, **kwargs):
    raise AssertionError("a checkpoint without arch must be read off its state-dict keys")


@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_trainer_checkpoint_loads_from_the_stored_arch(trained_run, name, monkeypatch):
    path = trained_run / name
    raw = torch.load(path, map_location="cpu", weights_only=False)
    assert raw["format"] == checkpoint.CHECKPOINT_FORMAT and raw["arch"]["name"] == "mobilenetv2"
    assert raw["arch"]["text_dim"] == 32 and raw["arch"]["num_classes"] == 11
    monkeypatch.setattr(checkpoint, "create_model", _no_fallback)      # only the fallback calls it
    net, ckpt = load_checkpoint_network(path)
    assert not net.training and arch_spec(net) == raw["arch"]
    assert ckpt["stage"] == "stage1" and ckpt["iteration"] == 2 and len(ckpt["class_names"]) == 11
    state = net.state_dict()
    assert state.keys() == raw["net"].keys()
    for key, value in raw["net"].items():
        assert torch.equal(state[key], value), key
    if name == "best.pt":
        assert ckpt["val"]["miou"] >= 0 and isinstance(ckpt["val"]["iou"], list)    # jsonable
    else:
        assert {"optimizer", "scaler", "rng", "history"} <= set(ckpt)


def test_old_checkpoint_without_arch_loads_by_the_fallback(trained_run, tmp_path, monkeypatch):
    raw = torch.load(trained_run / "best.pt", map_location="cpu", weights_only=False)
    net_new, _ = load_checkpoint_network(trained_run / "best.pt")
    old = {k: v for k, v in raw.items() if k != "arch"}                  # the format before arch was stored
    old_path = tmp_path / "old.pt"
    torch.save(old, old_path)
    monkeypatch.setattr(checkpoint, "build_from_spec", _no_spec)
    net_old, ckpt = load_checkpoint_network(old_path)
    assert "arch" not in ckpt and arch_spec(net_old) == raw["arch"]
    assert torch.equal(_outputs(net_old), _outputs(net_new))

    old["arch"] = None                                                   # stored but empty: same fallback
    torch.save(old, old_path)
    net_none, _ = load_checkpoint_network(old_path)
    assert torch.equal(_outputs(net_none), _outputs(net_new))


def test_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint_network(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a clipseg training checkpoint"):
        load_checkpoint_network(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint_network(tmp_path / "junk.pt")


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while pickling")


def test_interrupted_atomic_save_leaves_the_previous_file(trained_run, tmp_path, monkeypatch):
    target = tmp_path / "best.pt"
    previous = (trained_run / "best.pt").read_bytes()
    target.write_bytes(previous)

    # the payload fails part-way through pickling (after the big tensors were queued)
    raw = torch.load(target, map_location="cpu", weights_only=False)
    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({**raw, "zzz": _Unpicklable()}, target)
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]      # no temporary file left

    # a signal (BaseException) in the middle of writing: half a file on disk, then the interrupt
    def half_then_interrupt(obj, f, *args, **kwargs):
        f.write(previous[: len(previous) // 2])         # torch.save gets the temporary file's handle
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(raw, target)
    monkeypatch.undo()
    assert target.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
    net, ckpt = load_checkpoint_network(target)
    assert ckpt["iteration"] == 2

    # and a save that completes replaces the file
    atomic_torch_save({**raw, "iteration": 99}, target)
    assert load_checkpoint_network(target)[1]["iteration"] == 99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
