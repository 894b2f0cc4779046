"""GPTQ (Frantar et al. 2023): 4-bit codes chosen column by column, each column's rounding error
pushed onto the columns not yet quantized through the inverse Hessian of the layer's inputs.

For a linear layer with inputs X (n, K) the layer-wise objective ``||W X^T - Q X^T||^2`` has the
Hessian ``H = 2 X^T X``. Columns are quantized in order; after column ``i`` the remaining columns
move by ``-err_i * Hinv[i, i:] / Hinv[i, i]`` (the optimal update for that objective), using the
upper Cholesky factor of ``H^-1`` for stability. The group grid (scale, minimum) of each group of
``group_size`` columns is fixed from the updated weights when the quantizer reaches the group, as
in the reference implementation with ``groupsize``.

:func:`gptq_quantize_stack` runs it block by block over a calibration set: the inputs of block 0
are captured once, each block's linears are quantized from the Hessians of their inputs, and the
block's output with the quantized weights is the next block's input (quantization errors of
earlier blocks are compensated by the later ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel
from lmforge.models.quantized import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    dequantize_int4,
    int4_group_params,
    quantize_int8_rows,
)
from lmforge.models.quantized_layout import set_module

__all__ = ["gptq_quantize_stack", "gptq_quantize_weight", "gptq_quantize_weight_int8"]

_BLOCK = 128  # columns updated together (lazy batch updates); a multiple of every group size


def _inverse_hessian_factor(hessian: Tensor, weight: Tensor, damp: float) -> Tensor:
    """The upper Cholesky factor of the damped ``H^-1``; zeroes ``weight``'s dead input columns."""
    k = hessian.shape[0]
    h = hessian.detach().double().clone()
    dead = torch.diag(h) == 0  # inputs never active: their columns do not matter, quantize them as 0
    h[dead, dead] = 1.0
    weight[:, dead] = 0.0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    try:
        return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError:
        raise ConfigError(
            f"GPTQ: the calibration Hessian is not positive definite even with damp {damp}; "
            "use more calibration text or a larger damp"
        ) from None


def _gptq(w: Tensor, hinv: Tensor, quantize_column: Callable[[Tensor, int, int], Tensor]) -> None:
    """The GPTQ sweep over ``w`` (N, K) float64: ``quantize_column(block, i, column)`` rounds column
    ``i`` of the current block (global index ``column``), records its codes and returns the
    dequantized column; the rounding error moves the later columns."""
    k = w.shape[1]
    for start in range(0, k, _BLOCK):
        end = min(start + _BLOCK, k)
        block = w[:, start:end].clone()  # (N, b): updated in place as columns are quantized
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:end, start:end]
        for i in range(end - start):
            error = (block[:, i] - quantize_column(block, i, start + i)) / hinv_block[i, i]  # (N,)
            block[:, i:] -= error[:, None] * hinv_block[i, i:][None, :]
            errors[:, i] = error
        w[:, end:] -= errors @ hinv[start:end, end:]


