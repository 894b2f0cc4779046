"""Packing reads the corpus lazily (defect 6): same batches as the in-memory stream it replaces,
and pretraining on a token memmap larger than a memory budget stays under that budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pretrain_utils import SPECIALS, VOCAB, MemoryCorpus

from lmforge.data.dataset import FORMAT_NAME, FORMAT_VERSION, TokenDataset, split_files
from lmforge.tasks.causal_pretraining import CausalLMSource
from lmforge.tasks.corpus import Corpus, ObjectiveConfig, PackedStream, concat_documents
from lmforge.tasks.masked_lm import MaskedLMSource
from lmforge.tasks.span_corruption import SpanCorruptionSource

HERE = Path(__file__).resolve().parent


def eager_concat(corpus: Corpus, separator: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The in-memory packing that concat_documents did before it streamed (the reference)."""
    offsets = np.asarray(corpus.offsets, dtype=np.int64)
    tokens = np.asarray(corpus.tokens).astype(np.int64)
    num_docs = len(offsets) - 1
    positions = np.arange(len(tokens)) + np.repeat(np.arange(num_docs), np.diff(offsets))
    stream = np.full(len(tokens) + num_docs, separator, dtype=np.int64)
    stream[positions] = tokens
    words = np.ones(len(stream), dtype=bool)
    words[positions] = np.concatenate(
        [np.asarray(corpus.word_starts(i), dtype=bool) for i in range(num_docs)]
    )
    return stream, words


def test_packed_stream_reads_what_the_eager_stream_held() -> None:
    corpus = MemoryCorpus(50, seed=4)
    stream, words = concat_documents(corpus, SPECIALS.eos, with_words=True)
    reference, reference_words = eager_concat(corpus, SPECIALS.eos)
    assert isinstance(stream, PackedStream) and words is not None
    assert len(stream) == len(reference) and len(words) == len(reference_words)
    index = np.random.default_rng(0).integers(0, len(reference), (7, 33))  # (B, T), any order
    assert stream[index].dtype == np.int64 and np.array_equal(stream[index], reference[index])
    assert np.array_equal(words[index], reference_words[index])
    assert np.array_equal(stream[-3:], reference[-3:]) and stream[np.array([], dtype=np.int64)].shape == (0,)
    with pytest.raises(IndexError):
        stream[np.array([len(reference)])]
    plain, _ = concat_documents(corpus, None)
    assert np.array_equal(np.asarray(plain), corpus.tokens.astype(np.int64))


def test_word_flags_of_token_data_read_as_the_per_document_word_starts(tmp_path: Path) -> None:
    write_token_dir(tmp_path / "data", {"train": 30_000, "validation": 1_000})
    corpus = TokenDataset(tmp_path / "data", "train")
    assert corpus.word_flags is not None  # the flat memmap path, not one call per document
    stream, words = concat_documents(corpus, SPECIALS.sep, with_words=True)
    reference, reference_words = eager_concat(corpus, SPECIALS.sep)
    index = np.random.default_rng(1).integers(0, len(reference), (4, 500))
    assert words is not None and np.array_equal(words[index], reference_words[index])
    assert np.array_equal(stream[index], reference[index])


@pytest.mark.parametrize(
    "source_class, objective",
    [
        (CausalLMSource, ObjectiveConfig("causal_lm", seq_len=16)),
        (MaskedLMSource, ObjectiveConfig("masked_lm", seq_len=24, whole_word_masking=True)),
        (SpanCorruptionSource, ObjectiveConfig("span_corruption", seq_len=24)),
    ],
)
def test_sources_give_the_same_batches_as_before(source_class: type, objective: ObjectiveConfig) -> None:
    corpus = MemoryCorpus(200, seed=2)
    specials = SPECIALS if objective.kind != "span_corruption" else _with_sentinels()
    streamed = source_class(corpus, objective, specials, seed=7)
    before = source_class(corpus, objective, specials, seed=7)
    separator = {"causal_lm": SPECIALS.eos, "masked_lm": SPECIALS.sep, "span_corruption": SPECIALS.eos}
    before.stream, words = eager_concat(corpus, separator[objective.kind])
    if objective.kind == "masked_lm":
        assert streamed.words is not None
        before.words = words
    assert streamed.num_examples == before.num_examples
    for step in (0, 1, 5, 40):  # step 40 is in the second epoch
        a, b = streamed.train_batch(step, 8), before.train_batch(step, 8)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert a["input_ids"].dtype == b["input_ids"].dtype
    a, b = streamed.eval_batch(1, 8), before.eval_batch(1, 8)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _with_sentinels():  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(SPECIALS, sentinels=tuple(range(VOCAB - 1, VOCAB - 41, -1)))


def write_token_dir(directory: Path, splits: dict[str, int], seed: int = 0) -> None:
    """A prepared token directory (the layout of ``lmforge data prepare``) of random uint16 tokens
    with word starts, written in chunks so that this process never holds a split in memory."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    info = {}
    for split, num_tokens in splits.items():
        files = split_files(split)
        lengths = rng.integers(200, 2000, num_tokens // 200 + 1)
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        offsets = np.concatenate((offsets[offsets < num_tokens], [num_tokens])).astype(np.int64)
        with (
            open(directory / files["tokens"], "wb") as tokens,
            open(directory / files["words"], "wb") as words,
        ):
            for start in range(0, num_tokens, 8_000_000):
                n = min(8_000_000, num_tokens - start)
                rng.integers(8, VOCAB, n, dtype=np.uint16).tofile(tokens)
                (rng.random(n) < 0.5).astype(np.uint8).tofile(words)
        np.save(directory / files["offsets"], offsets)
        np.save(directory / files["sources"], np.zeros(len(offsets) - 1, dtype=np.int32))
        info[split] = {"num_documents": len(offsets) - 1, "num_tokens": num_tokens, "has_word_starts": True}
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vocab_size": VOCAB,
        "dtype": "uint16",
        "special_tokens": {},
        "tokenizer_dir": "tokenizer",
        "splits": info,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


# 150M uint16 tokens: 300 MB of tokens (+150 MB of word flags) on disk. Packing them in memory
# took 1.2 GB per int64 copy (the stream, the tokens and the positions: ~3.6 GB at the peak).
CORPUS_TOKENS = 150_000_000
RSS_BUDGET_MB = 150


@pytest.mark.slow
def test_pretraining_on_a_corpus_larger_than_the_memory_budget(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_token_dir(data, {"train": CORPUS_TOKENS, "validation": 20_000})
    assert (data / "train.tokens.bin").stat().st_size > 1.8 * RSS_BUDGET_MB * 2**20
    command = [sys.executable, str(HERE / "disk_pretrain.py"), str(data), str(tmp_path / "runs")]
    result = subprocess.run(
        [*command, "gpt2_clm", "roberta_mlm", "t5_span"], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["steps"] == {"gpt2_clm": 2, "roberta_mlm": 2, "t5_span": 2}
    growth = measured["peak_mb"] - measured["baseline_mb"]
    assert growth < RSS_BUDGET_MB, f"pretraining grew the resident set by {growth:.0f} MB"
