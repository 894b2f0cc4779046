"""Stand-in token data for pretraining tests: the members of lmforge.data.TokenDataset, in memory,
and a small prepared directory for tests that go through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lmforge.train import DataBundle, SpecialIds

# Special ids of the synthetic vocabulary; real tokens are 8..VOCAB-1.
PAD, UNK, CLS, SEP, MASK, BOS, EOS = 0, 1, 2, 3, 4, 5, 6
VOCAB = 96
SPECIAL_TOKENS = {
    "pad_token": PAD,
    "unk_token": UNK,
    "cls_token": CLS,
    "sep_token": SEP,
    "mask_token": MASK,
    "bos_token": BOS,
    "eos_token": EOS,
}
SPECIALS = SpecialIds(vocab_size=VOCAB, pad=PAD, unk=UNK, cls=CLS, sep=SEP, mask=MASK, bos=BOS, eos=EOS)


class MemoryCorpus:
    """Documents of a few sources with word boundaries; text follows a learnable pattern.

    Each document counts up modulo the vocabulary from a random start, so a model can learn to
    predict tokens from their neighbours (losses fall within a few steps).
    """

    def __init__(self, num_documents: int, seed: int, num_sources: int = 3, words: bool = True) -> None:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, 30, num_documents)
        docs = [(rng.integers(8, VOCAB) + np.arange(n)) % (VOCAB - 8) + 8 for n in lengths]
        self.offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
        self.tokens = np.concatenate(docs).astype(np.uint16)
        self.source_ids = np.sort(rng.integers(0, num_sources, num_documents)).astype(np.int32)
        self._words = (rng.random(len(self.tokens)) < 0.5) if words else None
        if self._words is not None:
            self._words[self.offsets[:-1]] = True

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def document(self, index: int) -> np.ndarray:
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def word_starts(self, index: int) -> np.ndarray | None:
        if self._words is None:
            return None
        return self._words[self.offsets[index] : self.offsets[index + 1]]


def memory_data(num_documents: int = 400, seed: int = 0, words: bool = True) -> DataBundle:
    return DataBundle(
        train=MemoryCorpus(num_documents, seed, words=words),
        validation=MemoryCorpus(max(num_documents // 10, 20), seed + 1, words=words),
        vocab_size=VOCAB,
        special_tokens=dict(SPECIAL_TOKENS),
    )


# Tiny shapes per objective: a few seconds for a handful of steps on CPU.
_SMALL = ["model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64", "model.num_layers=2"]
OBJECTIVES: dict[str, list[str]] = {
    "gpt2_clm": ["model.preset=gpt2-tiny", *_SMALL, "objective.kind=causal_lm", "objective.seq_len=16"],
    "llama_clm": ["model.preset=llama-tiny", *_SMALL, "objective.kind=causal_lm", "objective.seq_len=16"],
    "bert_nsp_wwm": [
        "model.preset=bert-tiny", *_SMALL, "objective.kind=masked_lm", "objective.sentence_task=nsp",
        "objective.whole_word_masking=true", "objective.seq_len=32",
    ],
    "albert_sop": [
        "model.preset=albert-tiny", *_SMALL, "model.embedding_size=16", "objective.kind=masked_lm",
        "objective.sentence_task=sop", "objective.seq_len=32",
    ],
    "roberta_mlm": ["model.preset=roberta-tiny", *_SMALL, "objective.kind=masked_lm", "objective.seq_len=24"],
    "t5_span": [
        "model.preset=t5-tiny", "model.hidden_size=32", "model.intermediate_size=64",
        "objective.kind=span_corruption", "objective.seq_len=24",
    ],
}  # fmt: skip
# One thread: tiny ops drown in OpenMP synchronisation on a shared 2-core machine (and one thread
# makes in-process and subprocess runs use the same kernels).
QUIET = [
    "progress=false",
    "tensorboard=false",
    "log_every=1",
    "data.batch_size=4",
    "optim.lr=3e-3",
    "threads=1",
]


def train_losses(run_dir: Path) -> list[float]:
    """Per-step training losses from a run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["kind"] == "train"]


# A 20-word English vocabulary: a 300-token BPE learns it in well under a second.
_WORDS = [
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are",
]  # fmt: skip


def prepare_english_data(root: Path) -> Path:
    """Train a tiny BPE on 600 random English lines and ``lmforge data prepare`` them into ``root/data``."""
    from lmforge.data import prepare
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(_WORDS, rng.integers(5, 20))) + "." for _ in range(600)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    tokenizer = train_tokenizer(lines, TokenizerTrainConfig(kind="bpe", vocab_size=300, family="gpt2"))
    prepare([str(root / "corpus.txt")], tokenizer, root / "data", validation_fraction=0.1, workers=1)
    return root / "data"
