"""Quantized layers an lmforge checkpoint can hold, and the round-to-nearest quantizers behind them.

Four layers, each computing on its packed weights with a torch core kernel (no dequantisation of
the whole weight to fp32 per call):

- :class:`Int8DynamicLinear` (method ``int8``): int8 weights with one scale per output channel;
  activations quantized per call (per tensor, 7 bits: fbgemm's ``reduce_range`` keeps the u8 x s8
  products of AVX2 from saturating) by fbgemm's ``quantized::linear_dynamic``. For encoders and
  classifiers on CPU.
- :class:`Int8WeightOnlyLinear` (``int8-wo``): the same weights, bf16 activations, through
  ``aten._weight_int8pack_mm``.
- :class:`Int4WeightOnlyLinear` (``int4-wo`` and ``gptq-int4``): 4-bit codes with a scale and a
  minimum per group of ``group_size`` input columns (``w = code * scale + minimum``, GGUF's Q4_1
  layout), bf16 activations, through ``aten._weight_int4pack_mm_for_cpu``.
- :class:`Int8Embedding`: an int8 token table with one scale per row; only looked-up rows are scaled.

Kernels were chosen by measured speed on the AVX2 CPU lmforge is developed on (one thread, batch 1,
90 distinct 576x1536 weights so they come from DRAM as in decoding): fp32 ``F.linear`` 61 ms,
``linear_dynamic`` 26 ms, ``_weight_int8pack_mm`` with bf16 input 43 ms (2040 us for one weight
with fp32 input: that path is not vectorised), ``_weight_int4pack_mm_for_cpu`` with bf16 input
30 ms; torchao 0.18 ships CUDA kernels only and calls these same CPU ops.

A checkpoint stores plain tensors (``weight_int8`` / ``weight_int4`` packed two codes a byte, low
nibble first, ``weight_scale``, ``weight_min``, ``bias``) and names its quantized modules in
``config.extra["quantization"]`` (see :func:`lmforge.models.quantized_layout.quantization_spec`); the kernels' own packed formats
are built on first use, so files do not depend on a torch version's kernel layout.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.errors import CheckpointError, ConfigError, UnsupportedError

__all__ = [
    "GROUP_SIZES",
    "METHODS",
    "Int4WeightOnlyLinear",
    "Int8DynamicLinear",
    "Int8Embedding",
    "Int8WeightOnlyLinear",
    "dequantize_int4",
    "int4_group_params",
    "int4_kernel_weight",
    "pack_int4",
    "quantize_int4",
    "quantize_int8_rows",
    "unpack_int4",
]

#: Quantization methods: dynamic int8, weight-only int8 and int4, each weight-only one rounded to
#: nearest or by GPTQ.
METHODS = ("int8", "int8-wo", "int4-wo", "gptq-int4", "gptq-int8")
#: Group sizes of the int4 methods (input columns sharing a scale and minimum).
GROUP_SIZES = (32, 64, 128)
_PACK_ROWS = 1024  # rows converted to the int4 kernel's layout at a time (a multiple of 16)
_TINY = 1e-12  # a scale floor: an all-zero row or group still gets a usable scale


# -- quantizers ------------------------------------------------------------------------------------


def quantize_int8_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: ``weight ~ q * scale[:, None]``, ``q`` in [-127, 127].

    Args:
        weight: (N, K) float.

    Returns:
        ``(q, scale)``: (N, K) int8 and (N,) float32; each element's error is at most ``scale / 2``.
    """
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=_TINY)  # (N,)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def int4_group_params(weight: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """Asymmetric 4-bit grid of each group of ``group_size`` columns: its scale and minimum.

    The grid is the one the int4 kernel computes with: it takes the scale and the zero
    ``minimum + 8 * scale`` in bf16, so both are rounded to bf16 here and the minimum derived from
    them (what the checkpoint stores is then exactly what the kernel uses).

    Returns:
        ``(scale, minimum)``, each (N, K / group_size) float32: codes 0..15 map to
        ``minimum + code * scale``, spanning the group's [min, max] (up to that rounding).
    """
    n, k = weight.shape
    groups = weight.detach().float().reshape(n, k // group_size, group_size)  # (N, G, gs)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=_TINY).to(torch.bfloat16).float()
    zero = (low + 8 * scale).to(torch.bfloat16).float()
    return scale, zero - 8 * scale


def quantize_int4(weight: Tensor, scale: Tensor, minimum: Tensor, group_size: int) -> Tensor:
    """Nearest 4-bit codes (N, K) uint8 in 0..15 of ``weight`` on the grids ``(scale, minimum)``."""
    n, k = weight.shape
    groups = weight.detach().float().reshape(n, k // group_size, group_size)
    codes = torch.round((groups - minimum[..., None]) / scale[..., None]).clamp(0, 15)
    return codes.reshape(n, k).to(torch.uint8)


def dequantize_int4(codes: Tensor, scale: Tensor, minimum: Tensor, group_size: int) -> Tensor:
    """The float weight (N, K) the codes stand for: ``code * scale + minimum`` per group."""
    n, k = codes.shape
    groups = codes.float().reshape(n, k // group_size, group_size)
    return (groups * scale.float()[..., None] + minimum.float()[..., None]).reshape(n, k)


def pack_int4(codes: Tensor) -> Tensor:
    """Two 4-bit codes a byte: (N, K) uint8 in 0..15 -> (N, K / 2), column ``2j`` in the low nibble."""
    codes = codes.to(torch.uint8)
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_int4(packed: Tensor) -> Tensor:
    """Inverse of :func:`pack_int4`: (N, K / 2) uint8 -> (N, K) codes in 0..15."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


