"""Sequence classification (``--task classification``): one label per text or text pair.

Texts are tokenised once by the tokenizer's own template (segment ids for pairs) and truncated to
``max_length``; the loss is cross-entropy with optional balanced class weights and label
smoothing; predictions are logits [N, C]; metrics are :func:`lmforge.metrics.classification.classification_metrics`
(accuracy, macro-F1, per class, ROC / PR AUC, log loss; multi-label: the multi-label set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lmforge.data import ClassificationData
from lmforge.errors import ConfigError, EvaluationError
from lmforge.metrics.calibration import as_numpy, probs_from_logits
from lmforge.metrics.classification import classification_metrics, multilabel_metrics
from lmforge.models import TransformerModel
from lmforge.tasks.base import LabelNames, References, Scores, Task, TaskSettings, TaskSplit, register_task
from lmforge.tasks.sources import ClassifierLoss, TaskSource, balanced_class_weights, pad_id, to_tensors
from lmforge.tokenizers import Tokenizer

__all__ = ["ClassificationTask", "classification_scores", "encode_classification"]


def encode_classification(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int,
    text_pairs: Sequence[str | None] | None = None,
) -> list[dict[str, list[int]]]:
    """Token ids (and segment ids) of each text or text pair, truncated to ``max_length``."""
    backend = tokenizer.backend
    backend.enable_truncation(max_length=max_length)
    try:
        if text_pairs is not None and any(p is not None for p in text_pairs):
            pairs = [(t, p or "") for t, p in zip(texts, text_pairs)]
            encodings = backend.encode_batch(pairs)
        else:
            encodings = backend.encode_batch(list(texts))
    finally:
        backend.no_truncation()
    return [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]


def _class_indices(values: Any, label_names: Sequence[str] | None, what: str) -> np.ndarray:
    """Class names or integers -> int64 indices [N]."""
    items = list(values) if not hasattr(values, "detach") else as_numpy(values, np.int64).tolist()
    if items and isinstance(items[0], str):
        if label_names is None:
            raise EvaluationError(f"{what} are class names: pass label_names to map them to indices")
        index = {name: i for i, name in enumerate(label_names)}
        unknown = next((v for v in items if v not in index), None)
        if unknown is not None:
            raise EvaluationError(f"{what}: {unknown!r} is not one of the label names {list(label_names)}")
        return np.array([index[v] for v in items], dtype=np.int64)
    return as_numpy(items, np.int64)


def _multilabel_targets(references: Any, num_classes: int) -> np.ndarray:
    """[N, C] 0/1: an array / tensor is an indicator matrix; a list holds each example's label
    indices (as :class:`lmforge.data.ClassificationExample` labels do)."""
    if isinstance(references, np.ndarray) or hasattr(references, "detach"):
        return as_numpy(references)
    targets = np.zeros((len(references), num_classes), dtype=np.float64)
    for row, labels in enumerate(references):
        indices = [labels] if isinstance(labels, int) else list(labels)
        if any(not 0 <= int(i) < num_classes for i in indices):
            raise EvaluationError(f"reference {row}: label indices {indices} outside 0..{num_classes - 1}")
        targets[row, indices] = 1.0
    return targets


def classification_scores(
    predictions: Any,
    references: Any,
    label_names: Sequence[str] | None,
    logits: Any,
    multi_label: bool,
    threshold: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Metrics of class predictions or logits and the arrays an evaluation folder saves (logits,
    labels, probabilities, confusion matrix)."""
    if multi_label:
        if logits is None:
            raise EvaluationError("multi-label evaluation needs logits [N, C]")
        z = as_numpy(logits)
        targets = _multilabel_targets(references, z.shape[1])
        names = list(label_names) if label_names is not None else None
        return multilabel_metrics(targets, logits=z, threshold=threshold, label_names=names), {
            "logits": z,
            "labels": targets.astype(np.int64),
        }
    labels = _class_indices(references, label_names, "references")
    preds = _class_indices(predictions, label_names, "predictions") if predictions is not None else None
    names = list(label_names) if label_names is not None else None
    metrics = classification_metrics(labels, predictions=preds, logits=logits, label_names=names)
    arrays: dict[str, Any] = {"labels": labels, "confusion_matrix": np.asarray(metrics["confusion_matrix"])}
    if logits is not None:
        arrays["logits"] = as_numpy(logits)
        arrays["probs"] = probs_from_logits(arrays["logits"])
    return metrics, arrays


