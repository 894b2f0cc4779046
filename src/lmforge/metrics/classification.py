"""Classification metrics in numpy, equal to scikit-learn's (checked in the tests).

Conventions (those of ``sklearn.metrics`` with ``labels=range(C)`` and ``zero_division=0``):

* every class ``0..C-1`` counts in macro averages, also one absent from the data (its precision,
  recall and F1 are 0 when undefined);
* the confusion matrix has true classes as rows and predicted classes as columns;
* ROC-AUC is binary on the positive-class score, or one-vs-rest macro over classes
  (:func:`~lmforge.metrics.calibration.auroc`); PR-AUC is *average precision*
  ``sum_n (R_n - R_{n-1}) P_n`` (``sklearn.metrics.average_precision_score``), one-vs-rest macro
  for several classes;
* log loss is the mean natural-log negative likelihood, computed from logits by log-softmax (no
  clipping) or from probabilities.

Inputs are numpy arrays, torch tensors (any device) or sequences: ``labels`` [N] integers,
``predictions`` [N] integers, ``logits`` [N, C]; multi-label targets are [N, C] 0/1 indicators.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmforge.errors import EvaluationError
from lmforge.metrics.calibration import (
    _binary_auc,
    as_numpy,
    negative_log_likelihood,
    probs_from_logits,
)

__all__ = [
    "accuracy",
    "average_precision",
    "classification_metrics",
    "confusion_matrix",
    "log_loss",
    "multilabel_metrics",
    "pr_curve",
    "precision_recall_f1",
    "roc_auc",
    "roc_curve",
]


def _int_labels(values: Any, num_classes: int | None, name: str) -> np.ndarray:
    array = as_numpy(values, dtype=np.float64)
    if array.ndim != 1:
        raise EvaluationError(f"{name} must have shape [N], got {array.shape}")
    if array.size and (np.any(array != np.round(array)) or array.min() < 0):
        raise EvaluationError(f"{name} must be non-negative integers")
    if num_classes is not None and array.size and array.max() >= num_classes:
        raise EvaluationError(
            f"{name} has class {int(array.max())}, but there are only {num_classes} classes"
        )
    return array.astype(np.int64)


def _pair(labels: Any, predictions: Any, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    y = _int_labels(labels, num_classes, "labels")
    p = _int_labels(predictions, num_classes, "predictions")
    if y.shape != p.shape:
        raise EvaluationError(f"{len(y)} labels but {len(p)} predictions")
    if y.size == 0:
        raise EvaluationError("no examples: labels and predictions are empty")
    classes = num_classes if num_classes is not None else int(max(y.max(), p.max())) + 1
    return y, p, classes


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ratio, 0 where the denominator is 0 (sklearn's ``zero_division=0``)."""
    return np.divide(
        numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0
    )


def accuracy(labels: Any, predictions: Any) -> float:
    """Fraction of ``predictions`` [N] equal to ``labels`` [N]."""
    y, p, _ = _pair(labels, predictions, None)
    return float(np.mean(y == p))


def confusion_matrix(labels: Any, predictions: Any, num_classes: int | None = None) -> np.ndarray:
    """Counts [C, C]: row = true class, column = predicted class."""
    y, p, classes = _pair(labels, predictions, num_classes)
    return np.bincount(y * classes + p, minlength=classes * classes).reshape(classes, classes)