def check_group_size(group_size: int, in_features: int, name: str = "") -> None:
    """Refuse a group size the int4 kernel cannot use for a layer ``in_features`` wide."""
    if group_size not in GROUP_SIZES:
        raise ConfigError(f"--group-size {group_size}: choose one of {', '.join(map(str, GROUP_SIZES))}")
    if in_features % group_size:
        where = f" of {name}" if name else ""
        raise ConfigError(
            f"--group-size {group_size} does not divide the input width {in_features}{where}; choose a "
            f"group size that divides it ({', '.join(str(g) for g in GROUP_SIZES if in_features % g == 0) or 'none does'})"
        )


def int4_kernel_weight(codes: Tensor, scale: Tensor, zero: Tensor) -> tuple[Tensor, Tensor]:
    """``aten._weight_int4pack_mm_for_cpu``'s weight for (N, K) codes 0..15 standing for
    ``(code - 8) * scale + zero`` with (N, G) ``scale`` and ``zero``: the packed codes and the
    (G, N', 2) bf16 scales and zeros, rows padded to a multiple of 16 (N' >= N; slice the output)."""
    padding = -codes.shape[0] % 16  # the kernel packs rows in sixteens: padded rows are sliced off
    if padding:
        codes = F.pad(codes, (0, 0, 0, padding))
        scale, zero = F.pad(scale, (0, 0, 0, padding)), F.pad(zero, (0, 0, 0, padding))
    # Rows are packed independently: in slices, so the int32 copy the op takes stays small (an LM
    # head's would be 4 bytes per weight).
    packed = torch.cat(
        [
            torch._convert_weight_to_int4pack_for_cpu(codes[i : i + _PACK_ROWS].to(torch.int32), 1)
            for i in range(0, codes.shape[0], _PACK_ROWS)
        ]
    )
    scales_and_zeros = (
        torch.stack([scale.t(), zero.t()], dim=-1).contiguous().to(torch.bfloat16)
    )  # (G, N', 2)
    return packed, scales_and_zeros


# -- layers ----------------------------------------------------------------------------------------


def _require_cpu(x: Tensor, layer: str) -> None:
    if x.device.type != "cpu":
        raise UnsupportedError(
            f"{layer} runs on CPU kernels only; this input is on {x.device}. Load the quantized model "
            "with device='cpu' (or use the unquantized model on this device)"
        )


