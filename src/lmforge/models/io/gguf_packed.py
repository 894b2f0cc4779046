"""Loading a GGUF file's block-quantized weights into packed layers, never as fp32 matrices.

``lmforge.load(path, packed=True)`` comes here. Each Q8_0 / Q4_0 / Q4_1 weight matrix is decoded
from the memory-mapped file, one tensor at a time, straight into the codes and scales of a packed
layer of :mod:`lmforge.models.quantized` (or :mod:`~lmforge.models.quantized_blocks`):

=========  ===========================================  ============================================
GGUF type  block of 32 values                           lmforge layer
=========  ===========================================  ============================================
Q8_0       ``d * q``, q int8                            :class:`Int8BlockLinear` (exact codes, d)
Q4_0       ``d * (q - 8)``, q 0..15                     :class:`Int4WeightOnlyLinear`, group 32,
                                                        scale d, minimum -8 d (exact)
Q4_1       ``d * q + m``, q 0..15                       the same, scale d, minimum m (exact)
=========  ===========================================  ============================================

The stored codes and scales are GGUF's exactly (fp16 scales widen to fp32 without loss); the
kernels compute with bf16 activations and bf16 scales, so logits differ from the dequantized model
by that rounding (measured in the tests). A Q8_0 token table becomes an :class:`Int8Embedding` with
the same block scales, and a tied LM head an :class:`Int8BlockLinear` sharing its int8 tensor.
Norms and other F32 / F16 / BF16 tensors load as float. The model is first built on the ``meta``
device, so no fp32 weight of the whole model is ever allocated: peak memory is the packed weights
plus the memory map.
"""

from __future__ import annotations

from typing import Any

import gguf
import numpy as np
import torch
from torch import Tensor, nn

from lmforge.config import ModelConfig
from lmforge.errors import CheckpointError, UnsupportedError
from lmforge.models.io.convert import Rule
from lmforge.models.model import TransformerModel
from lmforge.models.positions import RotaryEmbedding
from lmforge.models.quantized import Int4WeightOnlyLinear, Int8Embedding
from lmforge.models.quantized_blocks import Int8BlockLinear
from lmforge.models.quantized_layout import set_module

__all__ = ["FLOAT_TYPES", "PACKED_TYPES", "build_packed_model", "decode_blocks"]

#: Block types that load packed.
PACKED_TYPES: tuple[str, ...] = ("Q8_0", "Q4_0", "Q4_1")
#: Types that load as float tensors (norms, unquantized matrices).
FLOAT_TYPES: tuple[str, ...] = ("F32", "F16", "BF16")
_BLOCK = 32


