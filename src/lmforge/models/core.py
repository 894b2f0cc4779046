"""The one configurable Transformer core every family reuses.

Read top to bottom: norms, positions (RoPE, T5 relative buckets), attention masks, the KV cache,
attention, MLP, embeddings, the block and the stack. Shapes use B (batch), T (query length),
S (key length), H (hidden size), nh / nkv (query / key-value heads) and hd (head dim).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import ShapeError, UnsupportedError

# ---------------------------------------------------------------------------------------------
# Norms and activations


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


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}

# ---------------------------------------------------------------------------------------------
# Positions


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


# ---------------------------------------------------------------------------------------------
# Masks and cache


def attention_bias(
    padding_mask: Tensor | None,
    q_len: int,
    k_len: int,
    causal: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """Additive float mask (B|1, 1, T, S): 0 where attention is allowed, the dtype's minimum elsewhere.

    A finite minimum instead of -inf keeps fully masked rows (left padding) free of NaN.
    ``padding_mask`` is (B, S) with 1 for real tokens. Returns None when nothing is masked.
    """
    allowed: Tensor | None = None
    if causal and q_len > 1:
        query = torch.arange(k_len - q_len, k_len, device=device)[:, None]
        allowed = (torch.arange(k_len, device=device)[None, :] <= query)[None, None]  # (1, 1, T, S)
    if padding_mask is not None and not bool(padding_mask.all()):
        keep = padding_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        allowed = keep if allowed is None else allowed & keep
    if allowed is None:
        return None
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(
        ~allowed, torch.finfo(dtype).min
    )


class KVCache:
    """Keys and values of past positions, per layer, for incremental decoding.

    Self-attention entries grow by concatenation; cross-attention entries (encoder-decoder) are
    computed once from the encoder output and reused.
    """

    def __init__(self) -> None:
        self.self_kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.cross_kv: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        return next(iter(self.self_kv.values()))[0].shape[2] if self.self_kv else 0

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        if layer in self.self_kv:
            past_key, past_value = self.self_kv[layer]
            key, value = torch.cat((past_key, key), dim=2), torch.cat((past_value, value), dim=2)
        self.self_kv[layer] = (key, value)
        return key, value

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search)."""
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, index), v.index_select(0, index))


# ---------------------------------------------------------------------------------------------
# Attention and MLP


class Attention(nn.Module):
    """Multi-head attention with MHA / GQA / MQA, optional RoPE, additive bias and KV cache."""

    def __init__(self, config: ModelConfig, cross: bool = False) -> None:
        super().__init__()
        assert config.head_dim is not None and config.num_kv_heads is not None
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        self.cross = cross
        self.scale = config.attention_scale
        self.dropout = config.dropout
        hidden, bias = config.hidden_size, config.attention_bias
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=bool(config.attention_out_bias))

    def _heads(self, x: Tensor, num_heads: int) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, num_heads, self.head_dim).transpose(1, 2)  # (B, n, L, hd)

    def forward(
        self,
        x: Tensor,
        bias: Tensor | None = None,
        is_causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        memory: Tensor | None = None,
    ) -> Tensor:
        """x: (B, T, H); bias: (B|1, nh|1, T, S); memory: (B, S, H) for cross-attention."""
        q = self._heads(self.q_proj(x), self.num_heads)  # (B, nh, T, hd)
        if self.cross:
            assert memory is not None
            if cache is not None and layer in cache.cross_kv:
                k, v = cache.cross_kv[layer]
            else:
                k = self._heads(self.k_proj(memory), self.num_kv_heads)  # (B, nkv, S, hd)
                v = self._heads(self.v_proj(memory), self.num_kv_heads)
                if cache is not None:
                    cache.cross_kv[layer] = (k, v)
        else:
            k = self._heads(self.k_proj(x), self.num_kv_heads)  # (B, nkv, T, hd)
            v = self._heads(self.v_proj(x), self.num_kv_heads)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, nkv, S, hd)
        if self.num_kv_heads != self.num_heads:
            repeat = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and bias is None,
            scale=self.scale,
        )  # (B, nh, T, hd)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.num_heads * self.head_dim)
        return self.o_proj(out)