class _QuantizedLinear(nn.Module):
    """What the quantized linears share: shapes, bias, the cached kernel weight, (..., K) -> (..., N)."""

    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._kernel: tuple[tuple[int, ...], Any] | None = None

    def _buffers_key(self) -> tuple[int, ...]:
        # In-place loads (load_state_dict) bump a tensor's version: the kernel weight is rebuilt then.
        tensors = [t for t in self._buffers.values() if t is not None]
        return tuple(x for t in tensors for x in (id(t), t._version))

    def _kernel_weight(self) -> Any:
        key = self._buffers_key()
        if self._kernel is None or self._kernel[0] != key:
            self._kernel = (key, self._pack())
        return self._kernel[1]

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool, group_size: int | None = None) -> Any:
        """A layer of these shapes to load a checkpoint's tensors into."""
        raise NotImplementedError

    def _pack(self) -> Any:
        raise NotImplementedError

    def _matmul(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _require_cpu(x, type(self).__name__)
        shape = x.shape
        y = self._matmul(x.reshape(-1, self.in_features))  # (M, N)
        return y.reshape(*shape[:-1], self.out_features)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kernel"] = None  # kernel objects do not pickle or deep-copy; rebuilt on use
        return state

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class _Int8Linear(_QuantizedLinear):
    """Per-channel int8 weights ``weight_int8 * weight_scale[:, None]``; subclasses pick the kernel."""

    weight_int8: Tensor
    weight_scale: Tensor

    def __init__(self, weight_int8: Tensor, weight_scale: Tensor, bias: Tensor | None = None) -> None:
        super().__init__(weight_int8.shape[1], weight_int8.shape[0], bias)
        self.register_buffer("weight_int8", weight_int8.to(torch.int8))
        self.register_buffer("weight_scale", weight_scale.detach().float())

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Any:
        q, scale = quantize_int8_rows(linear.weight)
        return cls(q, scale, linear.bias)

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool, group_size: int | None = None) -> Any:
        return cls(
            torch.zeros(out_features, in_features, dtype=torch.int8),
            torch.ones(out_features),
            torch.zeros(out_features) if bias else None,
        )

    def dequantized(self) -> Tensor:
        """The (N, K) float32 weight the int8 values stand for (tests, GGUF export)."""
        return self.weight_int8.float() * self.weight_scale.float()[:, None]


class Int8DynamicLinear(_Int8Linear):
    """int8 per-channel weights, activations quantized per call (fbgemm ``linear_dynamic``)."""

    method = "int8"

    def _pack(self) -> Any:
        zero_points = torch.zeros(self.out_features, dtype=torch.long)
        with warnings.catch_warnings():
            # torch 2.13 deprecates quantized tensor types, but fbgemm's prepack still takes one
            # (torch is pinned: the int8 test fails loudly if a later torch removes it).
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch._make_per_channel_quantized_tensor(
                self.weight_int8, self.weight_scale.double(), zero_points, 0
            )
        bias = None if self.bias is None else self.bias.float()
        return torch.ops.quantized.linear_prepack(qweight, bias)

    def _matmul(self, x: Tensor) -> Tensor:
        return torch.ops.quantized.linear_dynamic(x.float(), self._kernel_weight(), True).to(x.dtype)


class Int8WeightOnlyLinear(_Int8Linear):
    """int8 per-channel weights, bf16 activations (``aten._weight_int8pack_mm``)."""

    method = "int8-wo"

    def _pack(self) -> Any:
        return self.weight_scale.to(torch.bfloat16)

    def _matmul(self, x: Tensor) -> Tensor:
        y = torch._weight_int8pack_mm(x.to(torch.bfloat16), self.weight_int8, self._kernel_weight())
        y = y.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)


