"""Calibration metrics against hand-computed values, plain-loop references and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from lmforge.errors import CalibrationError
from lmforge.metrics.calibration import (
    accuracy,
    adaptive_calibration_error,
    auroc,
    bootstrap_ci,
    bootstrap_summary,
    brier_score,
    calibration_summary,
    classwise_ece,
    ece_noise_floor,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    probs_from_logits,
    reliability_bins,
)

# Five binary predictions; confidences .9 .8 .7 .6 .55, correct: yes no yes no yes.
HAND_PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.55, 0.45]])
HAND_LABELS = np.array([0, 1, 1, 0, 0])


def random_problem(
    n: int = 800, c: int = 4, scale: float = 3.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = probs_from_logits(rng.normal(size=(n, c)) * scale)
    labels = rng.integers(0, c, size=n)
    return probs, labels


def loop_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> float:
    """Guo et al.'s loop over equal-width bins (lower, upper]."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs((pred[in_bin] == labels[in_bin]).mean() - conf[in_bin].mean())
    return ece


def test_ece_and_mce_match_hand_computed_example() -> None:
    # 5 bins of width .2: (.8,1] holds .9 (gap .1); (.6,.8] holds .8 (edge -> lower bin) and .7
    # (acc .5, conf .75); (.4,.6] holds .6 and .55 (acc .5, conf .575).
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(
        0.2 * 0.1 + 0.4 * 0.25 + 0.4 * 0.075
    )
    assert maximum_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(0.25)
    bins = reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=5)
    assert [b["count"] for b in bins] == [2, 2, 1]
    assert bins[1] == pytest.approx(
        {"lower": 0.6, "upper": 0.8, "count": 2, "confidence": 0.75, "accuracy": 0.5}
    )
    # One bin: |accuracy - mean confidence| = |0.6 - 0.71|.
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=1) == pytest.approx(0.11)


def test_ece_matches_loop_reference_and_accepts_torch() -> None:
    probs, labels = random_problem()
    for n_bins in (1, 10, 15):
        assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
            loop_ece(probs, labels, n_bins)
        )
    as_torch = expected_calibration_error(torch.tensor(probs, dtype=torch.float32), torch.tensor(labels))
    assert as_torch == pytest.approx(expected_calibration_error(probs, labels), abs=1e-6)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_bins_match_sklearn_calibration_curve(strategy: str) -> None:
    probs, labels = random_problem(n=1000)
    conf, correct = probs.max(1), (probs.argmax(1) == labels).astype(int)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy=strategy)
    bins = reliability_bins(probs, labels, n_bins=10, strategy=strategy)
    np.testing.assert_allclose([b["accuracy"] for b in bins], prob_true, atol=1e-12)
    np.testing.assert_allclose([b["confidence"] for b in bins], prob_pred, atol=1e-12)
    if strategy == "quantile":
        assert {b["count"] for b in bins} == {100}
    ece = sum(b["count"] / 1000 * abs(b["accuracy"] - b["confidence"]) for b in bins)
    assert expected_calibration_error(probs, labels, 10, strategy) == pytest.approx(ece)


def test_classwise_and_adaptive_ece_match_loop_references() -> None:
    probs, labels = random_problem(n=300, c=3)
    # Classwise ECE bins every p_k (not only the top label) against the frequency of class k.
    edges = np.linspace(0, 1, 16)
    total = 0.0
    for k in range(3):
        for lo, hi in zip(edges[:-1], edges[1:]):
            in_bin = (probs[:, k] > lo) & (probs[:, k] <= hi) if lo > 0 else probs[:, k] <= hi
            if in_bin.any():
                total += in_bin.mean() * abs((labels[in_bin] == k).mean() - probs[in_bin, k].mean())
    assert classwise_ece(probs, labels, 15) == pytest.approx(total / 3)
    gaps = []
    for k in range(3):
        order = np.argsort(probs[:, k])
        for r in range(15):
            chunk = order[r * 20 : (r + 1) * 20]  # 300 / 15 = 20 per range
            gaps.append(abs((labels[chunk] == k).mean() - probs[chunk, k].mean()))
    assert adaptive_calibration_error(probs, labels, 15) == pytest.approx(np.mean(gaps))


