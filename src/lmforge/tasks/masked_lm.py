"""Masked LM pretraining (``objective.kind: masked_lm``): BERT / ALBERT sentence pairs (NSP / SOP)
or RoBERTa packed blocks, with BERT's dynamic 80/10/10 masking of tokens or whole words, or ERNIE's
knowledge masking of whole units (:mod:`lmforge.data.knowledge_masking`).

* :func:`mask_tokens` selects tokens (or whole words) and replaces them by the mask token, a
  random token or themselves.
* :func:`sentence_pairs` builds ``[CLS] A [SEP] B [SEP]`` pairs for NSP (BERT) and SOP (ALBERT).
* :class:`MaskedLMSource` numbers the examples; :class:`MaskedLMTask` is the objective: its head
  (``masked_lm``, or ``pretraining`` with a sentence task), its loss over the selected positions
  only, and a validation control with word order destroyed (:func:`shuffled_context`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from lmforge.config import Head
from lmforge.models import TransformerModel
from lmforge.tasks.corpus import (
    Corpus,
    CorpusSource,
    ObjectiveConfig,
    SpecialIds,
    concat_documents,
    require_id,
)
from lmforge.tasks.pretraining import LMTerms, PretrainingLoss, PretrainingTask, register_objective
from lmforge.tasks.sources import IGNORE_INDEX

__all__ = [
    "MaskedLMSource",
    "MaskedLMTask",
    "PairBatch",
    "mask_tokens",
    "pair_anchors",
    "sentence_pairs",
    "shuffled_context",
    "word_ids",
]


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


# -- sentence pairs (NSP / SOP) ---------------------------------------------------------------


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


# -- the objective ---------------------------------------------------------------------------


class MaskedLMSource(CorpusSource):
    """BERT / ALBERT sentence pairs (NSP / SOP) or RoBERTa packed blocks, with dynamic masking."""

    def prepare(self) -> int:
        corpus, objective, specials = self.corpus, self.objective, self.specials
        require_id(specials.mask, "mask token")
        self.pairs = objective.sentence_task != "none"
        wants_words = objective.whole_word_masking or self.knowledge is not None
        self.corpus_words = wants_words and corpus.num_documents > 0 and (corpus.word_starts(0) is not None)
        if self.knowledge is not None and not self.corpus_words:
            self.knowledge.require_words()
        if self.pairs:
            require_id(specials.pad, "pad token")
            self.anchors = pair_anchors(corpus.source_ids)
            return len(self.anchors)
        self.cls = require_id(specials.cls if specials.cls is not None else specials.bos, "CLS/BOS token")
        self.sep = require_id(specials.sep if specials.sep is not None else specials.eos, "SEP/EOS token")
        self.stream, self.words = concat_documents(corpus, self.sep, with_words=self.corpus_words)
        return len(self.stream) // (objective.seq_len - 2)

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        objective = self.objective
        batch: dict[str, np.ndarray] = {}
        starts: np.ndarray | None = None
        if self.pairs:
            pairs = sentence_pairs(
                self.corpus, self.anchors[indices], rng, self.specials, objective.seq_len,
                objective.sentence_task, with_words=self.corpus_words,
            )  # fmt: skip
            ids, starts = pairs.input_ids, pairs.word_starts
            batch.update(
                token_type_ids=pairs.token_type_ids,
                attention_mask=pairs.attention_mask,
                sentence_labels=pairs.sentence_labels,
            )
        else:
            length = objective.seq_len - 2
            window = indices[:, None] * length + np.arange(length)  # (B, T - 2)
            column = np.ones((len(indices), 1), dtype=np.int64)
            ids = np.concatenate((column * self.cls, self.stream[window], column * self.sep), axis=1)
            if self.words is not None:
                flags = np.ones_like(column, dtype=bool)
                starts = np.concatenate((flags, self.words[window], flags), axis=1)
        if objective.whole_word_masking and starts is None and self.word_table is not None:
            starts = self.word_table[ids]
        if self.knowledge is not None:  # ERNIE: whole tokens / words / entities
            inputs, labels = self.knowledge(ids, starts, rng)
            batch.update(input_ids=inputs, labels=labels)
            return batch
        inputs, labels = mask_tokens(
            ids, rng, self.specials, objective.mask_probability, objective.mask_replace,
            objective.random_replace, starts if objective.whole_word_masking else None,
        )  # fmt: skip
        batch.update(input_ids=inputs, labels=labels)
        return batch


def shuffled_context(batch: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A masked-LM batch with word order destroyed: the control of the order diagnostic.

    In each row the tokens between the first and the last real position (``[CLS]`` ... ``[SEP]``
    stay) are permuted; labels and token types move with their tokens, so every masked token is
    still scored, only its neighbours change. A model that predicts masked tokens as well from
    the shuffled rows as from the real ones ignores word order (a bag of words), whatever its
    loss says. ``seed`` fixes the permutations.
    """
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in batch.items()}
    lengths = (
        batch["attention_mask"].sum(axis=1)
        if "attention_mask" in batch
        else np.full(len(batch["input_ids"]), batch["input_ids"].shape[1])
    )
    for row, length in enumerate(lengths):
        inner = np.arange(1, int(length) - 1)
        order = rng.permutation(inner)
        for key in ("input_ids", "labels", "token_type_ids"):
            if key in out:
                out[key][row, inner] = batch[key][row, order]
    return out


class MaskedLMTask(PretrainingTask):
    """Masked LM: only the selected positions are projected to the vocabulary; with NSP / SOP the
    pooled first token is classified too (the ``pretraining`` head)."""

    kind = "masked_lm"
    source_class = MaskedLMSource
    sentence_tasks = True
    unit_masking = True

    def head(self, objective: ObjectiveConfig) -> Head:
        return "pretraining" if objective.sentence_task != "none" else "masked_lm"

    def terms(self, loss: PretrainingLoss, batch: dict[str, Tensor]) -> LMTerms:
        model: TransformerModel = loss.model
        labels = batch["labels"]
        hidden = model.encode(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        selected = labels != IGNORE_INDEX
        lm_loss, lm_correct = loss.lm_loss(hidden[selected], labels[selected])  # masked positions only
        terms = LMTerms(lm_loss, lm_correct, int(selected.sum()))
        if "sentence_labels" in batch:
            pooled = hidden[:, 0]
            if model.pooler is not None:
                pooled = model.pooler(pooled)
            assert model.classifier is not None, "sentence tasks need the pretraining head"
            sentence_logits = model.classifier(pooled).float()  # (B, 2)
            terms.sentence_loss = F.cross_entropy(sentence_logits, batch["sentence_labels"], reduction="sum")
            terms.sentence_correct = (sentence_logits.argmax(-1) == batch["sentence_labels"]).sum()
        return terms

    def validation_controls(
        self, batch: dict[str, np.ndarray], index: int
    ) -> dict[str, dict[str, np.ndarray]]:
        # How much of the accuracy needs word order (~0: the model is a bag of words).
        return {"shuffled": shuffled_context(batch, index)}


register_objective(MaskedLMTask())
