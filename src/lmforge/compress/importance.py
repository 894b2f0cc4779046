"""Which attention heads and MLP neurons matter: gradient x activation importance (Michel et al. 2019).

Each head's output and each MLP neuron's activation is multiplied by a gate ``xi`` (1 by
default). The importance of a unit is ``|dL / dxi|`` summed over batches, which for ``xi = 1`` is
``|sum over positions of grad(output) . output|``: the first-order estimate of how much the loss
changes when the unit is removed. As in Michel et al. each layer's scores are divided by their L2
norm, so units of different layers can be ranked together.

The gates sit in forward pre-hooks on the layers that read the units (``o_proj`` reads the
concatenated heads, ``down_proj`` the neurons), so the model's own code stays untouched. With
fixed 0/1 gates the same hooks give the *masked* model that structured pruning must reproduce.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.models import TransformerModel

__all__ = ["Importance", "gated", "unit_importance"]


@dataclass
class Importance:
    """Per layer, the normalised importance of each head and each MLP neuron (1-D float tensors)."""

    heads: list[Tensor]
    neurons: list[Tensor]


def _blocks(model: TransformerModel) -> list[Any]:
    return list(model.stack.layers)


@contextlib.contextmanager
def gated(
    model: TransformerModel, head_gates: Sequence[Tensor] | None, neuron_gates: Sequence[Tensor] | None
) -> Iterator[None]:
    """Multiply each head's output (``head_gates[l]``, shape (nh,)) and each MLP neuron
    (``neuron_gates[l]``, shape (inner,)) of layer ``l`` by its gate inside the block."""
    handles = []
    for index, block in enumerate(_blocks(model)):
        attn, mlp = block.attn, block.mlp
        if head_gates is not None:
            gate, head_dim = head_gates[index], attn.head_dim

            def heads_hook(
                _m: nn.Module, args: tuple[Tensor, ...], gate: Tensor = gate, hd: int = head_dim
            ) -> tuple[Tensor]:
                x = args[0]  # (B, T, nh * hd)
                shaped = x.view(*x.shape[:-1], -1, hd) * gate.to(x.dtype)[:, None]
                return (shaped.reshape(x.shape),)

            handles.append(attn.o_proj.register_forward_pre_hook(heads_hook))
        if neuron_gates is not None:

            def neurons_hook(
                _m: nn.Module, args: tuple[Tensor, ...], gate: Tensor = neuron_gates[index]
            ) -> tuple[Tensor]:
                return (args[0] * gate.to(args[0].dtype),)  # (B, T, inner)

            handles.append(mlp.down_proj.register_forward_pre_hook(neurons_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def unit_importance(
    model: TransformerModel,
    batches: Iterable[dict[str, Tensor]],
    loss: Callable[[dict[str, Tensor]], Tensor],
) -> Importance:
    """Gradient x activation importance of every head and MLP neuron over ``batches``.

    Args:
        model: the model (its weights get no gradient; dropout is off while measuring).
        batches: input batches, as ``loss`` takes them.
        loss: the training loss of a batch (the task's loss module).

    Returns:
        Each layer's scores divided by their L2 norm (Michel et al. 2019, section 4.2).
    """
    blocks = _blocks(model)
    head_gates = [torch.ones(b.attn.num_heads, requires_grad=True) for b in blocks]
    neuron_gates = [torch.ones(b.mlp.down_proj.in_features, requires_grad=True) for b in blocks]
    heads = [torch.zeros(g.shape) for g in head_gates]
    neurons = [torch.zeros(g.shape) for g in neuron_gates]
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with gated(model, head_gates, neuron_gates):
            for batch in batches:
                grads = torch.autograd.grad(loss(batch), [*head_gates, *neuron_gates])
                for total, grad in zip([*heads, *neurons], grads):
                    total += grad.abs()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)

    def normalised(scores: list[Tensor]) -> list[Tensor]:
        return [s / s.norm().clamp(min=1e-20) for s in scores]

    return Importance(normalised(heads), normalised(neurons))