class Int4WeightOnlyLinear(_QuantizedLinear):
    """4-bit group-wise weights (``code * scale + minimum``), bf16 activations
    (``aten._weight_int4pack_mm_for_cpu``)."""

    method = "int4-wo"
    weight_int4: Tensor
    weight_scale: Tensor
    weight_min: Tensor

    def __init__(
        self,
        weight_int4: Tensor,
        weight_scale: Tensor,
        weight_min: Tensor,
        group_size: int,
        bias: Tensor | None = None,
    ) -> None:
        super().__init__(weight_int4.shape[1] * 2, weight_int4.shape[0], bias)
        check_group_size(group_size, self.in_features)
        self.group_size = group_size
        self.register_buffer("weight_int4", weight_int4.to(torch.uint8))
        self.register_buffer("weight_scale", weight_scale.detach().float())
        self.register_buffer("weight_min", weight_min.detach().float())

    @classmethod
    def from_codes(
        cls, codes: Tensor, scale: Tensor, minimum: Tensor, group_size: int, bias: Tensor | None = None
    ) -> Int4WeightOnlyLinear:
        """A layer of (N, K) codes 0..15 (round-to-nearest or GPTQ's) on grids (N, K / group_size)."""
        return cls(pack_int4(codes), scale, minimum, group_size, bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = 64) -> Int4WeightOnlyLinear:
        check_group_size(group_size, linear.in_features)
        scale, minimum = int4_group_params(linear.weight, group_size)
        codes = quantize_int4(linear.weight, scale, minimum, group_size)
        return cls.from_codes(codes, scale, minimum, group_size, linear.bias)

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool, group_size: int | None = None) -> Any:
        if group_size is None:
            raise CheckpointError("an int4 layer needs its group_size")
        check_group_size(group_size, in_features)
        groups = in_features // group_size
        return cls(
            torch.zeros(out_features, in_features // 2, dtype=torch.uint8),
            torch.ones(out_features, groups),
            torch.zeros(out_features, groups),
            group_size,
            torch.zeros(out_features) if bias else None,
        )

    def dequantized(self) -> Tensor:
        """The (N, K) float32 weight the codes stand for (tests, GGUF export)."""
        return dequantize_int4(
            unpack_int4(self.weight_int4), self.weight_scale, self.weight_min, self.group_size
        )

    def _pack(self) -> Any:
        scale = self.weight_scale.float()
        zero = self.weight_min.float() + 8 * scale  # the kernel computes (code - 8) * scale + zero
        return int4_kernel_weight(unpack_int4(self.weight_int4), scale, zero)

    def _matmul(self, x: Tensor) -> Tensor:
        packed, scales_and_zeros = self._kernel_weight()
        y = torch._weight_int4pack_mm_for_cpu(
            x.to(torch.bfloat16).contiguous(), packed, self.group_size, scales_and_zeros
        )[:, : self.out_features].to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}"


class Int8Embedding(nn.Module):
    """A token table of int8 rows with one scale per row (``weight_scale`` (V,)) or per block of
    columns (``weight_scale`` (V, G): GGUF Q8_0's 32-wide blocks); a lookup scales only the rows
    it reads."""

    weight_int8: Tensor
    weight_scale: Tensor

    def __init__(self, weight_int8: Tensor, weight_scale: Tensor) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = weight_int8.shape
        if weight_scale.dim() == 2 and self.embedding_dim % weight_scale.shape[1]:
            raise CheckpointError(
                f"Int8Embedding: {weight_scale.shape[1]} scale blocks do not divide the width {self.embedding_dim}"
            )
        self.register_buffer("weight_int8", weight_int8.to(torch.int8))
        self.register_buffer("weight_scale", weight_scale.detach().float())

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        q, scale = quantize_int8_rows(embedding.weight)
        return cls(q, scale)

    @classmethod
    def empty(cls, num_embeddings: int, embedding_dim: int) -> Int8Embedding:
        return cls(torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8), torch.ones(num_embeddings))

    def _scaled(self, rows: Tensor, scale: Tensor) -> Tensor:
        """int8 rows (..., E) times their scales (...,) or (..., G)."""
        rows = rows.to(self.weight_scale.dtype)
        if scale.dim() == rows.dim():  # block scales: (..., G, E / G) * (..., G, 1)
            blocks = rows.unflatten(-1, (scale.shape[-1], -1))
            return (blocks * scale[..., None]).flatten(-2)
        return rows * scale[..., None]

    def forward(self, input_ids: Tensor) -> Tensor:
        return self._scaled(self.weight_int8[input_ids], self.weight_scale[input_ids])  # (..., E)

    def dequantized(self) -> Tensor:
        """The (V, E) float32 table the int8 rows stand for (GGUF export)."""
        return self._scaled(self.weight_int8, self.weight_scale).float()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


LINEAR_CLASSES: dict[str, type[_QuantizedLinear]] = {
    "int8": Int8DynamicLinear,
    "int8-wo": Int8WeightOnlyLinear,
    "int4-wo": Int4WeightOnlyLinear,
    "gptq-int4": Int4WeightOnlyLinear,
    "gptq-int8": Int8WeightOnlyLinear,
}
