"""Structured pruning: remove whole attention heads and MLP neurons, shrinking the tensors.

Pruning head ``h`` of a layer drops rows ``h*hd : (h+1)*hd`` of its q / k / v projections and the
same columns of ``o_proj``; pruning neuron ``j`` drops row ``j`` of ``up_proj`` (and ``gate_proj``)
and column ``j`` of ``down_proj``. The pruned model computes exactly what the original computes
with those units' outputs set to zero (the masked model of :func:`lmforge.compress.importance.gated`),
with fewer parameters, a smaller file and less work per token. Layers keep their own widths, which
the config records (``layer_num_heads``, ``layer_intermediate_sizes``) so the checkpoint loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.errors import UnsupportedError
from lmforge.models import TransformerModel

__all__ = ["check_prunable", "select_units", "shrink_heads", "shrink_neurons"]


def check_prunable(model: TransformerModel, heads: bool, source: str) -> None:
    """Refuse models whose layers cannot take their own widths."""
    config = model.config
    if config.num_layer_groups is not None or model.decoder is not None:
        kind = "shares blocks across layers" if config.num_layer_groups is not None else "has a decoder stack"
        raise UnsupportedError(
            f"{source}: structured pruning gives each layer its own width; {config.family} {kind}. "
            "Use --magnitude"
        )
    if config.extra.get("quantization"):
        raise UnsupportedError(f"{source}: prune the float model, then quantize")
    if heads and config.num_kv_heads != config.num_heads:
        raise UnsupportedError(
            f"{source}: --heads prunes multi-head attention; {config.family} shares key/value heads "
            f"(GQA, {config.num_heads} query / {config.num_kv_heads} key-value heads). Use --ffn or --magnitude"
        )
    if heads and config.causal:
        raise UnsupportedError(
            f"{source}: --heads prunes encoders; a decoder's KV caches assume one head count for "
            "every layer. Use --ffn or --magnitude"
        )


def select_units(scores: Sequence[Tensor], fraction: float, scope: str = "global") -> list[Tensor]:
    """The units to keep per layer after removing ``fraction`` of them, least important first.

    Args:
        scores: per layer, one importance per unit (comparable across layers for ``global``).
        fraction: share of all units removed (of each layer's, with ``scope="layer"``).
        scope: ``global`` ranks every unit together; ``layer`` removes the same share per layer.

    Returns:
        Per layer, the sorted indices kept; every layer keeps at least one unit.
    """
    removed: list[set[int]] = [set() for _ in scores]
    if scope == "layer":
        for layer, s in enumerate(scores):
            count = min(round(fraction * len(s)), len(s) - 1)
            removed[layer] = set(torch.argsort(s)[:count].tolist())
    else:
        flat = [
            (float(value), layer, unit)
            for layer, s in enumerate(scores)
            for unit, value in enumerate(s.tolist())
        ]
        count = round(fraction * len(flat))
        for _, layer, unit in sorted(flat):
            if count == 0:
                break
            if len(removed[layer]) < len(scores[layer]) - 1:  # a layer keeps one unit
                removed[layer].add(unit)
                count -= 1
    return [
        torch.tensor(sorted(set(range(len(s))) - gone), dtype=torch.long) for s, gone in zip(scores, removed)
    ]


def _rows(linear: nn.Linear, index: Tensor) -> nn.Linear:
    out = nn.Linear(linear.in_features, len(index), bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[index])
    return out


def _columns(linear: nn.Linear, index: Tensor) -> nn.Linear:
    out = nn.Linear(len(index), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        out.weight.copy_(linear.weight[:, index])
        if linear.bias is not None:
            out.bias.copy_(linear.bias)
    return out


def shrink_heads(model: TransformerModel, keep: Sequence[Tensor]) -> None:
    """Keep only heads ``keep[l]`` of each layer ``l`` (in place; updates the config)."""
    widths = []
    blocks: list[Any] = list(model.stack.layers)
    for block, heads in zip(blocks, keep):
        attn = block.attn
        hd = attn.head_dim
        index = (heads[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)  # (kept * hd,)
        attn.q_proj, attn.k_proj, attn.v_proj = (_rows(attn.q_proj, index), _rows(attn.k_proj, index), _rows(attn.v_proj, index))  # fmt: skip
        attn.o_proj = _columns(attn.o_proj, index)
        attn.num_heads = attn.num_kv_heads = len(heads)
        widths.append(len(heads))
    model.config = model.config.replace(layer_num_heads=widths)


def shrink_neurons(model: TransformerModel, keep: Sequence[Tensor]) -> None:
    """Keep only MLP neurons ``keep[l]`` of each layer ``l`` (in place; updates the config)."""
    widths = []
    blocks: list[Any] = list(model.stack.layers)
    for block, neurons in zip(blocks, keep):
        mlp = block.mlp
        mlp.up_proj = _rows(mlp.up_proj, neurons)
        if mlp.gate_proj is not None:
            mlp.gate_proj = _rows(mlp.gate_proj, neurons)
        mlp.down_proj = _columns(mlp.down_proj, neurons)
        widths.append(len(neurons))
    model.config = model.config.replace(layer_intermediate_sizes=widths)
