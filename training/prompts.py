"""CoOp prompt learning (stage 2 of Lin, Chen & Wu, APSIPA 2024).

:class:`PromptLearner` holds ``M`` learnable context vectors - class-specific (CoOp "CSC", K×M×W)
or shared by all classes (M×W) - and turns them into K×D class embeddings through a frozen
:class:`~clipseg_training.text_encoders.TextEncoder` (prompt ``"X*M <class name>."`` with the X
token embeddings replaced by the context). ``ctx`` is the only trainable parameter.

The paper uses a context length of 16; here ``n_ctx`` is the number of learnable tokens M.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from .text_encoders import PromptLearningUnsupported, TextEncoder, _check_class_names

__all__ = ["PromptLearner", "PromptLearningUnsupported"]


class PromptLearner(nn.Module):
    """Learnable prompt context for a frozen text encoder.

    Args:
        text_encoder: a frozen encoder with ``supports_prompt_learning`` (open_clip or HF);
            a precomputed encoder raises :class:`PromptLearningUnsupported`.
        class_names: the K class names, in label order.
        n_ctx: number M of learnable context tokens.
        class_specific: K×M×W context (CoOp CSC) if True, one shared M×W context otherwise.
        init_std: the context is initialised from N(0, init_std²).
        generator: optional ``torch.Generator`` for a reproducible initialisation.
    """

    def __init__(
        self,
        text_encoder: TextEncoder,
        class_names: Sequence[str],
        n_ctx: int = 16,
        class_specific: bool = True,
        init_std: float = 0.02,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if not getattr(text_encoder, "supports_prompt_learning", False):
            err = getattr(text_encoder, "prompt_learning_error", None)
            raise err() if callable(err) else PromptLearningUnsupported(
                f"{type(text_encoder).__name__} does not support prompt learning")
        if int(n_ctx) < 1:
            raise ValueError(f"n_ctx must be >= 1, got {n_ctx}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.class_names: List[str] = _check_class_names(class_names)
        self.n_ctx = int(n_ctx)
        self.class_specific = bool(class_specific)
        self.init_std = float(init_std)

        text_encoder.requires_grad_(False)  # frozen: ctx is the only trainable parameter
        self.text_encoder = text_encoder
        width = int(text_encoder.token_embedding_dim)
        shape = (len(self.class_names), self.n_ctx, width) if self.class_specific else (self.n_ctx, width)
        ctx = torch.empty(shape, dtype=torch.float32)
        ctx.normal_(0.0, self.init_std, generator=generator)
        self.ctx = nn.Parameter(ctx.to(text_encoder.device))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def embed_dim(self) -> int:
        return int(self.text_encoder.embed_dim)

    def forward(self) -> torch.Tensor:
        """K×D L2-normalised class embeddings, differentiable w.r.t. ``ctx``."""
        return self.text_encoder.encode_with_context(self.class_names, self.ctx)

    def parameters_for_optimizer(self) -> List[nn.Parameter]:
        """The trainable parameters (just ``ctx``) to hand to an optimizer."""
        return [self.ctx]

    def context_state(self) -> Dict[str, object]:
        """A small checkpoint of the learned prompt (without the frozen encoder's weights)."""
        return {
            "ctx": self.ctx.detach().cpu().clone(),
            "class_names": list(self.class_names),
            "n_ctx": self.n_ctx,
            "class_specific": self.class_specific,
        }

    def load_context_state(self, state: Dict[str, object]) -> None:
        ctx = state["ctx"]
        if not isinstance(ctx, torch.Tensor) or tuple(ctx.shape) != tuple(self.ctx.shape):
            raise ValueError(f"context shape {getattr(ctx, 'shape', None)} != {tuple(self.ctx.shape)}")
        names = list(state.get("class_names", self.class_names))
        if [n.lower() for n in names] != [n.lower() for n in self.class_names]:
            raise ValueError(f"context was learned for classes {names}, not {self.class_names}")
        with torch.no_grad():
            self.ctx.copy_(ctx.to(self.ctx.device, self.ctx.dtype))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, n_ctx={self.n_ctx}, "
                f"class_specific={self.class_specific}, ctx_shape={tuple(self.ctx.shape)}")
