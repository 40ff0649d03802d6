"""Training configuration: YAML file + ``key.sub=value`` command-line overrides.

Every key must exist in :data:`DEFAULTS` (an unknown key is an error naming it, so a typo never
silently falls back to a default).  A config file may name a ``base`` file (relative to itself)
whose values it overrides; the shipped configs in ``training/configs`` are named after the run
they describe, e.g. ``camvid-mobilenetv2-stage1-clip_rn50-240x320.yaml``.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import yaml

from clipseg_ros.conventions import IMAGENET_MEAN, IMAGENET_STD

#: ``loss.class_weight`` rules (training/losses.py computes them)
CLASS_WEIGHT_RULES = ("median_frequency", "inverse_log")

DEFAULTS: dict[str, Any] = {
    "model": {
        "name": "mobilenetv2",          # stdc1 | stdc2 | mobilenetv2
        "pretrained": None,             # backbone ImageNet weights: local file, or "download"
        "guidance": True,               # False = the baseline twin (no textual guidance)
        "detail_head": True,            # STDC detail head + detail loss
        "feat32_channels": None,        # MobileNetV2: widen the 1/32 feature to this width inside the
                                        # backbone (both twins); = text width -> no projection (as STDC)
        "text_proj": "learned",         # learned | orthonormal (fixed) projection when widths differ
        "skip4": False,                 # MobileNetV2: stride-4 refinement branch (logits at 1/4, for thin classes)
    },
    "text": {
        "type": "precomputed",          # precomputed | open_clip | hf | random (a control: seeded unit vectors)
        "path": None,                   # precomputed: .npz with embeddings + class_names
        "model_name": "RN50",           # open_clip architecture
        "pretrained": "openai",         # open_clip tag or local checkpoint file
        "model_dir": None,              # hf: local transformers model directory (None = bundled MiniLM)
        "quick_gelu": None,             # open_clip: force QuickGELU (OpenAI weights from a local file)
        "prompt_names": None,           # words to encode per class (default: the dataset's class names)
        "center": False,                # subtract the mean class embedding (after L2 norm) before use
        "dim": 1024,                    # random: embedding width
        "seed": 0,                      # random: which vectors
    },
    "prompt": {
        "n_ctx": 16,                    # learnable context tokens M
        "class_specific": True,         # CoOp CSC (True) or one shared context (False)
        "init_std": 0.02,
    },
    "data": {
        "dataset": "camvid",            # camvid | cityscapes | ade20k | folder
        "root": "../shared/data/camvid",
        "classes_file": None,           # folder datasets: one class name per line
        "train_split": "train",
        "val_split": "val",
        "crop_size": [360, 480],        # [h, w] training crop
        "scale_range": [0.5, 2.0],
        "scale_step": None,             # draw the scale from min, min+step, ... max (mmseg scale_step_size)
        "cat_max_ratio": None,          # re-draw crops where one class covers more than this (mmseg)
        "eval_size": None,              # [h, w] to resize for validation, None = native
        "batch_size": 8,
        "workers": 0,                   # loader processes; 0 measured fastest on 2 CPU cores with the cache
        "cache_mb": 2048,               # decode each split once into RAM (uint8) up to this size; 0 = off
        "val_batch_size": 4,            # validation batch (images of one size are batched)
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "limit_train": None,            # use only the first N training images (smoke tests)
        "limit_val": None,
        "validate_index": True,         # check every image/label pair before training
    },
    "loss": {
        "ohem_thresh": 0.7,
        "ohem_min_kept_div": 16,        # min kept = batch*H*W / this
        "aux_weight": 1.0,
        "detail_weight": 1.0,
        "text_weight": 1.0,
        "tau": 0.07,
        "class_weight": None,           # null (the paper) | median_frequency | inverse_log | [K numbers]:
                                        # per-class weights on every CE term, from the train split
    },
    "optim": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "backbone_lr_mult": 0.1,        # stage 1 / baseline
        "text_proj_lr_mult": 1.0,       # the 1x1 projection in front of the score map
        "power": 0.9,
        "warmup_iters": 100,
        "warmup_ratio": 0.1,
        "min_lr": 0.0,                  # poly decays to this (mmseg min_lr), as a fraction-free LR value
    },
    "stage1": {"iters": 2000},
    "stage2": {
        "iters": 1000,
        "lr": 0.01,
        "ctx_lr": None,                 # None = same as lr
        "freeze_backbone": True,
        "freeze_bn": True,              # frozen backbone's BN statistics too (False: they keep updating,
                                        # as with the authors' lr_mult 0)
        "learn_prompts": True,          # False = control run: same frozen stage 2, fixed text, no prompts
        "init": None,                   # stage-1 checkpoint; None = the best of this run's stage 1
    },
    "run": {
        "stage": None,                  # baseline | stage1 | stage2 | both; None = both (baseline if unguided)
        "out_dir": "runs/default",
        "seed": 0,
        "device": "auto",
        "precision": "auto",            # auto | fp32 | bf16 | fp16 (see clipseg_training.precision)
        "channels_last": True,          # model and batches in channels-last memory format
        "compile": False,               # torch.compile the training module (see docs/training.md, Speed)
        "threads": 0,                   # torch intra-op threads, 0 = default
        "val_interval": 500,
        "ckpt_interval": 500,
        "log_interval": 20,
        "progress": True,
        "tensorboard": False,
        "deterministic": False,
    },
    "export": {
        "input_size": None,             # [h, w] the exported model runs at; None = data.crop_size
        "onnx": True,
        "compact": True,
    },
}


class ConfigError(ValueError):
    pass


def _translate_deprecated(data: dict, where: str) -> dict:
    """``run.amp`` (CUDA-only mixed precision, until 0.1) became ``run.precision``: true means
    ``auto``, false ``fp32``.  Kept as an alias with a warning; both at once is an error."""
    run = data.get("run") if isinstance(data, dict) else None
    if not isinstance(run, dict) or "amp" not in run:
        return data
    data = copy.deepcopy(data)
    amp = data["run"].pop("amp")
    if not isinstance(amp, bool):
        raise ConfigError(f"{where}run.amp must be true or false, got {amp!r} (and it is deprecated: "
                          f"use run.precision: {' | '.join(('auto', 'fp32', 'bf16', 'fp16'))})")
    if "precision" in data["run"]:
        raise ConfigError(f"{where}sets both run.amp (deprecated) and run.precision; keep run.precision only")
    data["run"]["precision"] = "auto" if amp else "fp32"
    warnings.warn(f"{where}run.amp is deprecated; read as run.precision: {data['run']['precision']}",
                  DeprecationWarning, stacklevel=3)
    return data


def _merge(base: dict, override: dict, where: str, strict: bool = True) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if strict and key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(base))}")
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            out[key] = _merge(base[key], value, f"{where}{key}.", strict)
        elif isinstance(base.get(key), dict) and value is not None:
            raise ConfigError(f"config key {where}{key} must be a mapping, got {value!r}")
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at top level")
    base = data.pop("base", None)
    if base:
        parent = _read_yaml((path.parent / base).resolve())
        data = _deep_update(parent, data)
    return data


def _deep_update(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def load_config(source: str | os.PathLike | dict | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults, then a config file (or an already-loaded dict, e.g. from a checkpoint), then
    ``section.key=value`` overrides; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if isinstance(source, dict):
        cfg = _merge(cfg, _translate_deprecated(source, ""), "")
    elif source:
        cfg = _merge(cfg, _translate_deprecated(_read_yaml(Path(source)), f"{source}: "), "")
    for item in overrides or []:
        keys, value = parse_override(item)
        node = {}
        cursor = node
        for k in keys[:-1]:
            cursor = cursor.setdefault(k, {})
        cursor[keys[-1]] = value
        if keys == ["run", "amp"]:
            node = _translate_deprecated(node, "override ")
            cfg["run"].pop("precision", None)
            cfg = _merge(cfg, node, "", strict=False)
            continue
        cfg = _merge(cfg, node, "")
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    m = cfg["model"]
    from clipseg_ros.networks import ALL_ARCHITECTURES

    if m["name"] not in ALL_ARCHITECTURES:
        raise ConfigError(f"model.name {m['name']!r} is not one of {', '.join(ALL_ARCHITECTURES)}")
    if m["name"] == "lraspp_mobilenetv2" and m["guidance"]:
        raise ConfigError("model.name lraspp_mobilenetv2 is the unguided peer: set model.guidance: false")
    if cfg["text"]["type"] not in ("precomputed", "open_clip", "hf", "random"):
        raise ConfigError(f"text.type {cfg['text']['type']!r} is not one of precomputed, open_clip, hf, random")
    for key in ("crop_size",):
        v = cfg["data"][key]
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
            raise ConfigError(f"data.{key} must be [height, width] positive integers, got {v!r}")
    if cfg["data"]["batch_size"] < 1:
        raise ConfigError("data.batch_size must be >= 1")
    from .precision import PRECISIONS

    if cfg["run"]["precision"] not in PRECISIONS:
        raise ConfigError(f"run.precision {cfg['run']['precision']!r} is not one of {', '.join(PRECISIONS)}")
    for key in ("channels_last", "compile"):
        if not isinstance(cfg["run"][key], bool):
            raise ConfigError(f"run.{key} must be true or false, got {cfg['run'][key]!r}")
    for key in ("cache_mb", "workers"):
        v = cfg["data"][key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"data.{key} must be a non-negative integer, got {v!r}")
    v = cfg["data"]["val_batch_size"]
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"data.val_batch_size must be a positive integer, got {v!r}")
    if cfg["loss"]["tau"] <= 0:
        raise ConfigError("loss.tau must be positive")
    cw = cfg["loss"]["class_weight"]
    if cw is not None and not (cw in CLASS_WEIGHT_RULES or (
            isinstance(cw, (list, tuple)) and cw
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in cw))):
        raise ConfigError(f"loss.class_weight must be null, {' or '.join(CLASS_WEIGHT_RULES)}, or a list of "
                          f"positive numbers (one per class), got {cw!r}")
    if m["text_proj"] not in ("learned", "orthonormal"):
        raise ConfigError(f"model.text_proj {m['text_proj']!r} is not one of learned, orthonormal")
    fc = m["feat32_channels"]
    if fc is not None and (not isinstance(fc, int) or isinstance(fc, bool) or fc < 1):
        raise ConfigError(f"model.feat32_channels must be a positive integer or null, got {fc!r}")
    if fc is not None and m["name"] != "mobilenetv2":
        raise ConfigError(f"model.feat32_channels is a MobileNetV2 option (model.name is {m['name']})")
    if not isinstance(m["skip4"], bool):
        raise ConfigError(f"model.skip4 must be true or false, got {m['skip4']!r}")
    if m["skip4"] and m["name"] != "mobilenetv2":
        raise ConfigError(f"model.skip4 is a MobileNetV2 option (model.name is {m['name']})")
    step = cfg["data"]["scale_step"]
    if step is not None and (not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"data.scale_step must be a positive number or null, got {step!r}")
    cmr = cfg["data"]["cat_max_ratio"]
    if cmr is not None and (not isinstance(cmr, (int, float)) or not 0 < cmr <= 1):
        raise ConfigError(f"data.cat_max_ratio must be in (0, 1] or null, got {cmr!r}")
    for key, value in (("text.center", cfg["text"]["center"]),
                       ("stage2.freeze_bn", cfg["stage2"]["freeze_bn"]),
                       ("stage2.learn_prompts", cfg["stage2"]["learn_prompts"]),
                       ("stage2.freeze_backbone", cfg["stage2"]["freeze_backbone"])):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    for stage in ("stage1", "stage2"):
        if cfg[stage]["iters"] < 0:
            raise ConfigError(f"{stage}.iters must be >= 0")


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(json.loads(json.dumps(cfg)), sort_keys=False)
