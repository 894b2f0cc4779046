"""Post-hoc calibrators: known-temperature recovery, parity with scikit-learn, sanity, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import betaln
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from lmforge.calibrate import (
    CALIBRATORS,
    BBQCalibrator,
    MatrixScaling,
    PlattScaling,
    TemperatureScaling,
    calibrator_from_state_dict,
    cross_val_calibrate,
    get_calibrator,
)
from lmforge.calibrate.base import softmax
from lmforge.calibrate.registry import stratified_folds
from lmforge.errors import CalibrationError
from lmforge.metrics.calibration import expected_calibration_error, negative_log_likelihood


def overconfident(n: int, c: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z); the classifier reports z * temperature (over-confident if > 1)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 1.5
    cdf = np.cumsum(softmax(z), axis=1)
    labels = np.minimum((rng.random((n, 1)) > cdf).sum(1), c - 1)
    return z * temperature, labels


class _Scores(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose outputs are fixed columns of X, so sklearn calibrates the same scores."""

    def __init__(self, kind: str = "proba") -> None:
        self.kind = kind

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Scores:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return x

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[x.argmax(1)]

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        return x[:, 1] if x.shape[1] == 2 else x

    def __getattribute__(self, name: str):  # hide decision_function when calibrating probabilities
        if name == "decision_function" and object.__getattribute__(self, "kind") == "proba":
            raise AttributeError(name)
        return object.__getattribute__(self, name)


def sklearn_calibrated(
    method: str, fit_x: np.ndarray, y: np.ndarray, test_x: np.ndarray, kind: str
) -> np.ndarray:
    base = _Scores(kind).fit(fit_x, y)
    return CalibratedClassifierCV(FrozenEstimator(base), method=method).fit(fit_x, y).predict_proba(test_x)


def test_temperature_scaling_recovers_known_temperature() -> None:
    logits, labels = overconfident(20000, 5, temperature=2.5)
    calibrator = TemperatureScaling().fit(logits, labels)
    assert calibrator.temperature == pytest.approx(2.5, rel=0.05)
    # Under-confident logits give T < 1, and T stays positive even when the logits are inverted.
    assert TemperatureScaling().fit(logits / 5, labels).temperature == pytest.approx(0.5, rel=0.05)
    assert TemperatureScaling().fit(-logits, labels).temperature > 0
    # Temperature never changes the argmax; torch input gives the same fit.
    probs = calibrator.predict_proba(logits)
    assert np.array_equal(probs.argmax(1), logits.argmax(1))
    same = TemperatureScaling().fit(torch.tensor(logits), torch.tensor(labels))
    assert same.temperature == pytest.approx(calibrator.temperature, rel=1e-6)


def test_scaling_methods_reduce_ece_and_nll() -> None:
    fit_z, fit_y = overconfident(4000, 4, 3.0, seed=1)
    test_z, test_y = overconfident(4000, 4, 3.0, seed=2)
    before_ece = expected_calibration_error(softmax(test_z), test_y)
    before_nll = negative_log_likelihood(softmax(test_z), test_y)
    for method in ("temperature", "vector", "matrix"):
        probs = get_calibrator(method).fit(fit_z, fit_y).predict_proba(test_z)
        assert expected_calibration_error(probs, test_y) < before_ece / 3, method
        assert negative_log_likelihood(probs, test_y) < before_nll, method


def test_matrix_scaling_odir_shrinks_off_diagonal() -> None:
    z, y = overconfident(1000, 4, 2.0, seed=3)
    free = MatrixScaling(off_diagonal=0.0, intercept=0.0).fit(z, y).state_dict()["arrays"]
    tied = MatrixScaling(off_diagonal=1e4, intercept=1e4).fit(z, y).state_dict()["arrays"]
    off = ~np.eye(4, dtype=bool)
    assert np.abs(free["weight"][off]).max() > 10 * np.abs(tied["weight"][off]).max()
    assert np.abs(tied["bias"]).max() < 1e-2
    with pytest.raises(CalibrationError, match=">= 0"):
        MatrixScaling(off_diagonal=-1.0)


