"""Calibration metrics: ECE, MCE, classwise ECE, adaptive calibration error, Brier, NLL, accuracy, AUROC.

Every function takes probabilities ``probs`` [N, C] (rows sum to 1; a 1-D array is read as the
positive-class probability of a binary problem) and integer labels [N], as numpy arrays or torch
tensors on any device. Use :func:`probs_from_logits` to turn logits into probabilities first.

Conventions (Guo et al. 2017, "On Calibration of Modern Neural Networks"):

* the *confidence* of a prediction is its top-label probability ``max_k p_k`` and it is *correct*
  when ``argmax_k p_k == label``;
* a bin covers ``(lower, upper]`` (the first bin also holds confidence 0); ``"uniform"`` bins have
  equal width on [0, 1], ``"quantile"`` bins hold equal numbers of samples (edges are quantiles of
  the confidences, as ``sklearn.calibration.calibration_curve(strategy="quantile")``);
* ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| (L1), MCE = max_b |acc(B_b) - conf(B_b)| over
  non-empty bins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from lmforge.errors import CalibrationError

_EPS = 1e-12
STRATEGIES = ("uniform", "quantile")


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A numpy copy of a numpy array, torch tensor (any device, with grad) or sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().to("cpu").numpy()
    return np.asarray(x, dtype=dtype)


def probs_from_logits(logits: Any) -> np.ndarray:
    """Softmax over the last axis, computed stably in float64. [N, C] -> [N, C]."""
    z = as_numpy(logits)
    if z.ndim != 2:
        raise CalibrationError(f"logits must have shape [N, C], got {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def check_inputs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to (probs [N, C] float64, labels [N] int64); 1-D probs become [1-p, p]."""
    p = as_numpy(probs)
    y = as_numpy(labels, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise CalibrationError(f"probs must have shape [N, C] or [N], got {p.shape}")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise CalibrationError(f"labels must have shape [N]={p.shape[0]}, got {y.shape}")
    if p.shape[0] == 0:
        raise CalibrationError("no samples: probs and labels are empty")
    if not np.all(np.isfinite(p)):
        raise CalibrationError("probs contain NaN or infinite values")
    if np.any(y != np.round(y)) or y.min() < 0 or y.max() >= p.shape[1]:
        raise CalibrationError(
            f"labels must be integers in [0, {p.shape[1] - 1}], got range [{y.min()}, {y.max()}]"
        )
    return p, y.astype(np.int64)


def _bin_ids(conf: np.ndarray, n_bins: int, strategy: str) -> tuple[np.ndarray, np.ndarray]:
    """Bin index of each confidence and the bin edges [n_bins + 1]."""
    if n_bins < 1:
        raise CalibrationError(f"n_bins must be >= 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1))
        edges[0], edges[-1] = min(edges[0], 0.0), max(edges[-1], 1.0)
    else:
        raise CalibrationError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    # side="left" on the inner edges puts a value equal to an edge in the lower bin: (lower, upper].
    ids = np.searchsorted(edges[1:-1], conf, side="left")
    return ids, edges


def _binned(
    conf: np.ndarray, correct: np.ndarray, n_bins: int, strategy: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, mean confidence, mean accuracy, edges); means are 0 where a bin is empty."""
    ids, edges = _bin_ids(conf, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins).astype(np.float64)
    safe = np.maximum(count, 1.0)
    mean_conf = np.bincount(ids, weights=conf, minlength=n_bins) / safe
    mean_acc = np.bincount(ids, weights=correct.astype(np.float64), minlength=n_bins) / safe
    return count, mean_conf, mean_acc, edges


def _top_label(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = check_inputs(probs, labels)
    return p.max(axis=1), (p.argmax(axis=1) == y)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label ECE (L1) in [0, 1].

    Args:
        probs: [N, C] probabilities (or [N] positive-class probabilities).
        labels: [N] integer labels.
        n_bins: number of bins.
        strategy: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass).
    """
    conf, correct = _top_label(probs, labels)
    count, mean_conf, mean_acc, _ = _binned(conf, correct, n_bins, strategy)
    return float(np.sum(count / conf.shape[0] * np.abs(mean_acc - mean_conf)))


def maximum_calibration_error(probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Top-label MCE: the largest |accuracy - confidence| over non-empty bins."""
    conf, correct = _top_label(probs, labels)
    count, mean_conf, mean_acc, _ = _binned(conf, correct, n_bins, strategy)
    gaps = np.abs(mean_acc - mean_conf)[count > 0]
    return float(gaps.max())


def reliability_bins(
    probs: Any, labels: Any, n_bins: int = 15, strategy: str = "uniform"
) -> list[dict[str, float]]:
    """Per-bin statistics for a reliability diagram; empty bins are omitted.

    Returns:
        One dict per non-empty bin, in increasing confidence: ``lower``, ``upper`` (bin edges),
        ``count`` (samples in the bin), ``confidence`` (mean top-label probability) and
        ``accuracy`` (fraction correct).
    """
    conf, correct = _top_label(probs, labels)
    count, mean_conf, mean_acc, edges = _binned(conf, correct, n_bins, strategy)
    return [
        {
            "lower": float(edges[b]),
            "upper": float(edges[b + 1]),
            "count": int(count[b]),
            "confidence": float(mean_conf[b]),
            "accuracy": float(mean_acc[b]),
        }
        for b in range(n_bins)
        if count[b] > 0
    ]


def classwise_ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Classwise ECE (Kull et al. 2019): mean over classes k of the equal-width binned L1 gap
    between p_k and the frequency of class k, weighted by bin size."""
    p, y = check_inputs(probs, labels)
    total = 0.0
    for k in range(p.shape[1]):
        count, mean_conf, mean_acc, _ = _binned(p[:, k], y == k, n_bins, "uniform")
        total += float(np.sum(count / p.shape[0] * np.abs(mean_acc - mean_conf)))
    return total / p.shape[1]


def adaptive_calibration_error(probs: Any, labels: Any, n_ranges: int = 15) -> float:
    """Adaptive calibration error (Nixon et al. 2019): for every class k, sort all predictions
    p_k, cut them into ``n_ranges`` ranges of equal size, and average |freq(k) - mean p_k| over
    all classes x ranges (unweighted)."""
    p, y = check_inputs(probs, labels)
    gaps = []
    for k in range(p.shape[1]):
        order = np.argsort(p[:, k], kind="stable")
        for chunk in np.array_split(order, n_ranges):
            if chunk.size:
                gaps.append(abs(float(np.mean(y[chunk] == k)) - float(np.mean(p[chunk, k]))))
    return float(np.mean(gaps))


def brier_score(probs: Any, labels: Any) -> float:
    """Multiclass Brier score: mean over samples of sum_k (p_k - onehot_k)^2, in [0, 2].

    For a binary problem this is twice ``sklearn.metrics.brier_score_loss`` on the positive class.
    """
    p, y = check_inputs(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean -log p[label] (natural log); probabilities are clipped at 1e-12 to stay finite."""
    p, y = check_inputs(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(p.shape[0]), y], _EPS, 1.0))))


def accuracy(probs: Any, labels: Any) -> float:
    """Fraction of samples whose argmax equals the label."""
    p, y = check_inputs(probs, labels)
    return float(np.mean(p.argmax(axis=1) == y))


def _binary_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; NaN when one class is absent."""
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    ranks = np.empty(score.shape[0], dtype=np.float64)
    # Tied scores share the average of the ranks they span.
    boundaries = np.flatnonzero(np.diff(sorted_score)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [score.shape[0]]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(probs: Any, labels: Any) -> float:
    """Area under the ROC curve: binary on p[:, 1]; multiclass one-vs-rest macro average (as
    ``sklearn.metrics.roc_auc_score(multi_class="ovr", average="macro")``). NaN when undefined
    (a single class present)."""
    p, y = check_inputs(probs, labels)
    if p.shape[1] == 2:
        return _binary_auc(p[:, 1], y == 1)
    aucs = [_binary_auc(p[:, k], y == k) for k in range(p.shape[1])]
    if any(np.isnan(a) for a in aucs):
        return float("nan")
    return float(np.mean(aucs))


def calibration_summary(probs: Any, labels: Any, n_bins: int = 15) -> dict[str, float]:
    """Every metric at once.

    Returns:
        ``ece`` (uniform bins), ``mce``, ``nll``, ``brier``, ``accuracy``, ``ece_quantile``
        (equal-mass bins), ``classwise_ece``, ``ace`` and ``auroc`` (omitted when undefined).
    """
    p, y = check_inputs(probs, labels)
    summary = {
        "ece": expected_calibration_error(p, y, n_bins, "uniform"),
        "mce": maximum_calibration_error(p, y, n_bins, "uniform"),
        "nll": negative_log_likelihood(p, y),
        "brier": brier_score(p, y),
        "accuracy": accuracy(p, y),
        "ece_quantile": expected_calibration_error(p, y, n_bins, "quantile"),
        "classwise_ece": classwise_ece(p, y, n_bins),
        "ace": adaptive_calibration_error(p, y, n_bins),
    }
    area = auroc(p, y)
    if not np.isnan(area):
        summary["auroc"] = area
    return summary


def bootstrap_ci(
    metric: Callable[[np.ndarray, np.ndarray], float],
    probs: Any,
    labels: Any,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(probs, labels)``.

    Resamples N samples with replacement ``n_resamples`` times from a seeded generator, so the
    interval is reproducible. Resamples where the metric is undefined (NaN) are dropped.
    """
    p, y = check_inputs(probs, labels)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_resamples):
        idx = rng.integers(0, p.shape[0], size=p.shape[0])
        values.append(metric(p[idx], y[idx]))
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(arr, [alpha, 1.0 - alpha])
    return float(low), float(high)


def ece_noise_floor(
    probs: Any,
    n_bins: int = 15,
    n_resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    strategy: str = "uniform",
    observed: float | None = None,
) -> dict[str, float]:
    """The ECE a perfectly calibrated model with these probabilities would show on this many samples.

    The binned ECE is biased upward on a finite sample: even labels drawn from the predicted
    probabilities themselves (a model calibrated by construction) give ECE > 0. Here each
    resample draws ``y_i ~ Categorical(probs_i)`` and measures ECE; a measured ECE inside the
    returned range is indistinguishable from perfect calibration at this sample size and
    confidence profile (sharper, more accurate models have a lower floor). This is the
    consistency resampling of Bröcker & Smith (2007), used for ECE by Vaicenavicius et al. (2019).

    Args:
        observed: the ECE measured with the real labels; adds its ``p_value``, the share of
            perfectly calibrated resamples whose ECE is at least as large (``(1 + k) / (1 + R)``).
            A small p-value means miscalibration the sample size can resolve.

    Returns:
        ``{"mean", "low", "high"}`` (+ ``"p_value"``): the mean ECE of the resamples and its
        central ``confidence`` interval.
    """
    p, _ = check_inputs(probs, np.zeros(len(as_numpy(probs)), dtype=np.int64))
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(p, axis=1)
    cumulative[:, -1] = np.inf  # rounding: every draw lands in some class
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        labels = (rng.random((p.shape[0], 1)) >= cumulative).sum(axis=1)
        values[r] = expected_calibration_error(p, labels, n_bins, strategy)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    floor = {"mean": float(values.mean()), "low": float(low), "high": float(high)}
    if observed is not None:
        floor["p_value"] = float((1 + np.count_nonzero(values >= observed)) / (1 + n_resamples))
    return floor


def bootstrap_summary(
    probs: Any, labels: Any, n_bins: int = 15, n_resamples: int = 200, confidence: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Bootstrap CIs of ece, mce, nll, brier and accuracy from one shared set of resamples."""
    metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "ece": lambda p, y: expected_calibration_error(p, y, n_bins),
        "mce": lambda p, y: maximum_calibration_error(p, y, n_bins),
        "nll": negative_log_likelihood,
        "brier": brier_score,
        "accuracy": accuracy,
    }
    # Same seed for every metric: each is computed on the same resamples, so the CIs are coherent.
    return {
        name: bootstrap_ci(fn, probs, labels, n_resamples, confidence, seed) for name, fn in metrics.items()
    }
