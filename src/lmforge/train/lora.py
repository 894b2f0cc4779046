"""LoRA adapters that wrap ``nn.Linear`` modules in place and merge back into plain weights.

``apply_lora(model, targets=("q_proj", "v_proj"), rank=8)`` swaps every ``nn.Linear`` whose
attribute name is in ``targets`` for a :class:`LoRALinear` holding the original layer (frozen)
plus two small matrices ``A`` (r, in) and ``B`` (out, r); the layer computes
``base(x) + dropout(x) @ A.T @ B.T * alpha / r``. ``B`` starts at zero, so a freshly wrapped
model computes exactly what it did before. The model class is never subclassed or re-declared:
:func:`merge_lora` folds ``B @ A * alpha / r`` into the base weight and puts the plain
``nn.Linear`` back, so a merged model saves and loads like any other checkpoint.

Example:
    >>> wrapped = apply_lora(model, targets=("q_proj", "v_proj"), rank=8, alpha=16)  # doctest: +SKIP
    >>> ...train...
    >>> merge_lora(model)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lmforge.errors import ConfigError

__all__ = ["LoRALinear", "apply_lora", "lora_parameters", "merge_lora"]

DEFAULT_TARGETS = ("q_proj", "v_proj")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update.

    Args:
        base: the layer to adapt; its parameters are frozen.
        rank: rank ``r`` of the update.
        alpha: scale numerator; the update is multiplied by ``alpha / r``.
        dropout: dropout on the adapter's input (training only).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank <= 0:
            raise ConfigError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        for param in base.parameters():
            param.requires_grad_(False)
        weight = base.weight
        self.lora_a = nn.Parameter(
            torch.empty(rank, base.in_features, dtype=weight.dtype, device=weight.device)
        )
        self.lora_b = nn.Parameter(
            torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device)
        )
        # Kaiming-uniform A like nn.Linear's own init; B = 0 keeps the wrapped output unchanged.
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> Tensor:
        """The base weight (out, in); code that reads ``.weight`` of a Linear keeps working."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    def delta_weight(self) -> Tensor:
        """The update ``B @ A * alpha / r``, shape (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., in) -> (..., out)."""
        update = self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()  # (..., r) then (..., out)
        return self.base(x) + update * self.scaling

    def merged(self) -> nn.Linear:
        """The base layer with the update folded into its weight (in place), trainable again."""
        with torch.no_grad():
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
        for param in self.base.parameters():
            param.requires_grad_(True)
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    """A module path matches a target by its last component (``q_proj``) or its full dotted path."""
    return name.rsplit(".", 1)[-1] in targets or name in targets


def apply_lora(
    model: nn.Module,
    targets: Sequence[str] = DEFAULT_TARGETS,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    freeze_base: bool = True,
) -> list[str]:
    """Wrap the matching ``nn.Linear`` modules of ``model`` in :class:`LoRALinear`, in place.

    Args:
        model: any module (e.g. a :class:`~lmforge.models.TransformerModel`).
        targets: attribute names (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``up_proj``,
            ``down_proj``, ``gate_proj``) or full dotted module paths.
        rank: adapter rank.
        alpha: adapter scale numerator.
        dropout: dropout on the adapter input.
        freeze_base: freeze every other parameter too (the caller unfreezes a task head).

    Returns:
        The dotted names of the wrapped modules.

    Raises:
        ConfigError: no ``nn.Linear`` matches ``targets``.
    """
    if freeze_base:
        for param in model.parameters():
            param.requires_grad_(False)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _matches(name, targets)
    ]
    if not found:
        raise ConfigError(f"apply_lora: no nn.Linear module named {', '.join(targets)} in the model")
    for name, module in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, LoRALinear(module, rank, alpha, dropout))
    return [name for name, _ in found]


def merge_lora(model: nn.Module) -> int:
    """Fold every :class:`LoRALinear` of ``model`` back into a plain ``nn.Linear``; returns the count."""
    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name, module in wrapped:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, module.merged())
    return len(wrapped)


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapter matrices of every :class:`LoRALinear` in ``model``."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_a, m.lora_b)]
