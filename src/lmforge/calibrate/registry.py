"""Calibrators by name, rebuilding from a state dict, and cross-validated fitting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmforge.calibrate.base import Calibrator, as_labels, as_logits
from lmforge.calibrate.binning import BBQCalibrator, HistogramBinning, IsotonicCalibrator
from lmforge.calibrate.scaling import MatrixScaling, PlattScaling, TemperatureScaling, VectorScaling
from lmforge.errors import CalibrationError

CALIBRATORS: dict[str, type[Calibrator]] = {
    cls.method: cls
    for cls in (
        TemperatureScaling,
        VectorScaling,
        MatrixScaling,
        PlattScaling,
        IsotonicCalibrator,
        HistogramBinning,
        BBQCalibrator,
    )
}


def get_calibrator(name: str, **kwargs: Any) -> Calibrator:
    """A new, unfitted calibrator: temperature | vector | matrix | platt | isotonic | histogram | bbq.

    Keyword arguments go to the calibrator's constructor (e.g. ``n_bins=10, strategy="quantile"``
    for histogram, ``off_diagonal=0.1`` for matrix).
    """
    try:
        cls = CALIBRATORS[name]
    except KeyError:
        raise CalibrationError(
            f"unknown calibration method {name!r}; choose one of {', '.join(CALIBRATORS)}"
        ) from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CalibrationError(f"calibrator {name!r}: {exc}") from None


def calibrator_from_state_dict(state: dict[str, Any]) -> Calibrator:
    """Rebuild any fitted calibrator from its :meth:`Calibrator.state_dict`."""
    method = state.get("method")
    if method not in CALIBRATORS:
        raise CalibrationError(
            f"unknown calibrator method {method!r} in state (known: {', '.join(CALIBRATORS)})"
        )
    return CALIBRATORS[method].from_state_dict(state)


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index [N] of each sample: every class is shuffled (seeded) and dealt round-robin, so
    each fold holds about 1/K of every class."""
    rng = np.random.default_rng(seed)
    folds = np.empty(labels.shape[0], dtype=np.int64)
    offset = 0
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        # Continue the round-robin across classes so fold sizes differ by at most one.
        folds[idx] = (np.arange(idx.size) + offset) % n_folds
        offset += idx.size
    return folds


@dataclass
class CrossValResult:
    """What :func:`cross_val_calibrate` returns.

    Attributes:
        probs: [N, C] out-of-fold calibrated probabilities: sample i is calibrated by a map fitted
            on the other folds, so metrics on it are honest estimates for unseen data.
        calibrator: the same method refitted on all N samples (the one to ship).
        folds: [N] fold index of each sample.
    """

    probs: np.ndarray
    calibrator: Calibrator
    folds: np.ndarray


def cross_val_calibrate(
    method: str, logits: Any, labels: Any, n_folds: int = 5, seed: int = 0, **kwargs: Any
) -> CrossValResult:
    """K-fold cross-validated calibration, for data with no separate validation split.

    Args:
        method: calibrator name (see :func:`get_calibrator`).
        logits: [N, C] logits.
        labels: [N] integer labels.
        n_folds: K >= 2.
        seed: seed of the stratified fold assignment.
        **kwargs: calibrator constructor arguments.
    """
    z = as_logits(logits)
    y = as_labels(labels, z.shape[0], z.shape[1])
    if n_folds < 2 or n_folds > z.shape[0]:
        raise CalibrationError(f"--cv needs 2 <= K <= N = {z.shape[0]}, got {n_folds}")
    folds = stratified_folds(y, n_folds, seed)
    probs = np.zeros_like(z)
    for k in range(n_folds):
        held_out = folds == k
        calibrator = get_calibrator(method, **kwargs).fit(z[~held_out], y[~held_out])
        probs[held_out] = calibrator.predict_proba(z[held_out])
    return CrossValResult(probs, get_calibrator(method, **kwargs).fit(z, y), folds)
