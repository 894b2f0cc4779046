"""Collators: pure NumPy functions that turn token documents into training examples.

Every random choice draws from a ``numpy.random.Generator`` passed in, so a batch is a function
of (seed, step) alone: that is what makes resumed and distributed runs repeat a run exactly.

* :func:`concat_documents` packs documents into one stream with a separator after each, read
  lazily from the corpus (causal LM, RoBERTa-style MLM and T5 cut fixed-length blocks from it).
* :func:`mask_tokens` does BERT's dynamic 80/10/10 masking, per token or per whole word.
* :func:`sentence_pairs` builds ``[CLS] A [SEP] B [SEP]`` pairs for NSP (BERT) and SOP (ALBERT).
* :func:`span_corrupt` is T5's span corruption with sentinel tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from lmforge.tasks.sources import IGNORE_INDEX


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
# Masked LM


def word_ids(starts: np.ndarray) -> np.ndarray:
    """Number every word in a (B, T) batch uniquely from its word-start flags (row starts count)."""
    starts = starts.copy()
    starts[:, 0] = True
    return np.cumsum(starts.reshape(-1)).reshape(starts.shape) - 1  # (B, T)


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    specials: SpecialIds,
    probability: float = 0.15,
    mask_replace: float = 0.8,
    random_replace: float = 0.1,
    word_starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT's dynamic masking.

    Each non-special token (or, with ``word_starts``, each whole word) is selected with
    ``probability``; a selected token becomes the mask token with ``mask_replace``, a random
    non-special token with ``random_replace``, and stays itself otherwise.

    Args:
        input_ids: (B, T) token ids.
        word_starts: (B, T) bool, True where a word begins: whole words are selected together.

    Returns:
        ``(inputs, labels)``, both (B, T): labels hold the original id where selected and
        :data:`IGNORE_INDEX` elsewhere.
    """
    assert specials.mask is not None, "masked LM needs a mask token"
    special_ids = specials.all()
    special = np.isin(input_ids, special_ids)
    if word_starts is not None:
        words = word_ids(word_starts | special)  # a special token is never part of a word
        selected = rng.random(int(words[-1, -1]) + 1)[words] < probability
    else:
        selected = rng.random(input_ids.shape) < probability
    selected &= ~special
    labels = np.where(selected, input_ids, IGNORE_INDEX)
    action = rng.random(input_ids.shape)
    to_mask = selected & (action < mask_replace)
    to_random = selected & (action >= mask_replace) & (action < mask_replace + random_replace)
    pool = np.setdiff1d(np.arange(specials.vocab_size), special_ids)
    inputs = input_ids.copy()
    inputs[to_mask] = specials.mask
    inputs[to_random] = pool[rng.integers(0, len(pool), int(to_random.sum()))]
    return inputs, labels


# ---------------------------------------------------------------------------------------------
# Sentence pairs (NSP / SOP)


def pair_anchors(source_ids: np.ndarray) -> np.ndarray:
    """Documents followed by another document of the same source (a real next sentence exists)."""
    source_ids = np.asarray(source_ids)
    return np.flatnonzero(source_ids[:-1] == source_ids[1:]).astype(np.int64)


