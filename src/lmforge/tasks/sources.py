"""Where a task's examples come from: numbered examples, batches that are a function of the step.

:class:`ExampleSource` is the rule every training objective shares, pretraining included: the
global batch of optimizer step ``s`` is a pure function of ``(seed, s)`` (an epoch permutation plus
a per-step generator for random choices such as masking), so a resumed run at step ``s`` or a
batch split over processes sees exactly the same examples. :class:`TaskSource` holds pre-tokenised
fine-tuning examples: texts are tokenised once (no padding) and each batch is padded to its own
longest sequence (sentiment reviews are short; padding every batch to ``max_length`` would cost
several times the compute).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.errors import ConfigError
from lmforge.tokenizers import Tokenizer

__all__ = [
    "IGNORE_INDEX",
    "ClassifierLoss",
    "ExampleSource",
    "TaskSource",
    "balanced_class_weights",
    "pad_id",
    "to_tensors",
]

IGNORE_INDEX = -100  # label of positions that do not count in the loss (torch's default)
_EVAL_STREAM = 1_000_003  # seeds validation masking apart from any training step


class ExampleSource:
    """Numbered examples of one split; subclasses define :meth:`collate`.

    Subclasses set :attr:`num_examples` and :attr:`seed` and call ``super().__init__()``.
    """

    num_examples: int
    seed: int

    def __init__(self) -> None:
        self._order_cache: tuple[int, np.ndarray] | None = None

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Arrays of the examples ``indices`` (each (B, ...)); random choices from ``rng``."""
        raise NotImplementedError

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def train_indices(self, step: int, batch_size: int) -> np.ndarray:
        """Example indices of the global batch of step ``step`` (0-based): a new permutation every epoch."""
        positions = np.arange(step * batch_size, (step + 1) * batch_size)
        epochs, within = np.divmod(positions, self.num_examples)
        return np.array([self._epoch_order(int(e))[i] for e, i in zip(epochs, within)], dtype=np.int64)

    def train_batch(self, step: int, batch_size: int) -> dict[str, np.ndarray]:
        """The global batch of optimizer step ``step`` (0-based): a new permutation every epoch."""
        indices = self.train_indices(step, batch_size)
        return self.collate(indices, np.random.default_rng([self.seed, step, 1]))

    def num_eval_batches(self, batch_size: int) -> int:
        """Batches that cover the split once (the last one may be short)."""
        return -(-self.num_examples // batch_size)

    def eval_batch(self, index: int, batch_size: int) -> dict[str, np.ndarray]:
        """Validation batch ``index``: examples in order, masks fixed across evaluations.

        The last batch is short rather than padded with examples from the start: a validation
        pass sees every example exactly once, so its mean is the split's mean.
        """
        start = index * batch_size
        if not 0 <= start < self.num_examples:
            raise IndexError(f"validation batch {index} is past the split's {self.num_examples} examples")
        indices = np.arange(start, min(start + batch_size, self.num_examples))
        return self.collate(indices, np.random.default_rng([self.seed, _EVAL_STREAM, index]))

    def ordered_batches(self, batch_size: int) -> list[np.ndarray]:
        """Index blocks covering every example once, in order (evaluation / prediction)."""
        return [
            np.arange(i, min(i + batch_size, self.num_examples))
            for i in range(0, self.num_examples, batch_size)
        ]

    def epoch_of(self, step: int, batch_size: int) -> float:
        return step * batch_size / self.num_examples


def pad_id(tokenizer: Tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad nor an EOS token; fine-tuning needs one to pad")
    return pad


class TaskSource(ExampleSource):
    """Numbered, pre-tokenised task examples; batches padded to their longest member.

    Args:
        encoded: per example ``input_ids`` (and optionally ``token_type_ids``, per-token
            ``labels``, ``word_index``), as from :func:`encode_classification` /
            :func:`encode_token_classification`.
        labels: per-example class indices [N] (sequence classification), else ``None``.
        pad_id: id used to pad ``input_ids``.
        seed: seeds the epoch order.
    """

    def __init__(
        self,
        encoded: list[dict[str, list[int]]],
        labels: Sequence[int] | None,
        pad_id: int,
        seed: int,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.encoded = encoded
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.pad_id = pad_id
        self.num_examples = len(encoded)
        self.with_types = bool(encoded) and "token_type_ids" in encoded[0]

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = [self.encoded[int(i)] for i in indices]
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        batch: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self.with_types:
            batch["token_type_ids"] = np.zeros((len(rows), width), dtype=np.int64)
        if "labels" in rows[0]:
            batch["token_labels"] = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for row, item in enumerate(rows):
            n = len(item["input_ids"])
            ids[row, :n], mask[row, :n] = item["input_ids"], 1
            if self.with_types:
                batch["token_type_ids"][row, :n] = item["token_type_ids"]
            if "token_labels" in batch:
                batch["token_labels"][row, :n] = item["labels"]
        if self.labels is not None:
            batch["labels"] = self.labels[indices]
        return batch


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    """A collated numpy batch as tensors on ``device``."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


class ClassifierLoss(nn.Module):
    """Cross-entropy of a classification head, with optional class weights and label smoothing.

    ``forward(batch)`` returns ``(loss, logits)``: the mean loss over the scored items and the
    logits: (B, C) against ``batch["labels"]`` (sequence classification), or with ``per_token``
    (B, T, C) against ``batch["token_labels"]`` (token classification; ``-100`` is not scored).
    """

    def __init__(
        self,
        model: nn.Module,
        per_token: bool = False,
        class_weights: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model, self.per_token = model, per_token
        self.label_smoothing = label_smoothing
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.model(batch["input_ids"], **model_inputs(self.model, batch)).logits
        assert logits is not None, "fine-tuning needs a classification head"
        logits = logits.float()
        if self.per_token:
            flat, targets = logits.reshape(-1, logits.shape[-1]), batch["token_labels"].reshape(-1)
        else:
            flat, targets = logits, batch["labels"]
        loss = F.cross_entropy(
            flat,
            targets,
            weight=self.class_weights,
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
        )
        return loss, logits


def model_inputs(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keyword inputs of an encoder forward: the attention mask, and segment ids when the
    model has a segment embedding."""
    inputs = {"attention_mask": batch["attention_mask"]}
    config: Any = getattr(model, "config", None)
    if "token_type_ids" in batch and config is not None and config.type_vocab_size:
        inputs["token_type_ids"] = batch["token_type_ids"]
    return inputs


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's ``"balanced"``); unseen classes get 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)
