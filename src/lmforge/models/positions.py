"""Positions: rotary embeddings (Llama) and T5's bucketed relative-position bias.

Learned absolute positions are a table in :mod:`lmforge.models.embeddings`. Shapes: B (batch),
T (query length), S (key length), nh (heads), hd (head dim).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import UnsupportedError


def rope_inverse_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None) -> Tensor:
    """Inverse frequencies of rotary embeddings, with optional linear or Llama-3 style scaling."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling:
        return inv_freq
    kind = scaling.get("rope_type", scaling.get("type"))
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor
    if kind == "llama3":
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_context = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated.
        scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
        return torch.where(is_medium, smoothed, scaled)
    raise UnsupportedError(f"rope_scaling type {kind!r} is not supported (use 'linear' or 'llama3')")


class RotaryEmbedding(nn.Module):
    """Rotary position embedding tables computed on the fly from position ids."""

    inv_freq: Tensor

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.register_buffer("inv_freq", rope_inverse_frequencies(head_dim, theta, scaling), persistent=False)

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, hd/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (B, T, hd)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (B, nh, T, hd) by the angles in ``cos``/``sin`` (B, T, hd), half-split layout."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def relative_position_buckets(
    relative: Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> Tensor:
    """T5's log-spaced buckets for ``relative = key_pos - query_pos``."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        relative = relative.abs()
    else:
        relative = -torch.clamp(relative, max=0)
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = (
        max_exact
        + (
            torch.log(relative.float() / max_exact)
            / math.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).long()
    )
    large = torch.clamp(large, max=num_buckets - 1)
    return buckets + torch.where(is_small, relative, large)


class RelativePositionBias(nn.Module):
    """Learned per-head scalar bias from bucketed relative positions (T5)."""

    def __init__(self, config: ModelConfig, bidirectional: bool) -> None:
        super().__init__()
        self.bias = nn.Embedding(config.relative_buckets, config.num_heads)
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_buckets
        self.max_distance = config.relative_max_distance

    def forward(self, q_len: int, k_len: int, device: torch.device) -> Tensor:
        query = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        key = torch.arange(k_len, device=device)[None, :]
        buckets = relative_position_buckets(
            key - query, self.bidirectional, self.num_buckets, self.max_distance
        )
        return self.bias(buckets).permute(2, 0, 1)[None]  # (1, nh, T, S)
