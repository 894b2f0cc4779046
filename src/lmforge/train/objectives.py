"""Objectives: where examples come from (per step, deterministically) and how the loss is computed.

A :class:`CorpusSource` (an :class:`~lmforge.tasks.sources.ExampleSource`) turns one split of token data into numbered examples; the global batch
of optimizer step ``s`` is a pure function of ``(seed, s)`` (an epoch permutation plus a per-step
generator for masking), so resuming at step ``s`` or splitting the batch over processes sees
exactly the same examples and masks. :class:`PretrainingLoss` wraps a
:class:`~lmforge.models.TransformerModel` and returns the loss of one micro-batch, normalised by
counts over the whole global batch so that micro-batches and processes simply add up.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.errors import ConfigError
from lmforge.models import TransformerModel
from lmforge.tasks.sources import IGNORE_INDEX, ExampleSource
from lmforge.train.collators import (
    Corpus,
    SpecialIds,
    concat_documents,
    mask_tokens,
    pair_anchors,
    sentence_pairs,
    span_corrupt,
    span_corruption_lengths,
)
from lmforge.train.config import ObjectiveConfig
from lmforge.train.losses import linear_cross_entropy

#: Stats every micro-batch reports (summed over micro-batches and processes).
STAT_NAMES = ("lm_loss", "lm_count", "lm_correct", "sentence_loss", "sentence_count", "sentence_correct")


class CorpusSource(ExampleSource):
    """Numbered examples of one split of token data; subclasses define :meth:`collate`.

    Args:
        corpus: a :class:`lmforge.data.TokenDataset` split (or anything with its members).
        objective: the objective settings.
        specials: special-token ids.
        seed: seeds the epoch order and masking.
        word_table: (vocab,) bool, True for ids that begin a word; used for whole-word masking
            when the corpus has no word boundaries of its own.
    """

    def __init__(
        self,
        corpus: Corpus,
        objective: ObjectiveConfig,
        specials: SpecialIds,
        seed: int,
        word_table: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.corpus, self.objective, self.specials, self.seed = corpus, objective, specials, seed
        self.word_table = word_table


def _require(value: int | None, what: str) -> int:
    if value is None:
        raise ConfigError(f"the tokenizer of the data has no {what}; the objective needs one")
    return value


class CausalLMSource(CorpusSource):
    """GPT-2 style: documents joined with EOS, cut into ``seq_len`` blocks (no padding)."""

    def __init__(
        self, corpus: Corpus, objective: ObjectiveConfig, specials: SpecialIds, seed: int, **kw: Any
    ) -> None:
        super().__init__(corpus, objective, specials, seed, **kw)
        separator = specials.eos if specials.eos is not None else specials.sep
        self.stream, _ = concat_documents(corpus, _require(separator, "EOS token"))
        self.num_examples = len(self.stream) // objective.seq_len

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        length = self.objective.seq_len
        ids = self.stream[indices[:, None] * length + np.arange(length)]  # (B, T)
        return {"input_ids": ids, "labels": ids}


class MaskedLMSource(CorpusSource):
    """BERT / ALBERT sentence pairs (NSP / SOP) or RoBERTa packed blocks, with dynamic masking."""

    def __init__(
        self, corpus: Corpus, objective: ObjectiveConfig, specials: SpecialIds, seed: int, **kw: Any
    ) -> None:
        super().__init__(corpus, objective, specials, seed, **kw)
        _require(specials.mask, "mask token")
        self.pairs = objective.sentence_task != "none"
        self.corpus_words = (
            objective.whole_word_masking and corpus.num_documents > 0 and (corpus.word_starts(0) is not None)
        )
        if self.pairs:
            _require(specials.pad, "pad token")
            self.anchors = pair_anchors(corpus.source_ids)
            self.num_examples = len(self.anchors)
        else:
            self.cls = _require(specials.cls if specials.cls is not None else specials.bos, "CLS/BOS token")
            self.sep = _require(specials.sep if specials.sep is not None else specials.eos, "SEP/EOS token")
            self.stream, self.words = concat_documents(corpus, self.sep, with_words=self.corpus_words)
            self.num_examples = len(self.stream) // (objective.seq_len - 2)

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
        inputs, labels = mask_tokens(
            ids, rng, self.specials, objective.mask_probability, objective.mask_replace,
            objective.random_replace, starts if objective.whole_word_masking else None,
        )  # fmt: skip
        batch.update(input_ids=inputs, labels=labels)
        return batch


class SpanCorruptionSource(CorpusSource):
    """T5: EOS-joined documents cut into raw blocks, each corrupted to ``seq_len`` encoder tokens."""

    def __init__(
        self, corpus: Corpus, objective: ObjectiveConfig, specials: SpecialIds, seed: int, **kw: Any
    ) -> None:
        super().__init__(corpus, objective, specials, seed, **kw)
        self.eos = _require(specials.eos, "EOS token")
        self.start = specials.pad if specials.pad is not None else 0
        self.raw_length, self.target_length = span_corruption_lengths(
            objective.seq_len, objective.noise_density, objective.mean_span_length
        )
        self.stream, _ = concat_documents(corpus, self.eos)
        self.num_examples = len(self.stream) // self.raw_length

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        blocks = self.stream[indices[:, None] * self.raw_length + np.arange(self.raw_length)]
        inputs, targets = span_corrupt(
            blocks, rng, self.specials.sentinels, self.eos, self.objective.noise_density,
            self.objective.mean_span_length,
        )  # fmt: skip
        decoder_inputs = np.concatenate((np.full((len(targets), 1), self.start), targets[:, :-1]), axis=1)
        return {"input_ids": inputs, "labels": targets, "decoder_input_ids": decoder_inputs}


SOURCES: dict[str, type[CorpusSource]] = {
    "causal_lm": CausalLMSource,
    "masked_lm": MaskedLMSource,
    "span_corruption": SpanCorruptionSource,
}


def num_sentinels_needed(objective: ObjectiveConfig) -> int:
    """Most noise spans one span-corruption example can have."""
    raw, target = span_corruption_lengths(
        objective.seq_len, objective.noise_density, objective.mean_span_length
    )
    noise = int(round(raw * objective.noise_density))
    return target - noise - 1


def model_head(objective: ObjectiveConfig) -> str:
    """The :class:`ModelConfig` head an objective trains."""
    if objective.kind == "causal_lm":
        return "causal_lm"
    if objective.kind == "span_corruption":
        return "seq2seq_lm"
    return "pretraining" if objective.sentence_task != "none" else "masked_lm"


def normalisers(batch: dict[str, np.ndarray], kind: str) -> tuple[float, float]:
    """Global counts the losses are divided by: LM targets and sentence labels in the whole batch."""
    labels = batch["labels"]
    if kind == "causal_lm":  # every position but the last of a block predicts the next token
        lm = labels.shape[0] * (labels.shape[1] - 1)
    else:
        lm = int((labels != IGNORE_INDEX).sum())
    sentence = len(batch["sentence_labels"]) if "sentence_labels" in batch else 0
    return float(max(lm, 1)), float(max(sentence, 1))


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


class PretrainingLoss(nn.Module):
    """A model plus its objective's loss; distributed wrappers and ``torch.compile`` wrap this.

    ``forward(batch)`` returns ``(loss, stats)``: ``loss`` is this micro-batch's share of the
    global-batch loss (summed LM cross-entropy / ``lm_norm`` + summed sentence cross-entropy /
    ``sentence_norm``), ``stats`` a detached float64 vector of :data:`STAT_NAMES` sums.
    Masked LM projects only the selected positions to the vocabulary.
    """

    def __init__(self, model: TransformerModel, kind: str) -> None:
        super().__init__()
        self.model = model
        self.kind = kind

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        model = self.model
        input_ids, labels = batch["input_ids"], batch["labels"]
        sentence_loss = sentence_correct = None
        if self.kind == "causal_lm":
            hidden = model.encode(input_ids, batch.get("attention_mask"))
            lm_loss, lm_correct = self._lm_loss(hidden[:, :-1], labels[:, 1:])  # next-token targets
            count = labels[:, 1:].numel()
        elif self.kind == "span_corruption":
            # Targets are short (~15% of the input): full logits cost little here.
            logits = model(
                input_ids, batch.get("attention_mask"), decoder_input_ids=batch["decoder_input_ids"]
            ).logits  # (B, T_dec, V)
            logits, targets = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
            lm_loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
            lm_correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
            count = int((targets != IGNORE_INDEX).sum())
        else:
            hidden = model.encode(input_ids, batch.get("attention_mask"), batch.get("token_type_ids"))
            selected = labels != IGNORE_INDEX
            lm_loss, lm_correct = self._lm_loss(hidden[selected], labels[selected])  # masked positions only
            count = int(selected.sum())
            if "sentence_labels" in batch:
                pooled = hidden[:, 0]
                if model.pooler is not None:
                    pooled = model.pooler(pooled)
                assert model.classifier is not None, "sentence tasks need the pretraining head"
                sentence_logits = model.classifier(pooled).float()  # (B, 2)
                sentence_loss = F.cross_entropy(sentence_logits, batch["sentence_labels"], reduction="sum")
                sentence_correct = (sentence_logits.argmax(-1) == batch["sentence_labels"]).sum()
        loss = lm_loss / batch["lm_norm"]
        if sentence_loss is not None:
            loss = loss + sentence_loss / batch["sentence_norm"]
        with torch.no_grad():
            zero = lm_loss.detach().new_zeros(())
            values = [lm_loss.detach(), zero + count, lm_correct, zero, zero, zero]
            if sentence_loss is not None and sentence_correct is not None:
                values[3:] = [
                    sentence_loss.detach(),
                    zero + batch["sentence_labels"].numel(),
                    sentence_correct,
                ]
            stats = torch.stack([value.double() for value in values])
        return loss, stats

    def _lm_loss(self, hidden: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Summed cross-entropy of the LM head on ``hidden`` (..., H) against ``targets`` (...)."""
        head = self.model.lm_head
        assert head is not None, "pretraining needs an LM head"
        features = head.features(hidden)
        features = features.reshape(-1, features.shape[-1])
        return linear_cross_entropy(
            features,
            head.decoder.weight,
            head.decoder.bias,
            targets.reshape(-1),
            with_accuracy=not self.training,
        )
