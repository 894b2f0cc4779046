"""Token corpora for the pretraining objectives: what they read, their special ids, packing.

A pretraining objective (:mod:`~lmforge.tasks.causal_pretraining`, :mod:`~lmforge.tasks.masked_lm`,
:mod:`~lmforge.tasks.span_corruption`) turns one split of token data (a :class:`Corpus`) into
numbered examples through a :class:`CorpusSource`. Every random choice draws from a
``numpy.random.Generator`` passed in, so a batch is a function of (seed, step) alone: that is what
makes resumed and distributed runs repeat a run exactly.

:func:`concat_documents` packs documents into one stream with a separator after each, read lazily
from the corpus (causal LM, RoBERTa-style MLM and T5 cut fixed-length blocks from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from lmforge.data.knowledge_masking import KnowledgeMasking
from lmforge.errors import ConfigError
from lmforge.tasks.sources import ExampleSource

__all__ = [
    "Corpus",
    "ObjectiveConfig",
    "CorpusSource",
    "PackedStream",
    "SpecialIds",
    "concat_documents",
    "require_id",
    "word_starts_from_vocab",
]


ObjectiveKind = Literal["causal_lm", "masked_lm", "span_corruption"]
SentenceTask = Literal["none", "nsp", "sop"]


@dataclass
class ObjectiveConfig:
    """What the model learns to predict.

    Attributes:
        kind: ``causal_lm`` (next token over packed blocks), ``masked_lm`` (BERT / RoBERTa /
            ALBERT), or ``span_corruption`` (T5).
        seq_len: tokens per example (encoder input length for span corruption).
        mask_probability: share of (non-special) tokens or words selected for MLM prediction.
        mask_replace: share of selected tokens replaced by the mask token ...
        random_replace: ... by a random token; the rest stay unchanged (80/10/10).
        whole_word_masking: select whole words (data word starts, else ``##`` / ``Ġ`` pieces).
        masking_units: ERNIE's knowledge masking instead: weights of the unit levels ``token``,
            ``phrase`` (segmented words) and ``entity`` (lexicon entities), one level drawn per
            example; units are masked whole (:mod:`lmforge.data.knowledge_masking`).
        entity_lexicon: where ``entity`` units come from: a lexicon file (one entity a line,
            optionally a tab and its type) or ``peoples-daily-ner``.
        sentence_task: ``nsp`` (BERT: real next vs random), ``sop`` (ALBERT: order swapped) or
            ``none`` (RoBERTa: full packed sequences, MLM only).
        noise_density: share of tokens corrupted by span corruption.
        mean_span_length: mean length of a corrupted span.
    """

    kind: ObjectiveKind = "causal_lm"
    seq_len: int = 128
    mask_probability: float = 0.15
    mask_replace: float = 0.8
    random_replace: float = 0.1
    whole_word_masking: bool = False
    masking_units: dict[str, float] | None = None
    entity_lexicon: str | None = None
    sentence_task: SentenceTask = "none"
    noise_density: float = 0.15
    mean_span_length: float = 3.0


class Corpus(Protocol):
    """What collators read: :class:`lmforge.data.TokenDataset` or any object with these members.

    A corpus may also have ``word_flags``, the (num_tokens,) word starts of all documents in one
    array (a memmap); packing then reads it instead of calling ``word_starts`` per document.
    """

    offsets: np.ndarray  # int64 (num_documents + 1,)
    tokens: np.ndarray  # (num_tokens,) all documents concatenated
    source_ids: np.ndarray  # (num_documents,) which input each document came from

    @property
    def num_documents(self) -> int: ...

    def word_starts(self, index: int) -> np.ndarray | None: ...


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the objectives need; ``None`` where the tokenizer has no such token.

    Attributes:
        vocab_size: ids the tokenizer produces (random replacements are drawn below it).
        sentinels: T5 span sentinels ``<extra_id_0>``, ``<extra_id_1>``, ... in that order.
    """

    vocab_size: int
    pad: int | None = None
    eos: int | None = None
    bos: int | None = None
    unk: int | None = None
    cls: int | None = None
    sep: int | None = None
    mask: int | None = None
    sentinels: tuple[int, ...] = ()
    others: tuple[int, ...] = field(default_factory=tuple)

    def all(self) -> np.ndarray:
        """Every special id (never masked, never drawn as a random replacement)."""
        ids = {
            self.pad,
            self.eos,
            self.bos,
            self.unk,
            self.cls,
            self.sep,
            self.mask,
            *self.sentinels,
            *self.others,
        }
        return np.array(sorted(i for i in ids if i is not None), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Packing


class PackedStream:
    """All documents of a corpus as one stream with a separator after each, read on demand.

    Indexing with an integer array gives an int64 array of the same shape, read from the corpus
    (a memmap stays on disk: only the pages of the positions asked for are touched), so a corpus
    larger than RAM can be packed. Memory is one int64 per document.

    Args:
        corpus: the documents.
        separator: id put after every document, or None for none.
        words: read whole-word flags (bool; separators count as word starts) instead of token ids.
    """

    def __init__(self, corpus: Corpus, separator: int | None, words: bool = False) -> None:
        self.corpus, self.separator, self.flags = corpus, separator, words
        self.offsets = np.asarray(corpus.offsets, dtype=np.int64)  # (D + 1,)
        # Stream position of each document's first token (and the end): one separator per earlier document.
        self.starts = self.offsets + (np.arange(len(self.offsets)) if separator is not None else 0)
        self.dtype = np.dtype(bool) if words else np.dtype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index: np.ndarray | int | slice) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        positions = np.asarray(index, dtype=np.int64)
        flat = positions.reshape(-1)
        if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
            raise IndexError(f"stream position out of range for a stream of {len(self)}")
        flat = np.where(flat < 0, flat + len(self), flat)
        doc = np.searchsorted(self.starts, flat, side="right") - 1  # (N,) document of each position
        within = flat - self.starts[doc]
        real = within < self.offsets[doc + 1] - self.offsets[doc]  # False at separators
        out = np.ones(flat.shape, self.dtype) if self.flags else np.empty(flat.shape, self.dtype)
        if not self.flags:
            if self.separator is not None:
                out[~real] = self.separator
            # Fancy indexing a memmap reads just these tokens.
            out[real] = self.corpus.tokens[self.offsets[doc[real]] + within[real]]
        else:
            self._read_words(out, doc[real], within[real], real)
        return out.reshape(positions.shape)

    def _read_words(self, out: np.ndarray, doc: np.ndarray, within: np.ndarray, real: np.ndarray) -> None:
        """Word flags from the corpus's flat ``word_flags`` (a memmap, as :class:`~lmforge.data.TokenDataset`
        has), else through its per-document ``word_starts``, one call per document."""
        flat = getattr(self.corpus, "word_flags", None)
        if flat is not None:
            out[real] = flat[self.offsets[doc] + within] != 0
            return
        values = np.empty(len(doc), dtype=bool)
        order = np.argsort(doc, kind="stable")
        docs, first = np.unique(doc[order], return_index=True)
        for d, group in zip(docs, np.split(order, first[1:])):
            starts = self.corpus.word_starts(int(d))
            assert starts is not None
            values[group] = np.asarray(starts, dtype=bool)[within[group]]
        out[real] = values

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """The whole stream in memory (small corpora and tests only)."""
        whole = self[np.arange(len(self))]
        return whole if dtype is None else whole.astype(dtype)


def concat_documents(
    corpus: Corpus, separator: int | None, with_words: bool = False
) -> tuple[PackedStream, PackedStream | None]:
    """All documents in one int64 stream, ``separator`` after each (when not None), read lazily.

    Returns:
        ``(stream, word_starts)``: ``stream`` (N,); ``word_starts`` (N,) bool with True where a
        whole word begins (separators count as words), or None when ``with_words`` is False or
        the corpus has no word boundaries. Both are :class:`PackedStream` views: index them with
        integer arrays; nothing of the corpus is copied.
    """
    words = None
    if with_words and corpus.num_documents and corpus.word_starts(0) is not None:
        words = PackedStream(corpus, separator, words=True)
    return PackedStream(corpus, separator), words


def word_starts_from_vocab(vocab: dict[str, int], vocab_size: int) -> np.ndarray:
    """Per token id, whether it begins a word, read off the vocabulary's piece markers.

    WordPiece marks continuations with ``##``; byte-level BPE marks word starts with ``Ġ``
    (a space) and SentencePiece with ``▁``. Used for whole-word masking when the data has no
    word segmentation (English); Chinese needs jieba word starts from ``lmforge data prepare``.
    """
    starts = np.ones(vocab_size, dtype=bool)
    pieces = [(token, i) for token, i in vocab.items() if i < vocab_size]
    if any(token.startswith("##") for token, _ in pieces):
        for token, i in pieces:
            starts[i] = not token.startswith("##")
    elif any(token.startswith(("Ġ", "▁")) for token, _ in pieces):
        for token, i in pieces:
            starts[i] = token.startswith(("Ġ", "▁")) or not token[:1].isalnum()
    return starts


# ---------------------------------------------------------------------------------------------
# Example sources


class CorpusSource(ExampleSource):
    """Numbered examples of one split of token data; each objective's subclass defines :meth:`collate`.

    Args:
        corpus: a :class:`lmforge.data.TokenDataset` split (or anything with its members).
        objective: the objective settings.
        specials: special-token ids.
        seed: seeds the epoch order and masking.
        word_table: (vocab,) bool, True for ids that begin a word; used for whole-word masking
            when the corpus has no word boundaries of its own.
        knowledge: ERNIE's unit masking (masked LM), replacing per-token / whole-word masking.
    """

    def __init__(
        self,
        corpus: Corpus,
        objective: ObjectiveConfig,
        specials: SpecialIds,
        seed: int,
        word_table: np.ndarray | None = None,
        knowledge: KnowledgeMasking | None = None,
    ) -> None:
        super().__init__()
        self.corpus, self.objective, self.specials, self.seed = corpus, objective, specials, seed
        self.word_table, self.knowledge = word_table, knowledge
        self.num_examples = self.prepare()

    def prepare(self) -> int:
        """Read what batches need from the corpus (a packed stream, pair anchors); returns the
        number of examples."""
        raise NotImplementedError


def require_id(value: int | None, what: str) -> int:
    """``value``, or a :class:`ConfigError` saying the data's tokenizer lacks ``what``."""
    if value is None:
        raise ConfigError(f"the tokenizer of the data has no {what}; the objective needs one")
    return value
