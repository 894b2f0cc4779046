"""Distillation losses (DistilBERT / TinyBERT style) and the recorder that exposes what they compare.

- :func:`soft_target_kl`: ``tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))`` (Hinton et al.
  2015), the ``tau^2`` keeping its gradients on the scale of the hard-label loss.
- :func:`masked_mse`: mean squared error over real tokens, for hidden states mapped through a
  learned projection (TinyBERT's ``W_h``) and for attention scores (TinyBERT's ``A``: the scaled
  ``q k^T`` before the softmax, compared over real query and key positions).

:class:`Recorder` hooks a model's embeddings, blocks and q / k projections to collect hidden
states and attention scores during the forward pass the task's loss makes anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.models import TransformerModel

__all__ = ["Recorder", "attention_scores", "layer_map", "masked_mse", "soft_target_kl"]


def soft_target_kl(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float, mask: Tensor | None = None
) -> Tensor:
    """``tau^2 * KL(p_t || p_s)`` at temperature ``tau``, averaged over the items scored.

    Args:
        student_logits / teacher_logits: (B, C) or (B, T, V).
        temperature: ``tau`` > 0.
        mask: (B, T) 1 for positions scored, for 3-D logits; ``None``: all.
    """
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)  # (B,) or (B, T)
    if mask is not None and kl.dim() == 2:
        weights = mask.to(kl.dtype)
        return temperature**2 * (kl * weights).sum() / weights.sum().clamp(min=1)
    return temperature**2 * kl.mean()


def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the elements where ``mask`` (broadcast to the inputs) is 1."""
    weights = mask.to(student.dtype).expand_as(student)
    return ((student - teacher).pow(2) * weights).sum() / weights.sum().clamp(min=1)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping: student block ``m`` (0-based) learns from teacher block
    ``(m + 1) * L_t / L_s - 1``, so the last blocks meet."""
    return [(m + 1) * teacher_layers // student_layers - 1 for m in range(student_layers)]


def attention_scores(q: Tensor, k: Tensor, num_heads: int, num_kv_heads: int, scale: float) -> Tensor:
    """(B, nh, T, T) scaled dot products from the projections' outputs q (B, T, nh*hd), k (B, T, nkv*hd)."""
    batch, length, _ = q.shape
    queries = q.view(batch, length, num_heads, -1).transpose(1, 2)  # (B, nh, T, hd)
    keys = k.view(batch, length, num_kv_heads, -1).transpose(1, 2)
    if num_kv_heads != num_heads:
        keys = keys.repeat_interleave(num_heads // num_kv_heads, dim=1)
    return queries @ keys.transpose(-1, -2) * scale


class Recorder:
    """Collect hidden states (embeddings output, then each chosen block's output) and attention
    scores of chosen layers of ``model`` during its forward passes.

    Args:
        model: the model observed.
        layers: block indices whose outputs (and attention scores) are kept.
        attention: also record attention scores of those layers.
    """

    def __init__(self, model: TransformerModel, layers: Sequence[int], attention: bool) -> None:
        self.hidden: dict[int, Tensor] = {}  # -1: embeddings; i: block i's output (B, T, H)
        self.scores: dict[int, Tensor] = {}
        self._q: dict[int, Tensor] = {}
        self.handles: list[Any] = [model.embeddings.register_forward_hook(self._keep(-1))]
        blocks = model.stack.layers
        for i in layers:
            block: Any = blocks[i]
            self.handles.append(block.register_forward_hook(self._keep(i)))
            if attention:
                attn = block.attn
                scale = attn.scale if attn.scale is not None else attn.head_dim**-0.5
                self.handles.append(attn.q_proj.register_forward_hook(self._keep_q(i)))
                self.handles.append(
                    attn.k_proj.register_forward_hook(
                        self._scores(i, attn.num_heads, attn.num_kv_heads, scale)
                    )
                )

    def _keep(self, index: int) -> Any:
        def hook(_m: nn.Module, _args: Any, output: Tensor) -> None:
            self.hidden[index] = output

        return hook

    def _keep_q(self, index: int) -> Any:
        def hook(_m: nn.Module, _args: Any, output: Tensor) -> None:
            self._q[index] = output

        return hook

    def _scores(self, index: int, heads: int, kv_heads: int, scale: float) -> Any:
        def hook(_m: nn.Module, _args: Any, output: Tensor) -> None:
            self.scores[index] = attention_scores(self._q.pop(index), output, heads, kv_heads, scale)

        return hook

    def clear(self) -> None:
        self.hidden.clear()
        self.scores.clear()
        self._q.clear()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