@dataclass
class PairBatch:
    """Encoded sentence pairs, each array (B, T) unless noted.

    Attributes:
        sentence_labels: (B,) 0 = B really follows A (NSP) / original order (SOP); 1 = random
            B (NSP) / swapped (SOP).
        segment_docs: (B, 3) documents of the pair before any SOP swap: A's first and last,
            and B's first (for checks: B really follows A when ``b_first == a_last + 1``).
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    word_starts: np.ndarray | None
    sentence_labels: np.ndarray
    segment_docs: np.ndarray


def _take_docs(corpus: Corpus, start: int, budget: int, min_docs: int = 1) -> list[int]:
    """Consecutive documents of one source from ``start`` until ``budget`` tokens are reached."""
    offsets, sources = corpus.offsets, corpus.source_ids
    docs, total = [start], int(offsets[start + 1] - offsets[start])
    i = start + 1
    while i < len(sources) and sources[i] == sources[start] and (total < budget or len(docs) < min_docs):
        docs.append(i)
        total += int(offsets[i + 1] - offsets[i])
        i += 1
    return docs


def _segment(corpus: Corpus, docs: list[int], with_words: bool) -> tuple[np.ndarray, np.ndarray | None]:
    tokens = np.concatenate(
        [np.asarray(corpus.tokens[corpus.offsets[d] : corpus.offsets[d + 1]]) for d in docs]
    )
    if not with_words:
        return tokens.astype(np.int64), None
    words = np.concatenate([np.asarray(corpus.word_starts(d), dtype=bool) for d in docs])
    return tokens.astype(np.int64), words


def sentence_pairs(
    corpus: Corpus,
    anchors: np.ndarray,
    rng: np.random.Generator,
    specials: SpecialIds,
    seq_len: int,
    pairing: str,
    with_words: bool = False,
) -> PairBatch:
    """``[CLS] A [SEP] B [SEP]`` examples starting at each anchor document.

    A is one or more consecutive documents from the anchor, B the documents right after it
    (same source), filling ``seq_len``. For ``pairing="nsp"`` half the B segments (label 1) are
    replaced by documents from a random position; for ``"sop"`` half the pairs are swapped.
    Too long pairs lose tokens at A's start and B's end, so the A|B boundary stays intact.
    """
    assert specials.cls is not None and specials.sep is not None and specials.pad is not None
    budget = seq_len - 3
    num = len(anchors)
    ids = np.full((num, seq_len), specials.pad, dtype=np.int64)
    types = np.zeros((num, seq_len), dtype=np.int64)
    mask = np.zeros((num, seq_len), dtype=np.int64)
    starts = np.ones((num, seq_len), dtype=bool) if with_words else None
    labels = (rng.random(num) < 0.5).astype(np.int64)
    docs = np.zeros((num, 3), dtype=np.int64)
    for row, anchor in enumerate(anchors):
        chunk = _take_docs(corpus, int(anchor), budget, min_docs=2)
        split = int(rng.integers(1, len(chunk))) if len(chunk) > 2 else 1
        a_docs, b_docs = chunk[:split], chunk[split:]
        if pairing == "nsp" and labels[row]:
            # A random document other than the true next one; its own followers fill B.
            start = int(rng.integers(0, corpus.num_documents - 1))
            start += int(start >= b_docs[0])
            a_len = int(corpus.offsets[a_docs[-1] + 1] - corpus.offsets[a_docs[0]])
            b_docs = _take_docs(corpus, start, max(budget - a_len, 1))
        a, a_words = _segment(corpus, a_docs, with_words)
        b, b_words = _segment(corpus, b_docs, with_words)
        docs[row] = (a_docs[0], a_docs[-1], b_docs[0])
        # BERT trims the longer segment first; A loses its start, B its end.
        keep_b = min(len(b), max(budget - len(a), budget // 2))
        keep_a = min(len(a), budget - keep_b)
        a, b = a[len(a) - keep_a :], b[:keep_b]
        if a_words is not None and b_words is not None:
            a_words, b_words = a_words[len(a_words) - keep_a :], b_words[:keep_b]
        if pairing == "sop" and labels[row]:
            a, b, a_words, b_words = b, a, b_words, a_words
        length = len(a) + len(b) + 3
        ids[row, :length] = np.concatenate(([specials.cls], a, [specials.sep], b, [specials.sep]))
        types[row, len(a) + 2 : length] = 1
        mask[row, :length] = 1
        if starts is not None and a_words is not None and b_words is not None:
            starts[row, 1 : 1 + len(a)] = a_words
            starts[row, len(a) + 2 : len(a) + 2 + len(b)] = b_words
    return PairBatch(ids, types, mask, starts, labels, docs)


# ---------------------------------------------------------------------------------------------
# T5 span corruption


def span_corruption_lengths(inputs_length: int, noise_density: float, mean_span: float) -> tuple[int, int]:
    """Raw tokens per example and target length so that corrupted inputs are ``inputs_length`` long.

    Inputs keep the non-noise tokens, one sentinel per span and EOS; targets hold one sentinel
    per span, the noise tokens and EOS (as in T5's ``random_spans_helper``).
    """

    def lengths(raw: int) -> tuple[int, int]:
        noise = int(round(raw * noise_density))
        spans = max(int(round(noise / mean_span)), 1)
        return raw - noise + spans + 1, noise + spans + 1

    raw = inputs_length
    while lengths(raw + 1)[0] <= inputs_length:
        raw += 1
    return raw, lengths(raw)[1]


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``num_items`` into ``num_segments`` non-empty parts at random; their lengths."""
    first_in_segment = np.zeros(num_items, dtype=bool)
    first_in_segment[1 + rng.permutation(num_items - 1)[: num_segments - 1]] = True
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def noise_mask(length: int, noise_density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """Bool (length,): which tokens are corrupted, in spans of mean length ``mean_span``.

    Non-noise and noise spans alternate, starting with non-noise, as in T5.
    """
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    keep_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    span_starts = np.zeros(length, dtype=np.int64)
    span_starts[np.cumsum(interleaved)[:-1]] = 1
    return np.cumsum(span_starts) % 2 == 1


def span_corrupt(
    blocks: np.ndarray,
    rng: np.random.Generator,
    sentinels: tuple[int, ...],
    eos: int,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """T5 span corruption of raw blocks (B, L) -> ``(inputs (B, L_in), targets (B, L_tgt))``.

    Each noise span becomes one sentinel in the inputs; the targets list each sentinel followed
    by the tokens it hid, then EOS. All rows have the same lengths for a given ``L``.
    """
    inputs, targets = [], []
    for block in blocks:
        noise = noise_mask(len(block), noise_density, mean_span, rng)
        span_start = noise & ~np.concatenate(([False], noise[:-1]))
        span_index = np.cumsum(span_start) - 1  # (L,) which span a noise token belongs to
        if int(span_start.sum()) > len(sentinels):
            raise ValueError(f"{int(span_start.sum())} spans need more than {len(sentinels)} sentinels")
        sentinel_ids = np.asarray(sentinels, dtype=np.int64)
        row_in = np.where(span_start, sentinel_ids[span_index.clip(0)], block)[~noise | span_start]
        # Targets: sentinel k before the tokens of span k, so inputs + targets rebuild the block.
        starts_at = np.flatnonzero(span_start[noise])
        row_tgt = np.insert(block[noise], starts_at, sentinel_ids[: len(starts_at)])
        inputs.append(np.concatenate((row_in, [eos])))
        targets.append(np.concatenate((row_tgt, [eos])))
    return np.stack(inputs), np.stack(targets)
