"""Training checkpoints: writing them atomically, their payloads, resuming, and networks from them.

A checkpoint is a ``torch.save``d dict with ``format == "clipseg-train-checkpoint"``:

- ``best.pt`` (:func:`best_payload`): the network (``net``, fp32 contiguous CPU tensors), its
  architecture (``arch``, :func:`clipseg_ros.networks.arch_spec`), the prompt context, the config,
  the class names and the validation result;
- ``last.pt`` (:func:`last_payload`): the same plus everything ``--resume`` needs (optimizer, grad
  scaler, RNG state, position in the epoch, history), restored by :func:`restore_training_state`.

:func:`load_checkpoint_network` rebuilds the network from ``arch``; checkpoints written before the
architecture was stored have it read off their state-dict keys instead.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from clipseg_ros.atomic_files import atomic_write
from clipseg_ros.networks import arch_spec, build_from_spec, create_model

from .config import ConfigError

CHECKPOINT_FORMAT = "clipseg-train-checkpoint"


# --------------------------------------------------------------------------- writing
def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``: an
    interrupted save leaves the previous file as it was."""
    atomic_write(path, lambda fh: torch.save(obj, fh), make_dirs=True)


def plain_state(net) -> dict:
    """The network's state dict as fp32/int CPU tensors in the standard (contiguous) layout,
    whatever memory format or autocast the training ran in."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def jsonable(result: dict) -> dict:
    """A metrics dict with numpy arrays and scalars turned into lists and Python numbers."""
    out = {}
    for k, v in result.items():
        if isinstance(v, np.ndarray):
            out[k] = v.tolist()
        elif isinstance(v, (np.floating, np.integer)):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _network_entries(module) -> dict:
    """``net``, ``arch`` and ``prompt_ctx`` of a :class:`~clipseg_training.stages.TrainModule`
    (whose text classifier the caller has baked)."""
    return {"net": plain_state(module.net), "arch": arch_spec(module.net),
            "prompt_ctx": module.prompt.ctx.detach().cpu() if module.prompt is not None else None}


def best_payload(*, stage: str, config: dict, class_names, iteration: int, module, val, info) -> dict:
    """The ``best.pt`` dict: the network and what export and evaluation need, no optimizer state."""
    return {"format": CHECKPOINT_FORMAT, "stage": stage, "config": config,
            "class_names": class_names, "iteration": iteration,
            **_network_entries(module), "val": val, "info": info}


def last_payload(*, stage: str, config: dict, class_names, iteration: int, total: int, epoch: int,
                 batch_in_epoch: int, module, optimizer, scaler, best_miou: float, best_iter: int,
                 history: list, info, train_seconds: float) -> dict:
    """The ``last.pt`` dict: everything ``--resume`` restores (RNG state taken now)."""
    return {
        "format": CHECKPOINT_FORMAT, "stage": stage, "config": config,
        "class_names": class_names, "iteration": iteration, "total": total,
        "epoch": epoch, "batch_in_epoch": batch_in_epoch, **_network_entries(module),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "rng": rng_state(), "best_miou": best_miou, "best_iter": best_iter,
        "history": history, "info": info, "train_seconds": train_seconds,
    }


# --------------------------------------------------------------------------- reading
def _load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def restore_training_state(path: Path, stage: str, module, optimizer, scaler,
                           memory_format=torch.contiguous_format) -> dict:
    """Load ``last.pt`` into the module, optimizer, grad scaler and the global RNGs; returns the
    checkpoint dict (its counters, best score and history are the caller's to take)."""
    ckpt = _load(path)
    if ckpt.get("stage") != stage:
        raise ConfigError(f"{path} is a {ckpt.get('stage')} checkpoint, not {stage}")
    module.net.load_state_dict(ckpt["net"])
    module.to(memory_format=memory_format)
    if ckpt["prompt_ctx"] is not None:
        with torch.no_grad():
            module.prompt.ctx.copy_(ckpt["prompt_ctx"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scaler.is_enabled() and ckpt.get("scaler"):
        # the loss scale carries over between fp16 runs; a run resumed in another precision
        # starts a fresh scaler (bf16 and fp32 need none)
        scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    return ckpt


def checkpoint_iteration(path: Path) -> int:
    """The iteration a checkpoint was written at (-1 when it records none)."""
    return _load(path).get("iteration", -1)


def load_network_state(path: Path) -> dict:
    """A checkpoint's network state dict (stage 2 starts from stage 1's)."""
    return _load(path)["net"]


def load_checkpoint_network(path, device="cpu"):
    """The trained network (eval mode, T baked in) and the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = _load(path)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a clipseg training checkpoint")
    cfg = ckpt["config"]
    state = ckpt["net"]
    if ckpt.get("arch"):
        net = build_from_spec(ckpt["arch"])
    else:  # checkpoints written before the architecture was stored: read it off the keys
        text_dim = None
        if "text_guidance.text_embeddings" in state:
            text_dim = int(state["text_guidance.text_embeddings"].shape[1])
        net = create_model(cfg["model"]["name"], len(ckpt["class_names"]), text_dim,
                           detail_head="detail.conv_out.weight" in state,
                           aux_heads="aux16.conv_out.weight" in state)
    net.load_state_dict(state)
    return net.to(device).eval(), ckpt