@torch.no_grad()
def predict_logits(
    model: TransformerModel, loss_module: nn.Module, source: TaskSource, batch_size: int
) -> tuple[np.ndarray, float]:
    """Logits [N, C] float32 of every example in order and the mean loss."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs, total = [], 0.0
    try:
        for indices in source.ordered_batches(batch_size):
            loss, logits = loss_module(to_tensors(source.collate(indices, np.random.default_rng(0)), device))
            total += float(loss) * len(indices)
            outputs.append(logits.cpu().numpy())
    finally:
        model.train(was_training)
    num_classes = model.config.num_labels
    result = np.concatenate(outputs) if outputs else np.zeros((0, num_classes))
    return result.astype(np.float32), total / max(source.num_examples, 1)


class ClassificationTask(Task):
    """One class per text (or text pair): a ``sequence_classification`` head."""

    name = "classification"
    head = "sequence_classification"
    data_kind = "classification"
    default_metric = "macro_f1"
    length_groups = True
    target_key = "labels"
    validation_metrics = (
        "loss", "accuracy", "log_loss", "macro_f1", "macro_precision", "macro_recall", "micro_f1",
        "micro_precision", "micro_recall", "weighted_f1", "weighted_precision", "weighted_recall", "roc_auc",
        "pr_auc",
    )  # fmt: skip

    def read(self, source: Any, split: str, config: Any) -> ClassificationData:
        data = super().read(source, split, config)
        if data.multi_label:
            raise ConfigError(
                f"{source}: multi-label fine-tuning is not supported yet (drop --label-separator)"
            )
        return data

    def label_names(self, data: ClassificationData) -> list[str]:
        return list(data.label_names)

    def cv_strata(self, data: ClassificationData) -> list[int]:
        return [int(label) for label in data.labels]

    def encode(
        self,
        data: ClassificationData,
        tokenizer: Tokenizer,
        settings: TaskSettings,
        seed: int,
        training: bool = False,
    ) -> TaskSplit:
        encoded = encode_classification(
            tokenizer, data.texts, settings.max_length, [e.text_pair for e in data.examples]
        )
        labels = [int(label) for label in data.labels]
        return TaskSplit(TaskSource(encoded, labels, pad_id(tokenizer), seed), labels)

    def class_weights(self, train: TaskSplit, num_labels: int) -> Tensor:
        return balanced_class_weights(train.references, num_labels)

    def loss(
        self, model: TransformerModel, settings: TaskSettings, train: TaskSplit, num_labels: int
    ) -> nn.Module:
        balanced = settings.class_weights == "balanced"
        weights = self.class_weights(train, num_labels) if balanced else None
        return ClassifierLoss(model, False, weights, settings.label_smoothing)

    def predict(self, model: TransformerModel, split: TaskSplit, batch_size: int = 64) -> tuple[Any, float]:
        assert isinstance(split.source, TaskSource)
        return predict_logits(model, ClassifierLoss(model), split.source, batch_size)

    def metrics(
        self, outputs: Any, references: References, label_names: LabelNames = None, *, validation: bool = False,
        logits: Any = None, multi_label: bool = False, threshold: float = 0.5, **options: Any,
    ) -> Scores:  # fmt: skip
        """``outputs``: class predictions (indices or names), or ``None`` with ``logits`` [N, C];
        model predictions (:meth:`predict`) are logits, recognised by their 2-D float shape."""
        if logits is None and outputs is not None and np.ndim(outputs) == 2:
            outputs, logits = None, outputs
        if outputs is None and logits is None:
            raise EvaluationError("classification: predictions or logits are required")
        return classification_scores(outputs, references, label_names, logits, multi_label, threshold)


register_task(ClassificationTask())
