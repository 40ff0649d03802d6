"""Training precision: which autocast dtype a run uses, chosen once at start-up.

``run.precision``:

- ``auto``: bf16 autocast on a CPU with native bf16 support (AVX512-BF16 or AMX, as reported by
  oneDNN), bf16 on a CUDA GPU that supports it, else fp16 with a ``GradScaler`` on CUDA, else fp32.
- ``fp32``: no autocast.
- ``bf16``: bf16 autocast (CPU or CUDA); an error where the hardware has no bf16.
- ``fp16``: fp16 autocast with loss scaling; CUDA only.

Autocast leaves the numerically delicate parts in fp32: the losses cast logits to fp32 before
softmax / cross-entropy, the textual score map's normalisation runs outside autocast
(:class:`clipseg_ros.networks.text_guidance.TextGuidance`), batch-norm keeps fp32 parameters and
running statistics, and validation casts logits to fp32 before the softmax and the argmax.  The
weights themselves stay fp32 (autocast casts per operation), so checkpoints and exported model
files do not depend on the training precision.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from clipseg_ros.devices import cpu_supports_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``name`` (fp32 | bf16 | fp16), the device type, and why."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES.get(self.name)

    @property
    def needs_scaler(self) -> bool:
        return self.name == "fp16"

    def autocast(self):
        """The context a forward pass (training or validation) runs in."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.name} on {self.device_type} ({self.reason})"


def resolve_precision(name: str, device: torch.device | str) -> Precision:
    """Turn ``run.precision`` into a :class:`Precision` for ``device``; a clear ``ValueError`` for
    an unknown name or a precision this hardware cannot run."""
    if name not in PRECISIONS:
        raise ValueError(f"run.precision {name!r} is not one of {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    kind = dev.type
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if name == "auto":
            if bf16_ok:
                return Precision("bf16", kind, "auto: the GPU supports bf16")
            return Precision("fp16", kind, "auto: fp16 with loss scaling (no bf16 on this GPU)")
        if name == "bf16" and not bf16_ok:
            raise ValueError("run.precision bf16 requested but this GPU has no bf16 support; use fp16 or auto")
        return Precision(name, kind, "requested")
    if kind == "cpu":
        native = cpu_supports_bf16()
        if name == "auto":
            if native:
                return Precision("bf16", kind, "auto: this CPU has native bf16 (AVX512-BF16/AMX)")
            return Precision("fp32", kind, "auto: this CPU has no native bf16")
        if name == "fp16":
            raise ValueError("run.precision fp16 needs a CUDA device (on CPU use bf16 or fp32)")
        if name == "bf16" and not native:
            raise ValueError("run.precision bf16 requested but this CPU has no native bf16 "
                             "(AVX512-BF16 or AMX); use fp32 or auto")
        return Precision(name, kind, "requested")
    if name in ("auto", "fp32"):
        return Precision("fp32", kind, f"{'auto: ' if name == 'auto' else ''}no autocast on {kind}")
    raise ValueError(f"run.precision {name} is not supported on device type {kind}")
