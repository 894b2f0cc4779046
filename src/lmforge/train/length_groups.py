"""Less padding for the same update: a training batch as length-sorted micro-batches.

A batch padded to its longest member wastes most of its compute when lengths vary: on
``zh-sentiment`` with MiniLM's tokenizer a batch of 32 reviews averages 60 real tokens per row but
nearly always holds one cut at 128, so half of the 4,096 positions are padding. Sorting the batch's
examples by length and splitting them into a few micro-batches, each padded to its own longest,
keeps about 2,300 positions (4 groups). Gradients of the micro-batches are accumulated with each
loss weighted by its share of the batch's loss denominator, so the update is that of the whole
batch (per-example outputs do not depend on padding: attention masks it and nothing mixes rows),
up to float summation order and which dropout mask each example draws.

Used by :func:`lmforge.train.finetune.finetune_model` for classification and token
classification (``FinetuneConfig.length_groups``); other objectives train on whole batches.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from lmforge.tasks.sources import IGNORE_INDEX, TaskSource

__all__ = ["MIN_GROUP_ROWS", "length_grouped_batch"]

#: Rows per micro-batch at least: smaller matrix products lose more to overhead than padding costs.
MIN_GROUP_ROWS = 4
#: Split only when it saves at least this share of the padded positions.
_MIN_SAVING = 0.1


def _denominator(batch: dict[str, np.ndarray], target_key: str, class_weights: np.ndarray | None) -> float:
    """What the mean cross-entropy of ``batch`` divides by: scored items, or their summed class weights."""
    targets = batch[target_key]
    scored = targets[targets != IGNORE_INDEX]
    return float(class_weights[scored].sum()) if class_weights is not None else float(scored.size)


def length_grouped_batch(
    source: TaskSource,
    step: int,
    batch_size: int,
    groups: int,
    target_key: str,
    class_weights: Tensor | np.ndarray | None = None,
) -> list[tuple[dict[str, np.ndarray], float]]:
    """The batch of ``step`` as ``(micro_batch, loss_share)`` pairs whose weighted losses sum to its loss.

    Args:
        source: the training examples (the batch is ``source.train_indices(step, batch_size)``).
        step: optimizer step (0-based).
        batch_size: examples per step.
        groups: micro-batches at most; 1 returns the plain batch.
        target_key: the batch entry holding the loss targets (``labels`` per example,
            ``token_labels`` per token; :attr:`lmforge.tasks.Task.target_key`), whose scored
            count is the loss denominator.
        class_weights: cross-entropy class weights [C], if the loss uses them.

    Returns:
        ``[(batch, 1.0)]`` when splitting would not save enough padding, else up to ``groups``
        collated micro-batches (each (b_i, T_i), T_i its own longest) with shares summing to 1.
    """
    indices = source.train_indices(step, batch_size)
    rng = np.random.default_rng([source.seed, step, 1])
    groups = min(groups, len(indices) // MIN_GROUP_ROWS)
    if groups <= 1:
        return [(source.collate(indices, rng), 1.0)]
    lengths = np.array([len(source.encoded[int(i)]["input_ids"]) for i in indices])
    order = np.argsort(lengths, kind="stable")
    parts = [part for part in np.array_split(order, groups) if len(part)]
    padded = sum(int(lengths[part].max()) * len(part) for part in parts)
    if padded > (1 - _MIN_SAVING) * int(lengths.max()) * len(indices):
        return [(source.collate(indices, rng), 1.0)]
    weights = class_weights.detach().cpu().numpy() if isinstance(class_weights, Tensor) else class_weights
    batches = [source.collate(indices[np.sort(part)], rng) for part in parts]
    denominators = [_denominator(batch, target_key, weights) for batch in batches]
    total = sum(denominators)
    if total <= 0:  # nothing scored at all: keep the whole batch's behaviour
        return [(source.collate(indices, rng), 1.0)]
    return [(batch, d / total) for batch, d in zip(batches, denominators) if d > 0]