def gptq_quantize_weight(
    weight: Tensor, hessian: Tensor, group_size: int, damp: float = 0.01
) -> tuple[Tensor, Tensor, Tensor]:
    """GPTQ 4-bit group-wise codes of one weight.

    Args:
        weight: (N, K) float.
        hessian: (K, K) ``X^T X`` summed over the calibration tokens (any positive scale).
        group_size: input columns sharing a grid.
        damp: added to the diagonal, as a share of its mean (regularises a rank-deficient H).

    Returns:
        ``(codes, scale, minimum)``: (N, K) uint8 in 0..15 and (N, K / group_size) float32 grids.
    """
    w = weight.detach().double().clone()
    n, k = w.shape
    hinv = _inverse_hessian_factor(hessian, w, damp)
    codes = torch.zeros(n, k, dtype=torch.uint8)
    scale = torch.zeros(n, k // group_size, dtype=torch.float32)
    minimum = torch.zeros(n, k // group_size, dtype=torch.float32)

    def quantize_column(block: Tensor, i: int, column: int) -> Tensor:
        g = column // group_size
        if column % group_size == 0:  # groups never cross blocks: _BLOCK is a multiple of them
            s, m = int4_group_params(block[:, i : i + group_size], group_size)
            scale[:, g], minimum[:, g] = s[:, 0], m[:, 0]
        s_col, m_col = scale[:, g].double(), minimum[:, g].double()
        q = torch.round((block[:, i] - m_col) / s_col).clamp(0, 15)
        codes[:, column] = q.to(torch.uint8)
        return q * s_col + m_col

    _gptq(w, hinv, quantize_column)
    return codes, scale, minimum


def gptq_quantize_weight_int8(weight: Tensor, hessian: Tensor, damp: float = 0.01) -> tuple[Tensor, Tensor]:
    """GPTQ int8 codes on the per-row symmetric grid of :func:`quantize_int8_rows` (the grid is
    fixed by the original row; GPTQ only chooses the roundings).

    Returns:
        ``(q, scale)``: (N, K) int8 in [-127, 127] and (N,) float32.
    """
    _, scale = quantize_int8_rows(weight)
    w = weight.detach().double().clone()
    hinv = _inverse_hessian_factor(hessian, w, damp)
    codes = torch.zeros(w.shape, dtype=torch.int8)
    step = scale.double()

    def quantize_column(block: Tensor, i: int, column: int) -> Tensor:
        q = torch.round(block[:, i] / step).clamp(-127, 127)
        codes[:, column] = q.to(torch.int8)
        return q * step

    _gptq(w, hinv, quantize_column)
    return codes, scale


def _linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


class _Stop(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


@torch.no_grad()
def gptq_quantize_stack(
    model: TransformerModel, batches: Iterable[dict[str, Tensor]], group_size: int | None, damp: float = 0.01
) -> list[str]:
    """Replace every linear of ``model.stack``'s blocks with a GPTQ-quantized one: an
    :class:`Int4WeightOnlyLinear` with ``group_size``, or an :class:`Int8WeightOnlyLinear` (``None``).

    Args:
        model: an encoder-only or decoder-only model (fp32, CPU).
        batches: calibration inputs (``input_ids``, ``attention_mask``), e.g. from
            :func:`lmforge.compress.quantize.calibration_batches`.
        group_size: int4: input columns per grid; ``None``: int8 per output channel.
        damp: Hessian damping (share of the mean diagonal).

    Returns:
        The names of the quantized modules.
    """
    if model.decoder is not None:
        raise UnsupportedError(
            f"GPTQ calibrates one stack; {model.config.family} is an encoder-decoder model. Use "
            "--method int4-wo (round to nearest) for it"
        )
    if model.config.num_layer_groups is not None:
        raise UnsupportedError(
            f"GPTQ: {model.config.family} shares blocks across layers (num_layer_groups), so a "
            "block's inputs differ per use; use --method int4-wo"
        )
    blocks = model.stack.layers
    captured: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def capture(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(capture, with_kwargs=True)
    model.eval()
    try:
        for batch in batches:
            with contextlib.suppress(_Stop):
                model(**batch)
    finally:
        handle.remove()
    if not captured:
        raise ConfigError("gptq-int4: the calibration text gave no batches")
    names: list[str] = []
    for index, block in enumerate(blocks):
        linears = _linears(block)
        hessians = {
            name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64)
            for name, m in linears.items()
        }

        def accumulate(name: str, hessians: dict[str, Tensor] = hessians) -> Any:
            def hook(_module: nn.Module, inputs: tuple[Tensor, ...], _output: Tensor) -> None:
                x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()  # (tokens, K)
                hessians[name] += x.T @ x

            return hook

        handles = [m.register_forward_hook(accumulate(name)) for name, m in linears.items()]
        try:
            for args, kwargs in captured:
                block(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        quantized: dict[str, nn.Module] = {}
        for name, linear in linears.items():
            if group_size is None:
                q, scale = gptq_quantize_weight_int8(linear.weight, hessians[name], damp)
                quantized[name] = Int8WeightOnlyLinear(q, scale, linear.bias)
                approx = q.float() * scale[:, None]
            else:
                codes, scale, minimum = gptq_quantize_weight(linear.weight, hessians[name], group_size, damp)
                quantized[name] = Int4WeightOnlyLinear.from_codes(
                    codes, scale, minimum, group_size, linear.bias
                )
                approx = dequantize_int4(codes, scale, minimum, group_size)
            linear.weight.copy_(approx)  # the next block sees this block's output with the quantized weights
        captured = [((block(*args, **kwargs), *args[1:]), kwargs) for args, kwargs in captured]
        for name, layer in quantized.items():
            set_module(block, name, layer)
            names.append(f"stack.layers.{index}.{name}")
    return names
