"""The Transformer block (attention, optional cross-attention, MLP; pre- or post-norm) and the stack.

Shapes use B (batch), T (query length), S (key length) and H (hidden size).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import ShapeError
from lmforge.models.attention import Attention, additive_bias, attention_mask
from lmforge.models.kv_cache import KVCache
from lmforge.models.mlp import MLP
from lmforge.models.norms import make_norm
from lmforge.models.positions import RelativePositionBias, RotaryEmbedding


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
        self.dropout = nn.Dropout(config.dropout)  # the attention branches'
        self.mlp_dropout = nn.Dropout(config.dropout) if config.mlp_output_dropout else nn.Identity()

    def _residual(
        self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], Tensor], dropout: nn.Module
    ) -> Tensor:
        if self.pre_norm:
            return x + dropout(fn(norm(x)))
        return norm(x + dropout(fn(x)))

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
        attn = self.attn
        x = self._residual(
            x, self.attn_norm, lambda h: attn(h, bias, is_causal, rope, cache, layer), self.dropout
        )
        if self.cross_attn is not None and self.cross_norm is not None:
            cross = self.cross_attn
            x = self._residual(
                x,
                self.cross_norm,
                lambda h: cross(h, memory_bias, False, None, cache, layer, memory),
                self.dropout,
            )
        return self._residual(x, self.mlp_norm, self.mlp, self.mlp_dropout)


class TransformerStack(nn.Module):
    """A stack of blocks with its position machinery and final norm.

    With ``num_layer_groups`` set (ALBERT), layers share the parameters of their group's block.
    A causal decoder-only stack gives each layer the window of ``config.layer_windows()``
    (GPT-Neo's local layers see the last ``local_window`` positions only; global layers see all).
    """

    def __init__(
        self, config: ModelConfig, num_layers: int, causal: bool, cross_attention: bool = False
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.causal = causal
        unique = config.num_layer_groups or num_layers
        # A pruned model's layers have their own widths (config.layer_config); the decoder stack of
        # an encoder-decoder never has them (the config refuses).
        self.layers = nn.ModuleList(Block(config.layer_config(i), cross_attention) for i in range(unique))
        # The decoder of an encoder-decoder always attends globally (config.causal is the encoder's).
        self.windows = config.layer_windows() if causal and not cross_attention else [None] * num_layers
        self.final_norm = make_norm(config) if config.final_norm and config.norm_position == "pre" else None
        # Only T5 drops out the final norm's output; GPT-2 and Llama feed it to the head as is.
        self.dropout = nn.Dropout(config.dropout) if config.final_norm_dropout else nn.Identity()
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
        position_bias = None if self.relative is None else self.relative(q_len, k_len, x.device).to(x.dtype)
        biases: dict[int | None, Tensor | None] = {}
        for window in set(self.windows):  # one mask per distinct window (global: None)
            bias = attention_mask(padding_mask, q_len, k_len, self.causal, x.device, window)
            biases[window] = bias if position_bias is None else additive_bias(position_bias, bias)
        rope = None
        if self.rotary is not None:
            if position_ids is None:
                position_ids = torch.arange(past, k_len, device=x.device)[None]
            rope = self.rotary(position_ids, x.dtype)
        memory_bias = None
        if memory is not None:
            memory_bias = attention_mask(memory_mask, q_len, memory.shape[1], False, x.device)
        # SDPA's is_causal aligns the mask top-left, which is only right without cached keys.
        is_causal = self.causal and q_len == k_len
        group_size = self.num_layers // len(self.layers)
        for i in range(self.num_layers):
            block = self.layers[i // group_size]
            x = block(x, biases[self.windows[i]], is_causal, rope, cache, i, memory, memory_bias)
        if cache is not None:
            cache.advance(q_len)
        if self.final_norm is not None:
            x = self.dropout(self.final_norm(x))
        return x