def test_platt_unsmoothed_matches_logistic_regression() -> None:
    z, y = overconfident(3000, 2, 2.0, seed=4)
    score = (z[:, 1] - z[:, 0])[:, None]
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(score[:1500], y[:1500])
    ours = PlattScaling(smoothing=False).fit(z[:1500], y[:1500])
    np.testing.assert_allclose(ours.predict_proba(z[1500:]), reference.predict_proba(score[1500:]), atol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_platt_smoothed_matches_sklearn_sigmoid_calibration(num_classes: int) -> None:
    z, y = overconfident(2000, num_classes, 2.0, seed=5)
    calibrator = PlattScaling().fit(z[:1000], y[:1000])
    scores = calibrator._scores(z)  # one-vs-rest log-odds: the decision function sklearn calibrates
    expected = sklearn_calibrated("sigmoid", scores[:1000], y[:1000], scores[1000:], kind="decision")
    np.testing.assert_allclose(calibrator.predict_proba(z[1000:]), expected, atol=1e-5)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_isotonic_matches_sklearn(num_classes: int) -> None:
    z, y = overconfident(2000, num_classes, 2.0, seed=6)
    calibrator = get_calibrator("isotonic").fit(z[:1000], y[:1000])
    probs = softmax(z)
    expected = sklearn_calibrated("isotonic", probs[:1000], y[:1000], probs[1000:], kind="proba")
    np.testing.assert_allclose(calibrator.predict_proba(z[1000:]), expected, atol=1e-10)
    if num_classes == 2:
        iso = IsotonicRegression(out_of_bounds="clip").fit(probs[:1000, 1], y[:1000])
        np.testing.assert_allclose(
            calibrator.predict_proba(z[1000:])[:, 1], iso.predict(probs[1000:, 1]), atol=1e-12
        )


@pytest.mark.parametrize("method", ["histogram", "bbq", "isotonic", "platt"])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_nonparametric_methods_reduce_ece_and_sum_to_one(method: str, num_classes: int) -> None:
    fit_z, fit_y = overconfident(3000, num_classes, 3.0, seed=7)
    test_z, test_y = overconfident(3000, num_classes, 3.0, seed=8)
    probs = get_calibrator(method).fit(fit_z, fit_y).predict_proba(test_z)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert probs.min() >= 0
    assert expected_calibration_error(probs, test_y) < expected_calibration_error(softmax(test_z), test_y) / 2


def test_histogram_binning_values_are_bin_frequencies() -> None:
    # Binary, positive-class probabilities .1 .3 .3 .7 .9 .9 .9: equal-width bins of .2.
    p1 = np.array([0.1, 0.3, 0.3, 0.7, 0.9, 0.9, 0.9])
    y = np.array([0, 1, 0, 0, 1, 1, 0])
    calibrator = get_calibrator("histogram", n_bins=5).fit(np.log(np.stack([1 - p1, p1], 1)), y)
    out = calibrator.predict_proba(np.log(np.array([[0.9, 0.1], [0.7, 0.3], [0.5, 0.5], [0.1, 0.9]])))[:, 1]
    np.testing.assert_allclose(out, [0.0, 0.5, 0.5, 2 / 3])  # empty (.4, .6] bin keeps its midpoint
    equal_mass = get_calibrator("histogram", n_bins=3, strategy="quantile").fit(
        np.log(np.stack([1 - p1, p1], 1)), y
    )
    assert len(equal_mass.maps[0]["edges"]) <= 4


def test_bbq_scores_models_with_beta_binomial_evidence() -> None:
    p1 = np.array([0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.85, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    bbq = BBQCalibrator(prior_strength=2.0).fit(np.log(np.stack([1 - p1, p1], 1)), y)
    assert list(bbq.bin_counts(8)) == [1, 2]
    params = bbq.maps[0]
    # One bin: midpoint .5, a = b = N'/1 * .5 = 1 -> evidence B(m + 1, n + 1) / B(1, 1).
    log_one = betaln(5 + 1, 3 + 1) - betaln(1, 1)  # 5 positives, 3 negatives
    # Two equal-frequency bins split at the median; each bin's prior a_b = 1 * midpoint.
    edges = params["edges"][2:5]
    mids = (edges[:-1] + edges[1:]) / 2
    counts = [(1, 3), (4, 0)]  # (positives, negatives) below / above the median (.65)
    log_two = sum(betaln(m + mid, n + 1 - mid) - betaln(mid, 1 - mid) for (m, n), mid in zip(counts, mids))
    expected = np.exp([log_one, log_two] - np.logaddexp(log_one, log_two))
    np.testing.assert_allclose(params["weights"], expected, rtol=1e-9)
    # The prediction is the weight-averaged Beta posterior mean of each model's bin.
    one_bin = (5 + 1) / (8 + 2)
    q = bbq.predict_proba(np.log(np.array([[0.05, 0.95]])))[0, 1]
    two_bin = (4 + mids[1]) / (4 + 1)
    assert q == pytest.approx(expected[0] * one_bin + expected[1] * two_bin)


@pytest.mark.parametrize("method", list(CALIBRATORS))
def test_state_dict_round_trip_gives_identical_predictions(method: str) -> None:
    z, y = overconfident(600, 3, 2.0, seed=9)
    calibrator = get_calibrator(method).fit(z, y)
    state = calibrator.state_dict()
    rebuilt = calibrator_from_state_dict(state)
    np.testing.assert_array_equal(rebuilt.predict_proba(z), calibrator.predict_proba(z))
    # Pure JSON (arrays as lists) round-trips too: no pickle anywhere.
    as_json = json.loads(json.dumps({**state, "arrays": {k: v.tolist() for k, v in state["arrays"].items()}}))
    np.testing.assert_array_equal(
        calibrator_from_state_dict(as_json).predict_proba(z), calibrator.predict_proba(z)
    )
    assert type(rebuilt).from_state_dict(state).num_classes == 3


def test_cross_validation_is_out_of_fold_and_refits_on_all() -> None:
    z, y = overconfident(1000, 3, 2.5, seed=10)
    folds = stratified_folds(y, 5, seed=0)
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1
    for k in range(5):  # every class spread over every fold
        assert abs((y[folds == k] == 0).mean() - (y == 0).mean()) < 0.02
    result = cross_val_calibrate("temperature", z, y, n_folds=5)
    held_out = result.folds == 0
    by_hand = TemperatureScaling().fit(z[~held_out], y[~held_out]).predict_proba(z[held_out])
    np.testing.assert_allclose(result.probs[held_out], by_hand)
    assert result.calibrator.temperature == pytest.approx(TemperatureScaling().fit(z, y).temperature)


def test_errors_name_the_problem() -> None:
    z, y = overconfident(50, 3, 1.0)
    with pytest.raises(CalibrationError, match="unknown calibration method 'beta'"):
        get_calibrator("beta")
    with pytest.raises(CalibrationError, match="not fitted"):
        get_calibrator("platt").predict_proba(z)
    fitted = get_calibrator("temperature").fit(z, y)
    with pytest.raises(CalibrationError, match="fitted on 3 classes"):
        fitted.predict_proba(z[:, :2])
    with pytest.raises(CalibrationError, match=r"labels must be integers in \[0, 2\]"):
        get_calibrator("vector").fit(z, y + 1)
    with pytest.raises(CalibrationError, match="--cv needs"):
        cross_val_calibrate("temperature", z, y, n_folds=1)
    with pytest.raises(CalibrationError, match="state is for method"):
        TemperatureScaling.from_state_dict(get_calibrator("isotonic").fit(z, y).state_dict())
