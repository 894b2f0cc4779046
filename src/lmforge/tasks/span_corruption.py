"""T5 span corruption (``objective.kind: span_corruption``): EOS-joined documents cut into raw
blocks, random spans of each replaced by sentinel tokens, the decoder predicting what they hid.

:func:`span_corrupt` corrupts a batch of blocks; :func:`span_corruption_lengths` sizes the raw
blocks so that corrupted inputs are exactly ``seq_len`` long; :class:`SpanCorruptionTask` is the
objective (a ``seq2seq_lm`` head, sentinels beyond the vocabulary when the tokenizer has none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from lmforge.config import Head
from lmforge.tasks.corpus import CorpusSource, ObjectiveConfig, SpecialIds, concat_documents, require_id
from lmforge.tasks.pretraining import LMTerms, PretrainingLoss, PretrainingTask, register_objective
from lmforge.tasks.sources import IGNORE_INDEX

__all__ = [
    "SpanCorruptionSource",
    "SpanCorruptionTask",
    "noise_mask",
    "span_corrupt",
    "span_corruption_lengths",
]


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


# -- the objective ---------------------------------------------------------------------------


class SpanCorruptionSource(CorpusSource):
    """T5: EOS-joined documents cut into raw blocks, each corrupted to ``seq_len`` encoder tokens."""

    def prepare(self) -> int:
        corpus, objective, specials = self.corpus, self.objective, self.specials
        self.eos = require_id(specials.eos, "EOS token")
        self.start = specials.pad if specials.pad is not None else 0
        self.raw_length, self.target_length = span_corruption_lengths(
            objective.seq_len, objective.noise_density, objective.mean_span_length
        )
        self.stream, _ = concat_documents(corpus, self.eos)
        return len(self.stream) // self.raw_length

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        blocks = self.stream[indices[:, None] * self.raw_length + np.arange(self.raw_length)]
        inputs, targets = span_corrupt(
            blocks, rng, self.specials.sentinels, self.eos, self.objective.noise_density,
            self.objective.mean_span_length,
        )  # fmt: skip
        decoder_inputs = np.concatenate((np.full((len(targets), 1), self.start), targets[:, :-1]), axis=1)
        return {"input_ids": inputs, "labels": targets, "decoder_input_ids": decoder_inputs}


class SpanCorruptionTask(PretrainingTask):
    """T5 span corruption: an encoder-decoder predicts the hidden spans after their sentinels."""

    kind = "span_corruption"
    source_class = SpanCorruptionSource

    def head(self, objective: ObjectiveConfig) -> Head:
        return "seq2seq_lm"

    def num_sentinels(self, objective: ObjectiveConfig) -> int:
        """Most noise spans one example can have."""
        raw, target = span_corruption_lengths(
            objective.seq_len, objective.noise_density, objective.mean_span_length
        )
        noise = int(round(raw * objective.noise_density))
        return target - noise - 1

    def model_fields(self, specials: SpecialIds) -> dict[str, Any]:
        return {"decoder_start_token_id": specials.pad if specials.pad is not None else 0}

    def terms(self, loss: PretrainingLoss, batch: dict[str, Tensor]) -> LMTerms:
        # Targets are short (~15% of the input): full logits cost little here.
        logits = loss.model(
            batch["input_ids"], batch.get("attention_mask"), decoder_input_ids=batch["decoder_input_ids"]
        ).logits  # (B, T_dec, V)
        logits, targets = logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1)
        lm_loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        lm_correct = ((logits.argmax(-1) == targets) & (targets != IGNORE_INDEX)).sum()
        return LMTerms(lm_loss, lm_correct, int((targets != IGNORE_INDEX).sum()))


register_objective(SpanCorruptionTask())
