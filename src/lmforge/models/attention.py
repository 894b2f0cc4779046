"""Attention through SDPA: MHA / GQA / MQA; causal, bidirectional or cross; RoPE and a KV cache.

Shapes use B (batch), T (query length), S (key length), H (hidden size), nh / nkv (query /
key-value heads) and hd (head dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.models.kv_cache import KVCache
from lmforge.models.positions import apply_rope


def attention_mask(
    padding_mask: Tensor | None,
    q_len: int,
    k_len: int,
    causal: bool,
    device: torch.device,
    window: int | None = None,
) -> Tensor | None:
    """Boolean mask (B|1, 1, T, S), True where a query may attend to a key; None when nothing is masked.

    ``padding_mask`` is (B, S) with 1 for real tokens. With a causal ``window`` (sliding-window
    attention) a query also ignores keys ``window`` or more positions back. A query that may see
    no key at all (a left-padding position) sees itself instead, so that no row is fully masked
    (SDPA would return NaN there and spread it through the padding's keys); such rows are padding
    and never read.
    """
    allowed: Tensor | None = None
    query = torch.arange(k_len - q_len, k_len, device=device)[:, None]
    key = torch.arange(k_len, device=device)[None, :]
    if causal and (q_len > 1 or (window is not None and k_len > window)):
        allowed = key <= query
        if window is not None:
            allowed = allowed & (key > query - window)
        allowed = allowed[None, None]  # (1, 1, T, S)
    if padding_mask is not None and not bool(padding_mask.all()):
        keep = padding_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        allowed = keep if allowed is None else allowed & keep
        allowed = allowed | (~allowed.any(-1, keepdim=True) & (key == query))
    return allowed


def additive_bias(position_bias: Tensor, mask: Tensor | None) -> Tensor:
    """A float position bias (1, nh, T, S) with the masked positions set to the dtype's minimum."""
    if mask is None:
        return position_bias
    return position_bias.masked_fill(~mask, torch.finfo(position_bias.dtype).min)


class Attention(nn.Module):
    """Multi-head attention with MHA / GQA / MQA (SDPA's native ``enable_gqa``: K/V are never
    repeated), optional RoPE, a boolean mask or additive bias, and a KV cache."""

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
        # An nn.Dropout only holds the rate (SDPA drops the probabilities), so that code walking the
        # model's dropouts (fine-tuning's --dropout, MC dropout) finds this site too.
        self.dropout = nn.Dropout(config.attention_dropout_rate)
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
        """x: (B, T, H); bias: (B|1, nh|1, T, S) boolean mask or float bias; memory: (B, S, H) for
        cross-attention."""
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
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=bias,
            dropout_p=self.dropout.p if self.training else 0.0,
            is_causal=is_causal and bias is None,
            scale=self.scale,
            enable_gqa=self.num_kv_heads != self.num_heads,
        )  # (B, nh, T, hd)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], self.num_heads * self.head_dim)
        return self.o_proj(out)