def _prf(
    tp: np.ndarray, predicted: np.ndarray, support: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    precision = _divide(tp, predicted)
    recall = _divide(tp, support)
    f1 = _divide(2 * tp, predicted + support)  # = 2PR/(P+R), and 0 where both are 0
    return precision, recall, f1


def precision_recall_f1(labels: Any, predictions: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Per-class, macro, micro and support-weighted precision, recall and F1.

    Returns:
        ``precision`` / ``recall`` / ``f1`` / ``support``: per-class arrays [C]; ``macro_*``,
        ``micro_*`` and ``weighted_*`` floats for precision, recall and f1.
    """
    matrix = confusion_matrix(labels, predictions, num_classes).astype(np.float64)
    tp, predicted, support = np.diag(matrix), matrix.sum(axis=0), matrix.sum(axis=1)
    precision, recall, f1 = _prf(tp, predicted, support)
    micro = _prf(tp.sum(keepdims=True), predicted.sum(keepdims=True), support.sum(keepdims=True))
    weights = support / support.sum()
    result: dict[str, Any] = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
    }
    for name, values, micro_value in zip(("precision", "recall", "f1"), (precision, recall, f1), micro):
        result[f"macro_{name}"] = float(values.mean())
        result[f"micro_{name}"] = float(micro_value[0])
        result[f"weighted_{name}"] = float((values * weights).sum())
    return result


def _ranked(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True / false positives counted at each distinct score, from the highest down."""
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], positive[order].astype(np.float64)
    last_of_tie = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tps = np.cumsum(hits)[last_of_tie]
    fps = (last_of_tie + 1) - tps
    return tps, fps, ranked[last_of_tie]


def _binary_inputs(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(scores)
    y = as_numpy(positive, dtype=np.float64)
    if s.ndim != 1 or s.shape != y.shape:
        raise EvaluationError(f"scores {s.shape} and positive {y.shape} must both have shape [N]")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise EvaluationError("positive must be 0/1 (or booleans)")
    return s, y.astype(bool)


def roc_curve(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr, thresholds)`` of one binary problem, starting at (0, 0) with an
    infinite threshold (``sklearn.metrics.roc_curve(..., drop_intermediate=False)``).

    Args:
        scores: [N] scores, higher meaning more positive.
        positive: [N] 0/1 true membership.
    """
    s, y = _binary_inputs(scores, positive)
    tps, fps, thresholds = _ranked(s, y)
    tpr = np.r_[0.0, tps] / max(tps[-1], 1.0)
    fpr = np.r_[0.0, fps] / max(fps[-1], 1.0)
    return fpr, tpr, np.r_[np.inf, thresholds]


def pr_curve(scores: Any, positive: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points ``(precision, recall, thresholds)`` as
    ``sklearn.metrics.precision_recall_curve`` gives them: recall decreasing, ending at (1, 0)."""
    s, y = _binary_inputs(scores, positive)
    tps, fps, thresholds = _ranked(s, y)
    precision = _divide(tps, tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones_like(tps)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def average_precision(scores: Any, positive: Any) -> float:
    """Average precision (PR-AUC) of one binary problem: ``sum_n (R_n - R_{n-1}) P_n``."""
    s, y = _binary_inputs(scores, positive)
    tps, fps, _ = _ranked(s, y)
    if tps[-1] == 0:
        return float("nan")  # no positive: recall is undefined
    precision, recall = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _scores(logits: Any = None, probs: Any = None) -> np.ndarray:
    if (logits is None) == (probs is None):
        raise EvaluationError("pass exactly one of logits and probs")
    p = probs_from_logits(logits) if logits is not None else as_numpy(probs)
    if p.ndim != 2:
        raise EvaluationError(f"scores must have shape [N, C], got {p.shape}")
    return p


def roc_auc(probs: Any, labels: Any) -> dict[str, Any]:
    """ROC-AUC: ``{"roc_auc", "per_class"}``; binary on ``probs[:, 1]``, else one-vs-rest macro.

    A class without positives or negatives has no AUC (NaN), and then neither has the macro value
    (as ``sklearn.metrics.roc_auc_score``, which raises there).
    """
    p = _scores(probs=probs)
    y = _int_labels(labels, p.shape[1], "labels")
    per_class = [_binary_auc(p[:, k], y == k) for k in range(p.shape[1])]
    value = per_class[1] if p.shape[1] == 2 else float(np.mean(per_class))
    return {"roc_auc": float(value), "per_class": per_class}


def log_loss(labels: Any, *, logits: Any = None, probs: Any = None) -> float:
    """Mean negative log-likelihood (nats) of the true classes, from ``logits`` [N, C] (exact,
    by log-softmax) or ``probs`` [N, C]."""
    if logits is not None:
        z = as_numpy(logits)
        y = _int_labels(labels, z.shape[1], "labels")
        top = z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
        return float(np.mean(log_norm - z[np.arange(len(y)), y]))
    return negative_log_likelihood(_scores(probs=probs), labels)


def classification_metrics(
    labels: Any,
    *,
    predictions: Any = None,
    logits: Any = None,
    probs: Any = None,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """Every single-label metric at once, JSON-ready.

    Args:
        labels: [N] true class indices.
        predictions: [N] predicted classes; default the argmax of ``logits`` / ``probs``.
        logits: [N, C] raw scores (enable ROC-AUC, PR-AUC and log loss).
        probs: [N, C] probabilities, instead of logits.
        label_names: C class names (default ``"0"``, ``"1"``, ...).

    Returns:
        ``accuracy``, ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``macro_precision``,
        ``macro_recall`` (and micro / weighted ones), ``per_class`` ({name: precision, recall, f1,
        support}), ``confusion_matrix`` (rows true), ``num_examples``; with scores also
        ``roc_auc``, ``pr_auc`` (average precision), ``log_loss`` and ``*_per_class`` values.
    """
    scores = _scores(logits, probs) if logits is not None or probs is not None else None
    num_classes = scores.shape[1] if scores is not None else len(label_names) if label_names else None
    if predictions is None:
        if scores is None:
            raise EvaluationError("pass predictions, logits or probs")
        predictions = scores.argmax(axis=1)
    y, pred, classes = _pair(labels, predictions, num_classes)
    names = list(label_names) if label_names is not None else [str(k) for k in range(classes)]
    if len(names) != classes:
        raise EvaluationError(f"{len(names)} label names for {classes} classes")
    scores_given = scores is not None
    if scores is not None and len(scores) != len(y):
        raise EvaluationError(f"{len(y)} labels but {len(scores)} rows of scores")
    prf = precision_recall_f1(y, pred, classes)
    result: dict[str, Any] = {"num_examples": int(len(y)), "accuracy": float(np.mean(y == pred))}
    for average in ("macro", "micro", "weighted"):
        for name in ("precision", "recall", "f1"):
            result[f"{average}_{name}"] = prf[f"{average}_{name}"]
    result["per_class"] = {
        name: {
            "precision": float(prf["precision"][k]),
            "recall": float(prf["recall"][k]),
            "f1": float(prf["f1"][k]),
            "support": int(prf["support"][k]),
        }
        for k, name in enumerate(names)
    }
    result["confusion_matrix"] = confusion_matrix(y, pred, classes).tolist()
    if scores_given and scores is not None:
        result["log_loss"] = log_loss(y, logits=logits) if logits is not None else log_loss(y, probs=scores)
        p = probs_from_logits(logits) if logits is not None else scores
        auc = roc_auc(p, y)
        ap = [average_precision(p[:, k], y == k) for k in range(classes)]
        result["roc_auc"] = auc["roc_auc"]
        result["pr_auc"] = ap[1] if classes == 2 else float(np.mean(ap))
        result["roc_auc_per_class"] = dict(zip(names, map(float, auc["per_class"])))
        result["pr_auc_per_class"] = dict(zip(names, map(float, ap)))
    return result


def multilabel_metrics(
    targets: Any,
    *,
    logits: Any = None,
    probs: Any = None,
    threshold: float = 0.5,
    label_names: list[str] | None = None,
) -> dict[str, Any]:
    """Multi-label metrics from independent per-label scores (sigmoid of ``logits``, or ``probs``).

    Args:
        targets: [N, C] 0/1 indicators.
        logits: [N, C] raw scores (a label is predicted where sigmoid(logit) >= ``threshold``).
        probs: [N, C] per-label probabilities, instead of logits.
        threshold: decision threshold on the probability.
        label_names: C names.

    Returns:
        ``accuracy`` = ``subset_accuracy`` (all labels right), ``hamming_loss``, ``micro_*`` / ``macro_*``
        precision, recall and F1 over labels, ``per_class``, ``roc_auc`` and ``pr_auc`` (macro over
        labels that have both positives and negatives; NaN when none has).
    """
    t = as_numpy(targets)
    if logits is not None:
        p = 0.5 * (1.0 + np.tanh(0.5 * as_numpy(logits)))  # the sigmoid, without overflow
    else:
        p = _scores(probs=probs)
    if t.ndim != 2 or t.shape != p.shape or not np.all(np.isin(t, (0.0, 1.0))):
        raise EvaluationError(f"targets must be 0/1 of the scores' shape {p.shape}, got {t.shape}")
    truth, predicted = t.astype(bool), p >= threshold
    names = list(label_names) if label_names is not None else [str(k) for k in range(t.shape[1])]
    tp = (truth & predicted).sum(axis=0).astype(np.float64)
    precision, recall, f1 = _prf(
        tp, predicted.sum(axis=0).astype(np.float64), truth.sum(axis=0).astype(np.float64)
    )
    micro = _prf(
        np.array([tp.sum()]),
        np.array([predicted.sum()], dtype=np.float64),
        np.array([truth.sum()], dtype=np.float64),
    )
    aucs = [_binary_auc(p[:, k], truth[:, k]) for k in range(t.shape[1])]
    aps = [
        average_precision(p[:, k], truth[:, k]) if truth[:, k].any() else float("nan")
        for k in range(t.shape[1])
    ]
    defined = [a for a in aucs if not np.isnan(a)]
    subset_accuracy = float(np.mean(np.all(truth == predicted, axis=1)))
    return {
        "num_examples": int(t.shape[0]),
        "accuracy": subset_accuracy,  # the key single-label reports have, so tables line up
        "subset_accuracy": subset_accuracy,
        "hamming_loss": float(np.mean(truth != predicted)),
        "micro_precision": float(micro[0][0]),
        "micro_recall": float(micro[1][0]),
        "micro_f1": float(micro[2][0]),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "per_class": {
            n: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(truth[:, k].sum()),
            }
            for k, n in enumerate(names)
        },
        "roc_auc": float(np.mean(defined)) if defined else float("nan"),
        "pr_auc": float(np.nanmean(aps)) if not all(np.isnan(aps)) else float("nan"),
    }
