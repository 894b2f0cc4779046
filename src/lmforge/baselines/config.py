"""What one ``lmforge baseline`` run is: the kinds of baseline and :class:`BaselineConfig`.

Apart from the runner so that each kind's module (:mod:`lmforge.baselines.seq2seq`, ...) can take
the config without importing the runner that dispatches to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmforge.baselines.text import TOKEN_MODES
from lmforge.errors import ConfigError
from lmforge.fileio import check_output_dir

__all__ = [
    "CLASSIFIER_KINDS",
    "KINDS",
    "LM_KINDS",
    "SEQ2SEQ_KINDS",
    "TAGGER_KINDS",
    "BaselineConfig",
    "Progress",
]

CLASSIFIER_KINDS = ("tfidf-lr", "tfidf-nb", "tfidf-svm", "word2vec-lr", "glove-lr", "textcnn", "bilstm")
LM_KINDS = ("ngram-kn", "ngram-wb")
TAGGER_KINDS = ("bilstm-tagger",)
SEQ2SEQ_KINDS = ("copy",)
KINDS = CLASSIFIER_KINDS + LM_KINDS + TAGGER_KINDS + SEQ2SEQ_KINDS

Progress = Callable[[str], None]


@dataclass
class BaselineConfig:
    """One baseline run; the CLI parses into it, every field has a sensible default but ``kind``,
    ``data`` and ``out``.

    Attributes:
        kind: one of :data:`KINDS`.
        data: training file or dataset asset (``zh-sentiment``, ``peoples-daily-ner``, a corpus for LMs).
        out: output folder.
        test: test file / asset split; ``None`` uses the asset's test split or a hash split of ``data``.
        text_column, label_column: column / field names of CSV / TSV / JSONL inputs.
        test_fraction: share of ``data`` tested on when there is no ``test``.
        on_error: ``raise`` or ``skip`` bad records.
        tokens: ``auto`` | ``char`` | ``word`` | ``jieba`` tokens for every kind but TF-IDF
            (``auto``: characters for mostly-CJK text, else words).
        analyzer, word_ngrams, char_ngrams, max_features, c, alpha: TF-IDF settings
            (:class:`~lmforge.baselines.linear.TfidfSettings`); ``c`` is also the LR strength of
            ``word2vec-lr`` / ``glove-lr``.
        order, discount, min_count: n-gram order, Kneser-Ney discount (``None``: modified KN),
            rarest kept token (n-gram, embedding and neural vocabularies; TF-IDF ``min_df``).
        embed_dim, window: embedding size, word2vec / GloVe context window.
        epochs, batch_size, lr, max_length, max_vocab: training of word2vec / GloVe / neural kinds
            (``epochs`` and ``lr`` default per kind).
        threads: torch intra-op threads during the run (``None``: torch's default). Small models
            on a busy machine run several times faster with 1.
        seed: every random choice.
    """

    kind: str
    data: str
    out: Path
    test: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    test_fraction: float = 0.1
    on_error: str = "raise"
    tokens: str = "auto"
    analyzer: str = "auto"
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (1, 3)
    max_features: int | None = None
    c: float = 1.0
    alpha: float = 0.1
    order: int = 3
    discount: float | None = None
    min_count: int = 1
    embed_dim: int = 100
    window: int = 5
    epochs: int | None = None
    batch_size: int = 64
    lr: float | None = None
    max_length: int = 256
    max_vocab: int | None = 50000
    threads: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field and what to use instead."""
        if self.kind not in KINDS:
            raise ConfigError(f"--kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.tokens not in TOKEN_MODES:
            raise ConfigError(f"--tokens {self.tokens!r}: choose one of {', '.join(TOKEN_MODES)}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"--on-error {self.on_error!r}: use raise or skip")
        for name in ("embed_dim", "window", "batch_size", "max_length", "order", "min_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads}: must be >= 1 (or unset for torch's default)")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs}: must be >= 1")
        if self.max_features is not None and self.max_features < 1:
            raise ConfigError(f"--max-features (max_features) = {self.max_features}: must be >= 1 (or unset)")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise ConfigError(f"max_vocab={self.max_vocab}: must be >= 1 (or unset)")
        for name in ("c", "alpha"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name} ({name}) = {getattr(self, name)}: must be > 0")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"--lr (lr) = {self.lr}: must be > 0 (or unset for the kind's default)")
        if self.discount is not None and not 0 < self.discount < 1:
            raise ConfigError(f"--discount (discount) = {self.discount}: must be in (0, 1)")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction (test_fraction) = {self.test_fraction}: must be in (0, 1)")
        for name in ("word_ngrams", "char_ngrams"):
            low, high = getattr(self, name)
            if not 1 <= low <= high:
                raise ConfigError(f"--{name.replace('_', '-')} {low},{high}: need 1 <= low <= high")
        check_output_dir(self.out)

    @property
    def task(self) -> str:
        if self.kind in LM_KINDS:
            return "lm"
        if self.kind in SEQ2SEQ_KINDS:
            return "seq2seq"
        return "token-classification" if self.kind in TAGGER_KINDS else "classification"
