"""Norms: LayerNorm (GPT-2, BERT) or RMSNorm (Llama, T5), chosen by ``config.norm``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama, T5): no mean subtraction, no bias, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def make_norm(config: ModelConfig, dim: int | None = None) -> nn.Module:
    dim = dim or config.hidden_size
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps)