def test_brier_nll_accuracy_auroc_match_sklearn() -> None:
    probs, labels = random_problem(n=500, c=3)
    assert negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs))
    onehot = np.eye(3)[labels]
    assert brier_score(probs, labels) == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))
    assert accuracy(probs, labels) == pytest.approx(np.mean(probs.argmax(1) == labels))
    assert auroc(probs, labels) == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    )
    # Binary: Brier is twice sklearn's positive-class Brier; ties in scores use average ranks.
    binary = np.round(probs[:, :2] / probs[:, :2].sum(1, keepdims=True), 1)
    y = (labels > 0).astype(int)
    assert brier_score(binary, y) == pytest.approx(2 * brier_score_loss(y, binary[:, 1]))
    assert auroc(binary, y) == pytest.approx(roc_auc_score(y, binary[:, 1]))
    assert auroc(binary[:, 1], y) == pytest.approx(roc_auc_score(y, binary[:, 1]))  # 1-D = P(class 1)


def test_summary_keys_and_undefined_auroc() -> None:
    probs, labels = random_problem(n=200, c=3)
    summary = calibration_summary(probs, labels)
    assert {"ece", "mce", "nll", "brier", "accuracy", "ece_quantile", "classwise_ece", "ace", "auroc"} <= set(
        summary
    )
    assert summary["ece"] == expected_calibration_error(probs, labels, 15)
    one_class = calibration_summary(probs, np.zeros(200, dtype=int))
    assert "auroc" not in one_class


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    probs, labels = random_problem(n=400, c=3)
    low, high = bootstrap_ci(accuracy, probs, labels, n_resamples=300, seed=1)
    assert low < accuracy(probs, labels) < high
    assert (low, high) == bootstrap_ci(accuracy, probs, labels, n_resamples=300, seed=1)
    assert (low, high) != bootstrap_ci(accuracy, probs, labels, n_resamples=300, seed=2)
    summary = bootstrap_summary(probs, labels, n_resamples=50)
    assert set(summary) == {"ece", "mce", "nll", "brier", "accuracy"}
    assert all(lo <= hi for lo, hi in summary.values())


def test_bad_inputs_raise_calibration_errors() -> None:
    probs, labels = random_problem(n=10, c=3)
    with pytest.raises(CalibrationError, match="labels must have shape"):
        expected_calibration_error(probs, labels[:5])
    with pytest.raises(CalibrationError, match="integers in"):
        expected_calibration_error(probs, labels + 3)
    with pytest.raises(CalibrationError, match="strategy"):
        expected_calibration_error(probs, labels, strategy="equal")


def test_ece_noise_floor_matches_the_binomial_closed_form() -> None:
    # Every prediction [0.3, 0.7]: one bin, ECE = |acc - 0.7| with acc ~ Binomial(N, 0.7) / N, whose
    # mean absolute deviation is close to sqrt(2 / pi) * sqrt(0.21 / N) (normal approximation).
    n = 1000
    probs = np.tile([0.3, 0.7], (n, 1))
    floor = ece_noise_floor(probs, n_resamples=2000, seed=1)
    expected = np.sqrt(2 / np.pi) * np.sqrt(0.21 / n)
    assert floor["mean"] == pytest.approx(expected, rel=0.08)
    assert floor["low"] < floor["mean"] < floor["high"]
    assert ece_noise_floor(probs, n_resamples=2000, seed=1) == floor  # seeded


def test_ece_noise_floor_shrinks_with_samples_and_contains_a_calibrated_model() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    small, large = ece_noise_floor(probs[:400]), ece_noise_floor(probs)
    assert small["mean"] > 2 * large["mean"]  # ~ 1 / sqrt(N): 10x the samples, ~3x less noise
    labels = (rng.random((4000, 1)) >= np.cumsum(probs, axis=1)).sum(1)  # calibrated by construction
    measured = expected_calibration_error(probs, labels)
    assert large["low"] <= measured <= large["high"]
    with pytest.raises(CalibrationError):
        ece_noise_floor(np.zeros((0, 2)))


def test_ece_noise_floor_p_value_separates_calibrated_from_overconfident_models() -> None:
    # p-values of calibrated models spread over (0, 1]; an overconfident model's ECE lies beyond
    # every resample, so its p-value is the smallest possible, 1 / (1 + R).
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2000, 2)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p_values = []
    for draw in range(20):
        labels = (np.random.default_rng(draw).random((2000, 1)) >= np.cumsum(probs, axis=1)).sum(1)
        observed = expected_calibration_error(probs, labels)
        p_values.append(ece_noise_floor(probs, n_resamples=100, observed=observed)["p_value"])
    assert 0.25 < np.mean(p_values) < 0.75  # ~ uniform: mean 0.5
    assert sum(p < 0.05 for p in p_values) <= 3
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)  # same labels, T = 1/3
    observed = expected_calibration_error(sharp, labels)
    assert ece_noise_floor(sharp, n_resamples=100, observed=observed)["p_value"] == pytest.approx(1 / 101)
    assert "p_value" not in ece_noise_floor(probs, n_resamples=10)
