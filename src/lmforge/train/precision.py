"""Mixed precision shared by pretraining and fine-tuning: which precision a device gets, and its autocast.

``fp32`` trains in full precision. ``bf16`` runs matrix products under ``torch.autocast`` in
bfloat16 (CUDA, or a CPU with AVX512-BF16 / AMX, where it is about twice as fast as fp32) while
weights, optimizer state and the loss's softmax stay fp32; it needs no loss scaling. ``fp16``
(CUDA only) autocasts to float16 and needs a ``torch.amp.GradScaler``. ``auto`` picks bf16 on a
CUDA device that supports it, fp16 on one that does not, and fp32 on CPU (bf16 on CPU is opt-in:
older CPUs emulate it slowly).
"""

from __future__ import annotations

import contextlib

import torch

from lmforge.errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA when supported, else fp16; fp32 on CPU. Checks the name and device."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision: fp16 needs CUDA (loss scaling); use bf16 on CPU")
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