def decode_blocks(
    raw: np.ndarray, ggml_type: str, shape: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor | None]:
    """GGUF block bytes of an (N, K) matrix as ``(codes, scale, minimum)`` without dequantizing.

    Args:
        raw: the tensor's bytes (uint8), e.g. ``gguf.GGUFReader(path).tensors[i].data``.
        ggml_type: ``"Q8_0"``, ``"Q4_0"`` or ``"Q4_1"``.
        shape: (N, K), K a multiple of 32.

    Returns:
        Q8_0: codes (N, K) int8, scale (N, K / 32) float32, ``None``. Q4_0 / Q4_1: codes (N, K)
        uint8 in 0..15, scale and minimum (N, K / 32) float32 (Q4_0's minimum is ``-8 * scale``).
    """
    n, k = shape
    _, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml_type]]
    blocks = np.asarray(raw, dtype=np.uint8).reshape(n * (k // _BLOCK), type_size)
    scale = torch.from_numpy(blocks[:, 0:2].copy().view(np.float16).astype(np.float32)).reshape(
        n, k // _BLOCK
    )
    if ggml_type == "Q8_0":
        codes = torch.from_numpy(blocks[:, 2:].copy().view(np.int8)).reshape(n, k)
        return codes, scale, None
    nibbles = torch.from_numpy(blocks[:, type_size - _BLOCK // 2 :].copy())  # (blocks, 16)
    # Values 0..15 of a block sit in the low nibbles, values 16..31 in the high ones.
    codes = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=1).reshape(n, k)
    if ggml_type == "Q4_0":
        return codes, scale, -8 * scale
    minimum = torch.from_numpy(blocks[:, 2:4].copy().view(np.float16).astype(np.float32)).reshape(
        n, k // _BLOCK
    )
    return codes, scale, minimum


def _packed_linear(codes: Tensor, scale: Tensor, minimum: Tensor | None) -> nn.Module:
    if minimum is None:
        return Int8BlockLinear(codes, scale)
    return Int4WeightOnlyLinear.from_codes(codes, scale, minimum, _BLOCK)


def build_packed_model(
    gguf_file: Any, config: ModelConfig, rules: list[Rule], source: str
) -> TransformerModel:
    """The model of ``config`` with every block-quantized matrix of ``gguf_file`` kept packed.

    Args:
        gguf_file: an opened :class:`lmforge.models.io.gguf.GGUFFile`.
        config: the model's config (from the file's metadata).
        rules: the family's GGUF weight map, layers expanded.
        source: the file, for messages.

    Raises:
        UnsupportedError: a weight matrix is stored in a type with no packed kernel (e.g. Q4_K).
        CheckpointError: a weight is missing or of the wrong shape.
    """
    with torch.device("meta"):
        model = TransformerModel(config)
    expected = model.state_dict()
    floats: dict[str, Tensor] = {}
    for rule in rules:
        (ours,) = rule.ours
        if rule.theirs not in gguf_file:
            raise CheckpointError(f"{source}: missing weight {rule.theirs!r}")
        info = gguf_file.tensor_infos[rule.theirs]
        if tuple(expected[ours].shape) != info.shape:
            raise CheckpointError(
                f"{source}: weight {rule.theirs!r} has shape {info.shape} but the config expects "
                f"{tuple(expected[ours].shape)} for {ours!r}"
            )
        module_name = ours.rpartition(".")[0]
        module = model.get_submodule(module_name)
        matrix = ours.endswith(".weight") and isinstance(module, nn.Linear | nn.Embedding)
        if info.ggml_type in FLOAT_TYPES:
            floats[ours] = rule.to_ours(gguf_file.tensor(rule.theirs))
            continue
        if not matrix or info.ggml_type not in PACKED_TYPES:
            raise UnsupportedError(
                f"{source}: tensor {rule.theirs!r} is stored as {info.ggml_type}, which lmforge cannot keep "
                f"packed; packed loading supports {', '.join(PACKED_TYPES)} (and float {', '.join(FLOAT_TYPES)}). "
                "Load it with packed=False to dequantize it instead"
            )
        codes, scale, minimum = decode_blocks(gguf_file.raw(rule.theirs), info.ggml_type, info.shape)
        codes, scale = rule.to_ours(codes), rule.to_ours(scale)  # row permutations (Q/K RoPE layout)
        minimum = None if minimum is None else rule.to_ours(minimum)
        if isinstance(module, nn.Embedding):
            if minimum is not None:  # a 4-bit table: its lookups read floats, its tied head stays packed
                floats[ours] = (
                    codes.float()
                    .unflatten(1, (-1, _BLOCK))
                    .mul(scale[..., None])
                    .add(minimum[..., None])
                    .flatten(1)
                )
            else:
                set_module(model, module_name, Int8Embedding(codes, scale))
            if config.tie_embeddings and model.lm_head is not None:  # shares the int8 codes tensor
                set_module(model, "lm_head.decoder", _packed_linear(codes, scale, minimum))
        else:
            set_module(model, module_name, _packed_linear(codes, scale, minimum))
    model.load_state_dict(floats, strict=False, assign=True)
    for name, module in model.named_modules():
        if isinstance(module, RotaryEmbedding):  # its non-persistent frequencies were built on meta
            head_dim = module.inv_freq.shape[0] * 2
            set_module(model, name, RotaryEmbedding(head_dim, config.rope_theta, config.rope_scaling))
    if config.tie_embeddings and model.lm_head is not None and isinstance(model.lm_head.decoder, nn.Linear):
        model.tie_weights()  # a float table: the head reads it as in the dequantized model
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"{source}: no weights for {', '.join(left[:5])}")
    return model