class MLP(nn.Module):
    """Position-wise feed-forward: ``down(act(up(x)))``, or gated ``down(act(gate(x)) * up(x))``.

    T5 also drops out the inner activation (``config.mlp_dropout``); GPT-2, BERT and Llama apply
    dropout only to the block's residual branch, as their reference implementations do.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias) if config.gated_mlp else None
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.act = ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout) if config.mlp_dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_proj is not None:
            return self.down_proj(self.dropout(self.act(self.gate_proj(x)) * self.up_proj(x)))
        return self.down_proj(self.dropout(self.act(self.up_proj(x))))


# ---------------------------------------------------------------------------------------------
# Embeddings, block, stack


class Embeddings(nn.Module):
    """Token embeddings plus optional learned positions, token types, norm and a projection.

    ALBERT factorises embeddings: tokens live in ``embedding_size`` and ``project`` maps them to
    ``hidden_size``. RoBERTa counts positions over non-pad tokens, starting at ``position_offset``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.embedding_size is not None
        self.config = config
        dim = config.embedding_size
        self.token = nn.Embedding(config.vocab_size, dim)
        self.position = (
            nn.Embedding(config.max_positions + config.position_offset, dim)
            if config.positions == "learned"
            else None
        )
        self.token_type = nn.Embedding(config.type_vocab_size, dim) if config.type_vocab_size else None
        self.norm = make_norm(config, dim) if config.embedding_norm else None
        self.dropout = nn.Dropout(config.dropout)
        self.project = nn.Linear(dim, config.hidden_size) if dim != config.hidden_size else None

    def learned_position_ids(self, input_ids: Tensor, past: int) -> Tensor:
        config = self.config
        if config.positions_from_padding and config.pad_token_id is not None:
            real = (input_ids != config.pad_token_id).long()
            return (torch.cumsum(real, dim=1) + past) * real + config.position_offset - 1
        length = input_ids.shape[1]
        return torch.arange(past, past + length, device=input_ids.device)[None] + config.position_offset

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        past: int = 0,
    ) -> Tensor:
        x = self.token(input_ids)  # (B, T, E)
        if self.position is not None:
            if position_ids is None:
                position_ids = self.learned_position_ids(input_ids, past)
            x = x + self.position(position_ids)
        if self.token_type is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        x = self.dropout(x)
        return self.project(x) if self.project is not None else x  # (B, T, H)


class Block(nn.Module):
    """Attention (+ cross-attention) + MLP with residuals, pre-norm or post-norm."""

    def __init__(self, config: ModelConfig, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn_norm = make_norm(config)
        self.attn = Attention(config)
        self.cross_norm = make_norm(config) if cross_attention else None
        self.cross_attn = Attention(config, cross=True) if cross_attention else None
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def _residual(self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(fn(norm(x)))
        return norm(x + self.dropout(fn(x)))

    def forward(
        self,
        x: Tensor,
        bias: Tensor | None,
        is_causal: bool,
        rope: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        layer: int,
        memory: Tensor | None = None,
        memory_bias: Tensor | None = None,
    ) -> Tensor:
        x = self._residual(x, self.attn_norm, lambda h: self.attn(h, bias, is_causal, rope, cache, layer))
        if self.cross_attn is not None and self.cross_norm is not None:
            cross = self.cross_attn
            x = self._residual(
                x, self.cross_norm, lambda h: cross(h, memory_bias, False, None, cache, layer, memory)
            )
        return self._residual(x, self.mlp_norm, self.mlp)


class TransformerStack(nn.Module):
    """A stack of blocks with its position machinery and final norm.

    With ``num_layer_groups`` set (ALBERT), layers share the parameters of their group's block.
    """

    def __init__(
        self, config: ModelConfig, num_layers: int, causal: bool, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.causal = causal
        unique = config.num_layer_groups or num_layers
        self.layers = nn.ModuleList(Block(config, cross_attention) for _ in range(unique))
        self.final_norm = make_norm(config) if config.final_norm and config.norm_position == "pre" else None
        self.dropout = nn.Dropout(config.dropout)
        assert config.head_dim is not None
        self.rotary = (
            RotaryEmbedding(config.head_dim, config.rope_theta, config.rope_scaling)
            if config.positions == "rope"
            else None
        )
        self.relative = (
            RelativePositionBias(config, bidirectional=not causal) if config.positions == "relative" else None
        )

    def forward(
        self,
        x: Tensor,
        padding_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: KVCache | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """x: (B, T, H); padding_mask: (B, S) over past + current keys; memory: (B, S_enc, H)."""
        q_len = x.shape[1]
        past = cache.length if cache is not None else 0
        k_len = past + q_len
        if padding_mask is not None and padding_mask.shape[1] != k_len:
            raise ShapeError(
                f"attention_mask covers {padding_mask.shape[1]} positions but there are {k_len} "
                f"({past} cached + {q_len} new); pass a mask over past and new tokens"
            )
        bias = attention_bias(padding_mask, q_len, k_len, self.causal, x.dtype, x.device)
        if self.relative is not None:
            position_bias = self.relative(q_len, k_len, x.device).to(x.dtype)
            bias = position_bias if bias is None else position_bias + bias
        rope = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(past, k_len, device=x.device)[None]
            rope = self.rotary(position_ids, x.dtype)
        memory_bias = None
        if memory is not None:
            memory_bias = attention_bias(memory_mask, q_len, memory.shape[1], False, x.dtype, x.device)
        # SDPA's is_causal aligns the mask top-left, which is only right without cached keys.
        is_causal = self.causal and q_len == k_len
        group_size = self.num_layers // len(self.layers)
        for i in range(self.num_layers):
            block = self.layers[i // group_size]
            x = block(x, bias, is_causal, rope, cache, i, memory, memory_bias)
        if self.final_norm is not None:
            x = self.dropout(self.final_norm(x))
        return x
