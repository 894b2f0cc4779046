"""Quantized layers against references: error bounds derived from the quantization grids, exact
pack / unpack round trips, and checkpoints that load back bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import lmforge
from lmforge.errors import CheckpointError, ConfigError
from lmforge.models import TransformerModel, preset_config
from lmforge.models.quantized import (
    Int4WeightOnlyLinear,
    Int8DynamicLinear,
    Int8Embedding,
    Int8WeightOnlyLinear,
    dequantize_int4,
    int4_group_params,
    pack_int4,
    quantize_int4,
    quantize_int8_rows,
    unpack_int4,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def _linear(in_features: int = 128, out_features: int = 48, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_features, out_features)
    nn.init.normal_(layer.weight, std=0.05)
    nn.init.normal_(layer.bias, std=0.05)
    return layer


def test_int8_rows_round_to_within_half_a_step() -> None:
    w = torch.randn(20, 64) * torch.logspace(-3, 1, 20)[:, None]  # rows of very different ranges
    q, scale = quantize_int8_rows(w)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    error = (q.float() * scale[:, None] - w).abs()
    assert torch.all(error <= scale[:, None] / 2 + 1e-6 * w.abs())
    assert torch.all(q.abs().amax(dim=1) == 127)  # each row uses its whole range


def test_int8_dynamic_linear_is_within_its_error_bound() -> None:
    """|y - y_fp32| <= s_w/2 * sum|x| + s_x/2 * sum|w_q| (+ the product term), elementwise, where s_x
    is the 7-bit per-tensor activation step (fbgemm's reduce_range) and s_w the weight row's step."""
    layer = _linear()
    x = torch.randn(2, 7, 128)
    y = Int8DynamicLinear.from_float(layer)(x)
    ref = layer(x)
    _, s_w = quantize_int8_rows(layer.weight)
    s_x = float(x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    w_q = Int8DynamicLinear.from_float(layer).dequantized()
    bound = s_w / 2 * x.abs().sum(-1, keepdim=True) + s_x / 2 * w_q.abs().sum(-1) + s_x * s_w / 4 * 128 + 1e-5
    error = (y - ref).abs()
    assert torch.all(error <= bound), float((error - bound).max())
    assert float(error.max()) > 0  # really quantized, not a float path
    assert y.shape == ref.shape


def test_int8_weight_only_linear_is_within_its_error_bound() -> None:
    """Weight error s_w/2 per element, bf16 activations and output (relative 2^-8 each)."""
    layer = _linear()
    x = torch.randn(5, 128)
    quantized = Int8WeightOnlyLinear.from_float(layer)
    y = quantized(x)
    w_q = quantized.dequantized()
    _, s_w = quantize_int8_rows(layer.weight)
    bound = (
        s_w / 2 * x.abs().sum(-1, keepdim=True)
        + 2**-7 * (x.abs() @ w_q.abs().T)
        + 2**-8 * layer(x).abs()
        + 1e-5
    )
    assert torch.all((y - layer(x)).abs() <= bound)
    # Against the exact product with the dequantized weight: only bf16 rounding remains.
    exact = x @ w_q.T + layer.bias
    assert torch.allclose(y, exact, rtol=2e-2, atol=2e-2 * float(exact.abs().mean()))


def test_int4_pack_unpack_round_trips_with_the_low_nibble_first() -> None:
    codes = torch.randint(0, 16, (6, 64), dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.shape == (6, 32) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), codes)
    assert pack_int4(torch.tensor([[1, 2, 15, 0]], dtype=torch.uint8)).tolist() == [[0x21, 0x0F]]


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_to_nearest_stays_on_its_grid(group_size: int) -> None:
    w = torch.randn(8, 256) * 0.1
    scale, minimum = int4_group_params(w, group_size)
    codes = quantize_int4(w, scale, minimum, group_size)
    assert codes.max() <= 15
    approx = dequantize_int4(codes, scale, minimum, group_size)
    step = scale.repeat_interleave(group_size, dim=1)
    # Nearest grid point, up to the bf16 rounding of the grid's scale and zero (the kernel's).
    assert torch.all((approx - w).abs() <= step * 0.5 + step * 2**-8 * 16 + 1e-6)
    # Grid values are what the kernel computes with: scale and minimum + 8 * scale are bf16 numbers.
    assert torch.equal(scale, scale.to(torch.bfloat16).float())
    zero = minimum + 8 * scale
    assert torch.equal(zero, zero.to(torch.bfloat16).float())


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_linear_matches_its_dequantized_weight(group_size: int) -> None:
    layer = _linear(128, 40)  # 40 rows: not a multiple of the kernel's 16
    quantized = Int4WeightOnlyLinear.from_float(layer, group_size)
    x = torch.randn(3, 128)
    exact = x @ quantized.dequantized().T + layer.bias
    y = quantized(x)
    assert torch.allclose(y, exact, rtol=2e-2, atol=2e-2 * float(exact.abs().mean()))
    assert float((y - layer(x)).abs().max()) > 0


@pytest.mark.parametrize(
    ("in_features", "out_features", "group_size"), [(96, 37, 32), (160, 1, 32), (192, 97, 64), (384, 17, 128)]
)
def test_int4_linear_with_odd_shapes_equals_the_dequantized_float_linear(
    in_features: int, out_features: int, group_size: int
) -> None:
    """Odd output widths (the kernel pads rows to sixteens and slices them off) and input widths that
    are a multiple of the group but not of a wider tile, for one row (decoding) and many, 3-D too:
    every output column equals the fp32 Linear holding the dequantized weight, up to bf16 inputs."""
    layer = _linear(in_features, out_features, seed=out_features)
    quantized = Int4WeightOnlyLinear.from_float(layer, group_size)
    reference = nn.Linear(in_features, out_features)
    reference.weight.copy_(quantized.dequantized())
    reference.bias.copy_(layer.bias)
    for shape in [(1, in_features), (33, in_features), (2, 5, in_features)]:
        x = torch.randn(*shape)
        y = quantized(x)
        exact = reference(x.to(torch.bfloat16).float())
        assert y.shape == exact.shape
        scale = float(exact.abs().max())
        assert torch.allclose(y, exact, rtol=2e-2, atol=1e-2 * scale), float((y - exact).abs().max())


def test_int8_embedding_reads_scaled_rows() -> None:
    table = nn.Embedding(50, 16)
    quantized = Int8Embedding.from_float(table)
    ids = torch.tensor([[0, 3, 49], [7, 7, 1]])
    _, scale = quantize_int8_rows(table.weight)
    error = (quantized(ids) - table(ids)).abs()
    assert quantized(ids).shape == (2, 3, 16)
    assert torch.all(error <= scale[ids][..., None] / 2 + 1e-6)


def test_a_group_size_that_does_not_divide_the_width_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not divide the input width 96"):
        Int4WeightOnlyLinear.from_float(nn.Linear(96, 8), 64)


@pytest.mark.parametrize("method", ["int8", "int8-wo", "int4-wo"])
def test_a_quantized_checkpoint_loads_back_bit_for_bit(method: str, tmp_path: Path) -> None:
    from lmforge.compress import QuantizeConfig, quantize_model

    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=300, head="sequence_classification", hidden_size=64, num_heads=2,
        intermediate_size=128, max_positions=32,
    )  # fmt: skip
    model = TransformerModel(config).eval()
    ids = torch.randint(0, 300, (2, 12))
    quantize_model(model, QuantizeConfig(method, 32 if method == "int4-wo" else None))
    lmforge.save(model, tmp_path / "q")
    back = lmforge.load(tmp_path / "q")
    assert back.config.extra["quantization"]["method"] == method
    assert torch.equal(back.model(ids).logits, model(ids).logits)
    kinds = {type(m).__name__ for m in back.model.modules()}
    assert {
        "int8": "Int8DynamicLinear",
        "int8-wo": "Int8WeightOnlyLinear",
        "int4-wo": "Int4WeightOnlyLinear",
    }[method] in kinds
    assert ("Int8Embedding" in kinds) == (method == "int8")
    from lmforge.models.info import model_info

    info = model_info(str(tmp_path / "q"))
    assert info["quantization"] == method
    assert info["memory_bytes"] < 0.5 * 4 * TransformerModel(config).num_parameters()


def test_a_quantized_checkpoint_with_a_tensor_missing_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from lmforge.compress import QuantizeConfig, quantize_model

    config = preset_config(
        "gpt2-tiny", vocab_size=100, head="causal_lm", hidden_size=32, num_heads=2, num_layers=1
    )
    model = TransformerModel(config)
    quantize_model(model, QuantizeConfig("int8-wo"))
    lmforge.save(model, tmp_path / "q")
    weights = load_file(str(tmp_path / "q" / "model.safetensors"))
    del weights["stack.layers.0.mlp.up_proj.weight_scale"]
    save_file(weights, str(tmp_path / "q" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing stack.layers.0.mlp.up_proj.weight_scale"):
        lmforge.load(tmp_path / "q")


@pytest.mark.parametrize("method", ["int8-wo", "int4-wo"])
def test_a_quantized_lm_head_loads_back_and_the_embedding_stays_float(method: str, tmp_path: Path) -> None:
    from lmforge.compress import QuantizeConfig, quantize_model

    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny",
        head="causal_lm",
        vocab_size=96,
        hidden_size=64,
        num_heads=4,
        num_kv_heads=2,
        intermediate_size=128,
        num_layers=1,
    )
    model = TransformerModel(config).eval()
    table = model.embeddings.token.weight.detach().clone()
    quantize_model(model, QuantizeConfig(method, 32 if method == "int4-wo" else None, lm_head=True))
    assert "lm_head.decoder" in model.config.extra["quantization"]["linears"]
    lmforge.save(model, tmp_path / "q")
    back = lmforge.load(tmp_path / "q").model
    assert torch.equal(back.embeddings.token.weight, table)
    assert not any(name.startswith("lm_head.") for name, _ in back.named_parameters())
    ids = torch.randint(0, 96, (1, 6))
    assert torch.equal(back(ids).logits, model(ids).logits)
