"""What a quickstart does: the language path, its sizes, and the split files every stage reads.

Two paths share one pipeline. ``zh`` (the default) pretrains a tiny BERT with whole-word masking and
next-sentence prediction on People's Daily plus the training reviews, and classifies the bundled
``zh-sentiment`` reviews; ``en`` pretrains a tiny GPT-2 on the World English Bible and classifies
the 200 ``pang-lee-polarity`` sentences. ``fast`` shrinks every size to a one-to-two-minute smoke
run (what the tests run); the full run takes a few minutes on two CPU cores.

The classification splits are written once as CSV files (``text,label``) under ``OUT/data``, so
every stage (the baseline, both fine-tunes, evaluation, calibration, prompting, compression) reads
the same examples.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text

__all__ = ["LANGS", "Plan", "QuickstartConfig", "write_splits"]

Lang = Literal["zh", "en"]
LANGS: tuple[str, ...] = ("zh", "en")
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class QuickstartConfig:
    """One quickstart run.

    Attributes:
        out: run directory (``runs/quickstart``); stages that finished there are reused.
        lang: ``zh`` (tiny BERT, zh-sentiment) or ``en`` (tiny GPT-2, pang-lee-polarity).
        fast: the one-to-two-minute smoke version.
        seed: every random choice (splits are by text hash and do not depend on it).
        threads: torch CPU threads (``None``: torch's default, the host's cores).
    """

    out: Path
    lang: Lang = "zh"
    fast: bool = False
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.lang not in LANGS:
            raise ConfigError(f"--lang {self.lang!r}: choose one of {', '.join(LANGS)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be >= 1")

    def plan(self) -> Plan:
        return Plan.of(self.lang, self.fast)


@dataclass(frozen=True)
class Plan:
    """The sizes of one run (recorded in the report; a stage is reused only under the same plan)."""

    lang: Lang
    dataset: str
    corpus: tuple[str, ...]  # corpus assets read for pretraining, besides the training texts
    corpus_lines: int  # lines of ``corpus`` kept (the training texts come on top)
    tokenizer_kind: str
    tokenizer_family: str
    vocab_size: int
    word_segmentation: str
    preset: str
    objective: tuple[str, ...]  # recipe overrides of the objective section
    pretrain_steps: int
    train: int | None  # examples per split (None: all)
    validation: int | None
    test: int | None
    max_length: int  # tokens per example, the tiny model
    minilm_max_length: int
    finetune_epochs: float
    minilm_epochs: float
    prompt_examples: int
    prompt_chars: int  # texts (and demonstrations) cut to this many characters for the prompted LM
    shots: int
    labels: tuple[str, str]  # label words for the prompted LM, in class order
    template: str

    @classmethod
    def of(cls, lang: Lang, fast: bool) -> Plan:
        if lang == "zh":
            return cls(
                lang="zh", dataset="zh-sentiment", corpus=("peoples-daily",),
                corpus_lines=1_500 if fast else 20_000, tokenizer_kind="wordpiece",
                tokenizer_family="bert", vocab_size=1_500 if fast else 6_000, word_segmentation="jieba",
                preset="bert-tiny",
                objective=("objective.kind=masked_lm", "objective.mask_probability=0.15",
                           "objective.whole_word_masking=true", "objective.sentence_task=nsp"),
                pretrain_steps=20 if fast else 200,
                train=240 if fast else 1_500, validation=120 if fast else 500, test=120 if fast else 1_000,
                max_length=64 if fast else 128, minilm_max_length=48 if fast else 64,
                finetune_epochs=2.0 if fast else 3.0,
                minilm_epochs=1.0, prompt_examples=24 if fast else 200, prompt_chars=60, shots=4,
                labels=("negative", "positive"), template="Review: {text}\nSentiment: {label}",
            )  # fmt: skip
        return cls(
            lang="en", dataset="pang-lee-polarity", corpus=("web-bible",),
            corpus_lines=3_000 if fast else 30_000, tokenizer_kind="bpe", tokenizer_family="gpt2",
            vocab_size=1_000 if fast else 4_000, word_segmentation="none", preset="gpt2-tiny",
            objective=("objective.kind=causal_lm",), pretrain_steps=20 if fast else 200,
            train=None, validation=None, test=None, max_length=64, minilm_max_length=64, finetune_epochs=2.0 if fast else 8.0,
            minilm_epochs=2.0 if fast else 6.0, prompt_examples=24 if fast else 60, prompt_chars=160, shots=4,
            labels=("negative", "positive"), template="Review: {text}\nSentiment: {label}",
        )  # fmt: skip

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _single(label: int | tuple[int, ...]) -> int:
    assert isinstance(label, int), "the bundled sentiment sets are single-label"
    return label


def _source_splits(plan: Plan) -> dict[str, list[tuple[str, int]]]:
    """(text, label) rows of each split, before the plan's size limits."""
    if plan.dataset == "zh-sentiment":
        from lmforge.data.classification import zh_sentiment_splits

        return {
            name: [(e.text, _single(e.label)) for e in data.examples]
            for name, data in zh_sentiment_splits().items()
        }
    from lmforge.data.classification import load_pang_lee

    rows = [(e.text, _single(e.label)) for e in load_pang_lee().examples]
    rows.sort(key=lambda row: _hash(row[0]))  # by hash: 50% train, 20% validation, 30% test
    cut_train, cut_val = len(rows) // 2, len(rows) * 7 // 10
    return {"train": rows[:cut_train], "validation": rows[cut_train:cut_val], "test": rows[cut_val:]}


def write_splits(plan: Plan, out_dir: Path) -> dict[str, Any]:
    """Write ``train.csv``, ``validation.csv``, ``test.csv`` (``text,label`` with label names) and
    return their statistics. Each split keeps the first ``plan.<split>`` rows by text hash."""
    names = list(plan.labels)
    stats: dict[str, Any] = {"dataset": plan.dataset, "label_names": names, "splits": {}}
    for split, rows in _source_splits(plan).items():
        limit = getattr(plan, split)
        if limit is not None:
            rows = sorted(rows, key=lambda row: _hash(row[0]))[:limit]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows((text.replace("\n", " "), names[label]) for text, label in rows)
        atomic_write_text(out_dir / f"{split}.csv", buffer.getvalue())
        counts = [sum(1 for _, label in rows if label == k) for k in range(len(names))]
        lengths = sorted(len(text) for text, _ in rows)
        stats["splits"][split] = {
            "examples": len(rows),
            "label_counts": dict(zip(names, counts, strict=True)),
            "median_chars": lengths[len(lengths) // 2] if lengths else 0,
        }
    return stats
