"""Calibration stage: post-hoc calibrators fitted on held-out logits, Bayesian predictive averaging
(MC dropout, deep ensembles), reliability reports, and calibrators saved inside checkpoints.

Every calibrator is an estimator: ``get_calibrator("temperature").fit(val_logits, val_labels)``
then ``.predict_proba(test_logits)`` -> [N, C] numpy probabilities; ``state_dict()`` /
``from_state_dict()`` serialise it without pickle. Metrics live in
:mod:`lmforge.metrics.calibration`.
"""

from lmforge.calibrate.base import Calibrator, OneVsRestCalibrator
from lmforge.calibrate.binning import BBQCalibrator, HistogramBinning, IsotonicCalibrator
from lmforge.calibrate.registry import (
    CALIBRATORS,
    CrossValResult,
    calibrator_from_state_dict,
    cross_val_calibrate,
    get_calibrator,
)
from lmforge.calibrate.scaling import MatrixScaling, PlattScaling, TemperatureScaling, VectorScaling

__all__ = [
    "CALIBRATORS",
    "BBQCalibrator",
    "Calibrator",
    "CrossValResult",
    "HistogramBinning",
    "IsotonicCalibrator",
    "MatrixScaling",
    "OneVsRestCalibrator",
    "PlattScaling",
    "TemperatureScaling",
    "VectorScaling",
    "calibrator_from_state_dict",
    "cross_val_calibrate",
    "get_calibrator",
]
