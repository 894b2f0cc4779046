"""Cross-entropy over a vocabulary projection without materialising all the logits.

A language model's last step, ``logits = hidden @ W.T + b`` then cross-entropy, costs a
(tokens x vocab) float tensor several times over (logits, log-softmax, the gradient of each):
with GPT-2's 50k vocabulary and 2k tokens that is ~400 MB apiece, and on a CPU much of the time
goes into moving them through memory. :func:`linear_cross_entropy` computes the gradients during
the forward pass (the loss is the last op, so its gradient is known up to the incoming scale),
reusing one buffer for log-probabilities and gradient, as Liger's fused linear cross-entropy
does; tokens are processed in chunks that bound the buffer. Same matmul FLOPs, about half the
memory traffic and a third of the peak memory of ``F.linear`` + ``F.cross_entropy``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.tasks.sources import IGNORE_INDEX

_CHUNK_BYTES = 512 * 2**20  # fp32 logits per chunk: bounds peak memory


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        compute_dtype: torch.dtype,
        chunk: int,
        needs_grad: bool,
        with_accuracy: bool,
    ) -> tuple[Tensor, Tensor]:
        weight_c = weight.to(compute_dtype)
        bias_c = bias.to(compute_dtype) if bias is not None else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight: Tensor | None = None
        grad_bias: Tensor | None = None
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].to(compute_dtype)  # (n, H)
            t = targets[start : start + chunk]
            rows = torch.arange(len(t), device=t.device)
            ignored = (t == IGNORE_INDEX).nonzero()[:, 0]
            safe = t.clamp(min=0)
            logits = F.linear(h, weight_c, bias_c)  # (n, V) in the compute dtype
            log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)  # one pass, fp32 out
            del logits
            picked = log_probs[rows, safe].index_fill(0, ignored, 0.0)
            loss -= picked.sum()
            if with_accuracy:
                correct += ((log_probs.argmax(-1) == t) & (t != IGNORE_INDEX)).sum()
            if grad_hidden is None:
                continue
            # d(sum CE)/d logits = softmax - one_hot, zero on ignored rows; computed in place.
            grad = log_probs.exp_()
            grad[rows, safe] -= 1
            grad.index_fill_(0, ignored, 0.0)
            grad_c = grad.to(compute_dtype)
            grad_hidden[start : start + chunk] = grad_c @ weight_c
            chunk_weight = grad_c.t() @ h  # (V, H)
            grad_weight = chunk_weight if grad_weight is None else grad_weight.add_(chunk_weight)
            if bias is not None:
                chunk_bias = grad.sum(0)
                grad_bias = chunk_bias if grad_bias is None else grad_bias.add_(chunk_bias)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad_correct: Tensor) -> tuple[Tensor | None, ...]:
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        # The gradients were computed for d(loss)=1; scale in place (they are used once).
        grads = [
            None if g is None else g.mul_(grad_loss.to(g.dtype)).to(dtype)
            for g, dtype in ((grad_hidden, grad_hidden.dtype if grad_hidden is not None else None),
                             (grad_weight, weight_dtype), (grad_bias, bias_dtype))
        ]  # fmt: skip
        return (*grads, None, None, None, None, None)


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, with_accuracy: bool = False
) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of ``hidden @ weight.T + bias`` against ``targets``, chunked.

    Args:
        hidden: (N, H) final hidden states (after any LM-head transform).
        weight: (V, H) output projection (often the tied token embedding).
        bias: (V,) or None.
        targets: (N,) token ids; :data:`IGNORE_INDEX` rows count for nothing.

    Returns:
        ``(loss_sum, num_correct)``: fp32 scalar sum of per-token losses (differentiable with
        respect to ``hidden``, ``weight`` and ``bias``) and the number of argmax hits (0 unless
        ``with_accuracy``).

    Under autocast the matmuls run in the autocast dtype and the softmax in fp32, as autocast
    would do for ``F.linear`` followed by ``F.cross_entropy``.
    """
    device_type = hidden.device.type
    compute_dtype = (
        torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    )
    chunk = max(64, _CHUNK_BYTES // (4 * weight.shape[0]))
    inputs = (hidden, weight, bias)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(
            hidden, weight, bias, targets, compute_dtype, chunk, needs_grad, with_accuracy
        )
