"""Unstructured magnitude pruning: the smallest weights of the block linears set to zero and kept there.

Sparsity is reached at once (``oneshot``) or gradually during the recovery fine-tune with the cubic
schedule of Zhu & Gupta (2017): ``s_t = s (1 - (1 - t / T)^3)`` over the first ``T`` steps (two
thirds of the run), the masks recomputed every ``T / 10`` steps from the current magnitudes. The
weights ranked are those of every ``nn.Linear`` in the Transformer blocks, all together
(``global``) or per layer (``layer``); embeddings, norms and heads are not pruned.

Masks stay exact through training: gradients of pruned weights are zeroed (so Adam's moments stay
zero) and, after every optimizer step, the pruned weights are set to zero again (weight decay and
other updates cannot revive them). The masks are then folded into the weights, so the result is a
normal dense checkpoint whose zeros are the pruned weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from lmforge.models import TransformerModel

__all__ = ["MagnitudePruner", "cubic_sparsity"]


def cubic_sparsity(step: int, final: float, ramp_steps: int) -> float:
    """Zhu & Gupta's schedule: sparsity after ``step`` optimizer steps, ``final`` from ``ramp_steps`` on."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return final
    return final * (1.0 - (1.0 - step / ramp_steps) ** 3)


def block_linears(model: TransformerModel) -> dict[str, nn.Linear]:
    """The linears magnitude pruning ranks: every ``nn.Linear`` inside the stacks' blocks."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.startswith(("stack.layers.", "decoder.layers."))
    }


class MagnitudePruner:
    """Masks of the block linears of ``model`` and the schedule that moves them.

    Args:
        model: the model pruned in place.
        sparsity: final share of zero weights (over all ranked weights, or in each layer).
        scope: ``global`` or ``layer``.
        schedule: ``oneshot`` (prune at once) or ``cubic`` (during the recovery run).
        steps: the recovery run's optimizer steps (``cubic`` ramps over two thirds of them).
    """

    def __init__(
        self,
        model: TransformerModel,
        sparsity: float,
        scope: str = "global",
        schedule: str = "oneshot",
        steps: int = 0,
    ) -> None:
        self.model, self.final, self.scope, self.schedule = model, sparsity, scope, schedule
        self.weights = [m.weight for m in block_linears(model).values()]
        self.masks = [torch.ones_like(w, dtype=torch.bool) for w in self.weights]
        self.ramp = (2 * steps) // 3 if schedule == "cubic" else 0
        self.every = max(1, self.ramp // 10)
        self.step = 0
        self.current = 0.0

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Recompute the masks so that ``sparsity`` of the ranked weights are zero, and apply them."""
        self.current = sparsity
        groups = (
            [list(range(len(self.weights)))]
            if self.scope == "global"
            else [[i] for i in range(len(self.weights))]
        )
        for group in groups:
            magnitudes = torch.cat([self.weights[i].detach().abs().flatten() for i in group])
            count = int(round(sparsity * magnitudes.numel()))
            if count == 0:
                for i in group:
                    self.masks[i].fill_(True)
                continue
            # Ties at the threshold are broken by position so that exactly ``count`` are pruned.
            order = torch.argsort(magnitudes, stable=True)
            keep = torch.ones(magnitudes.numel(), dtype=torch.bool)
            keep[order[:count]] = False
            offset = 0
            for i in group:
                size = self.weights[i].numel()
                self.masks[i].copy_(keep[offset : offset + size].view_as(self.masks[i]))
                offset += size
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        """Set the pruned weights to zero."""
        for weight, mask in zip(self.weights, self.masks):
            weight.mul_(mask)

    def sparsity(self) -> float:
        """The measured share of zeros among the ranked weights."""
        zeros = sum(int((w == 0).sum()) for w in self.weights)
        return zeros / sum(w.numel() for w in self.weights)

    def _after_step(self) -> None:
        self.step += 1
        if self.schedule == "cubic" and self.step <= self.ramp and self.step % self.every == 0:
            self.prune_to(cubic_sparsity(self.step, self.final, self.ramp))
        self.apply()

    @contextlib.contextmanager
    def training(self) -> Iterator[None]:
        """Keep the masks through a training run of the model's parameters: gradients of pruned
        weights are zeroed, and every optimizer step that updates them is followed by re-masking
        (and the schedule's next sparsity)."""
        self.prune_to(self.final if self.schedule == "oneshot" else 0.0)
        ours = {id(w) for w in self.weights}
        handles: list[Any] = [
            w.register_hook(lambda grad, mask=mask: grad * mask) for w, mask in zip(self.weights, self.masks)
        ]

        def post_step(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
            if any(id(p) in ours for group in optimizer.param_groups for p in group["params"]):
                self._after_step()

        # A global hook: the training loop builds its own optimizer, which this code never sees.
        handles.append(register_optimizer_step_post_hook(post_step))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        if self.current != self.final:  # a run shorter than the ramp still ends at the target
            self.prune_to(self.final)
