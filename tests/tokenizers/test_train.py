"""Tests for tokenizer training (lmforge.tokenizers.train) and the GPT-2 BPE loader.

Trained on real text (World English Bible, People's Daily) of a few thousand lines each.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lmforge.assets import check_asset
from lmforge.cli import app
from lmforge.data import clean_text, iter_texts
from lmforge.errors import ConfigError
from lmforge.tokenizers import Tokenizer, TokenizerTrainConfig, load_gpt2_bpe, train_tokenizer


def _corpus(asset: str, lines: int) -> list[str]:
    status = check_asset(asset)
    if not status["ok"]:
        pytest.skip(f"asset {asset} missing: {status['install_command']}")
    return [clean_text(t) for t in itertools.islice(iter_texts([asset]), lines)]


@pytest.fixture(scope="module")
def english() -> list[str]:
    return _corpus("web-bible", 3000)


@pytest.fixture(scope="module")
def chinese() -> list[str]:
    return _corpus("peoples-daily", 2000)


def _train(texts: list[str], kind: str, family: str, size: int = 1200) -> Tokenizer:
    return train_tokenizer(texts, TokenizerTrainConfig(kind=kind, vocab_size=size, family=family))  # type: ignore[arg-type]


# family -> (kind, special token -> expected id (negative: counted from the end of the vocabulary))
EXPECTED_SPECIALS = {
    "gpt2": ("bpe", {"<|endoftext|>": 0}),
    "llama": ("bpe", {"<|begin_of_text|>": 0, "<|end_of_text|>": 1}),
    "roberta": ("bpe", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}),
    "bert": ("wordpiece", {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}),
    "albert": ("unigram", {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}),
    "t5": ("unigram", {"<pad>": 0, "</s>": 1, "<unk>": 2, "<extra_id_0>": -1, "<extra_id_99>": -100}),
}


@pytest.mark.parametrize("family", list(EXPECTED_SPECIALS))
def test_each_family_has_its_special_tokens_and_round_trips(
    family: str, english: list[str], tmp_path: Path
) -> None:
    kind, specials = EXPECTED_SPECIALS[family]
    tokenizer = _train(english, kind, family)
    size = tokenizer.vocab_size
    assert size <= 1200 and size > 1000  # the budget is used, not exceeded
    for token, expected in specials.items():
        assert tokenizer.backend.token_to_id(token) == (expected if expected >= 0 else size + expected), token

    text = english[7]
    ids = tokenizer.encode(text)
    if kind == "wordpiece":  # BERT decoding puts spaces around punctuation
        assert tokenizer.decode(ids).replace(" ", "") == text.replace(" ", "")
    else:
        assert tokenizer.decode(ids) == text
    pieces = tokenizer.encode(text, add_special_tokens=False)
    added = {
        "gpt2": ([], []),
        "llama": ([0], []),
        "roberta": ([0], [2]),
        "bert": ([2], [3]),
        "albert": ([2], [3]),
        "t5": ([], [1]),
    }[family]
    assert ids == added[0] + pieces + added[1]

    # Saved and loaded: the same ids, special tokens and input names.
    tokenizer.save(tmp_path)
    loaded = Tokenizer.from_dir(tmp_path)
    assert loaded.encode(text) == ids
    assert loaded.special_tokens == tokenizer.special_tokens
    assert ("token_type_ids" in loaded.model_input_names) == (family in ("bert", "albert"))
    # transformers reads the saved directory and encodes a pair (with special tokens in the text) alike.
    transformers = pytest.importorskip("transformers")
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    pair = ("God said, let there be [MASK] light", "and <extra_id_0> there was")
    expected = reference(*pair)
    encoding = loaded.backend.encode(*pair)
    assert encoding.ids == expected["input_ids"]
    if family in ("bert", "albert"):
        assert encoding.type_ids == expected["token_type_ids"]


def test_bert_pairs_get_token_type_ids_and_mask_stays_one_token(english: list[str]) -> None:
    tokenizer = _train(english, "wordpiece", "bert")
    encoding = tokenizer.backend.encode("In the beginning", "God created")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    first_sep = encoding.tokens.index("[SEP]")
    assert encoding.type_ids == [0] * (first_sep + 1) + [1] * (len(encoding.ids) - first_sep - 1)
    batch = tokenizer.batch_encode(["God said", "Let there be light and there was light"])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert batch["input_ids"][0, -1].item() == 0  # right-padded with [PAD]
    assert tokenizer.encode("the [MASK] of God", add_special_tokens=False).count(4) == 1


def test_wordpiece_splits_cjk_characters_and_keeps_the_budget(chinese: list[str]) -> None:
    tokenizer = _train(chinese, "wordpiece", "bert", size=2000)
    assert tokenizer.vocab_size <= 2000
    text = "中国政府发表新年讲话"
    tokens = tokenizer.backend.encode(text, add_special_tokens=False).tokens
    assert tokens == list(text)  # one token per character, no "##" continuation
    # A character outside the budget is [UNK], not an error.
    assert tokenizer.backend.encode("龘", add_special_tokens=False).tokens == ["[UNK]"]
    # Full-width punctuation is NFKC-folded as `lmforge data prepare` folds the corpus.
    assert tokenizer.encode("好，好！") == tokenizer.encode("好,好!")


def test_bpe_and_unigram_round_trip_chinese(chinese: list[str]) -> None:
    bpe = _train(chinese, "bpe", "gpt2", size=800)
    unigram = _train(chinese[:800], "unigram", "t5", size=1500)
    for text in chinese[:50]:
        assert bpe.decode(bpe.encode(text)) == text  # byte-level: lossless on any text
    assert unigram.encode(chinese[0])[-1] == unigram.eos_token_id
    # Rare characters are left out of the alphabet (as SentencePiece's character coverage does):
    # they become <unk>, every other sentence decodes to itself.
    encoded = [unigram.encode(text, add_special_tokens=False) for text in chinese[:300]]
    unknown = [ids.count(unigram.unk_token_id) for ids in encoded]
    assert sum(unknown) < 0.03 * sum(map(len, encoded))
    exact = [unigram.decode(ids) == text for ids, text, unk in zip(encoded, chinese, unknown) if unk == 0]
    assert len(exact) > 100 and all(exact)


def test_lowercase_and_bad_configs(english: list[str]) -> None:
    tokenizer = train_tokenizer(english[:500], TokenizerTrainConfig("wordpiece", 600, lowercase=True))
    assert tokenizer.encode("GOD") == tokenizer.encode("god")
    with pytest.raises(ConfigError, match="family='bert' does not use bpe"):
        TokenizerTrainConfig("bpe", 1000, family="bert")
    with pytest.raises(ConfigError, match="too small"):
        TokenizerTrainConfig("bpe", 100)
    with pytest.raises(ConfigError, match="no text"):
        train_tokenizer(["", "  "], TokenizerTrainConfig("bpe", 300))


def test_cli_trains_from_files_and_assets(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"line {i} of the tiny corpus, word{i % 17}" for i in range(400)), encoding="utf-8"
    )
    out = tmp_path / "tok"
    result = CliRunner().invoke(
        app,
        ["tokenizer", "train", "--kind", "unigram", "--family", "albert", "--vocab-size", "300"]
        + ["--input", str(corpus), "--out", str(out), "--lowercase"],
    )
    assert result.exit_code == 0, result.output
    tokenizer = Tokenizer.from_dir(out)
    assert tokenizer.backend.token_to_id("[MASK]") == 4
    assert tokenizer.encode("LINE 3") == tokenizer.encode("line 3")


# --------------------------------------------------------------------------- GPT-2 BPE parity
GPT2_TEXTS = [
    "Hello world",
    " Hello world",
    "In the beginning God created the heavens and the earth.",
    "don't won't it's I'm we'll they've",
    "  multiple   spaces\tand\ttabs\n\nnew lines\r\n",
    "Numbers: 3.14159, 1,000,000 and 2024-01-01.",
    "Ünïcödé àccents, 中文字符, 日本語のテキスト, 한국어, Русский текст",
    "emoji 😀🎉 and symbols ©®™ → ∑∫√",
    "def f(x):\n    return x ** 2  # code\n",
    "<|endoftext|>a second document<|endoftext|>",
    "",
    "a" * 300,
]


@pytest.fixture(scope="module")
def gpt2_dir() -> Path:
    status = check_asset("gpt2-bpe")
    if not status["ok"]:
        pytest.skip(f"GPT-2 BPE files missing; install with: {status['install_command']}")
    return Path(status["root"])


def test_gpt2_bpe_ids_match_transformers(gpt2_dir: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    ours = load_gpt2_bpe(gpt2_dir)
    shutil.copy(gpt2_dir / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(gpt2_dir / "vocab.bpe", tmp_path / "merges.txt")
    # transformers 5 reads the files through from_pretrained or vocab=/merges= paths; its
    # vocab_file=/merges_file= keywords are ignored there (they give an empty vocabulary).
    references = [
        transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path)),
        transformers.GPT2TokenizerFast(
            vocab=str(gpt2_dir / "encoder.json"), merges=str(gpt2_dir / "vocab.bpe")
        ),
    ]
    texts = GPT2_TEXTS + _corpus("web-bible", 200)[::10]
    assert ours.vocab_size == 50257 and ours.eos_token_id == 50256
    assert ours.encode("Hello world") == [15496, 995]
    for reference in references:
        assert len(reference) == 50257
        for text in texts:
            expected = reference(text)["input_ids"]
            assert ours.encode(text) == expected, text
            assert ours.decode(expected, skip_special_tokens=False) == text
