"""``lmforge calibrate``: fit calibrators on one logits file, evaluate on another, write the report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.calibrate.base import Calibrator, softmax
from lmforge.calibrate.io import check_calibrator_target, load_logits_file, read_predictive, save_calibrator
from lmforge.calibrate.registry import CALIBRATORS, cross_val_calibrate, get_calibrator
from lmforge.calibrate.report import write_report
from lmforge.calibrate.scaling import TemperatureScaling
from lmforge.errors import CalibrationError
from lmforge.fileio import check_output_dir
from lmforge.metrics.calibration import expected_calibration_error


@dataclass
class CalibrateConfig:
    """What ``lmforge calibrate`` does.

    Attributes:
        method: a calibrator name (``temperature`` ... ``bbq``), several comma-separated, or ``"all"``
            to compare every method.
        eval_path: logits file the methods are evaluated on (test split).
        out_dir: report folder (metrics.json, PNGs, report.html).
        fit_path: logits file the calibrators are fitted on (validation split); None with ``cv``.
        n_bins: bins of ECE / MCE, the diagrams, and the histogram calibrator.
        cv: K-fold cross-validated calibration on ``eval_path`` alone (no ``fit_path``): each sample
            is calibrated by a map fitted on the other folds; the saved calibrator is refitted on all.
        save_into: checkpoint directory to store the fitted calibrator in (the best by ECE with
            ``method="all"``).
        label_column: label column of CSV inputs.
        seed: seed of the cross-validation folds and of the bootstrap.
        n_resamples: bootstrap resamples of the confidence intervals.
    """

    method: str
    eval_path: Path
    out_dir: Path
    fit_path: Path | None = None
    n_bins: int = 15
    cv: int | None = None
    save_into: Path | None = None
    label_column: str = "label"
    seed: int = 0
    n_resamples: int = 200

    def __post_init__(self) -> None:
        self.methods()  # an unknown method names the known ones
        check_output_dir(self.out_dir)
        if self.n_bins < 1:
            raise CalibrationError(f"--bins (n_bins) = {self.n_bins}: must be >= 1")
        if self.cv is not None and self.cv < 2:
            raise CalibrationError(f"--cv (cv) = {self.cv}: cross-validation needs at least 2 folds")
        if self.n_resamples < 1:
            raise CalibrationError(f"n_resamples={self.n_resamples}: must be >= 1")

    def methods(self) -> list[str]:
        """The methods compared: ``all``, one name, or several comma-separated."""
        if self.method == "all":
            return list(CALIBRATORS)
        names = [name.strip() for name in self.method.split(",") if name.strip()]
        unknown = [name for name in names if name not in CALIBRATORS]
        if unknown or not names:
            raise CalibrationError(
                f"--method {self.method!r}: {', '.join(map(repr, unknown)) or 'no method'} unknown; choose "
                f"one or more (comma-separated) of {', '.join(CALIBRATORS)}, or all"
            )
        return list(dict.fromkeys(names))


def _kwargs(method: str, n_bins: int) -> dict[str, Any]:
    return {"n_bins": n_bins} if method == "histogram" else {}


def _describe(calibrator: Calibrator) -> dict[str, Any]:
    """The fitted parameters worth printing (small ones), for metrics.json."""
    state = calibrator.state_dict()
    info: dict[str, Any] = {"config": state["params"].get("config", {})}
    if isinstance(calibrator, TemperatureScaling):
        info["temperature"] = calibrator.temperature
    small = {k: v.tolist() for k, v in state["arrays"].items() if v.size <= 64}
    if small:
        info["arrays"] = small
    return info


def _describe_predictive(predictive: dict[str, Any] | None) -> str:
    if predictive is None:
        return "single forward pass"
    if predictive["method"] == "mc_dropout":
        return f"MC dropout ({predictive.get('mc_passes')} passes)"
    return f"{predictive['method']} ({predictive.get('members')} members)"


def _check_same_predictive(
    fit_path: Path, fit: dict[str, Any] | None, eval_path: Path, evaluated: dict[str, Any] | None
) -> None:
    """A calibrator fitted on MC-dropout or ensemble averages does not transfer to single-pass
    logits (averaging already softens the probabilities), nor the other way round."""
    keys = ("method", "mc_passes", "members")
    if (fit and {k: fit.get(k) for k in keys}) != (evaluated and {k: evaluated.get(k) for k in keys}):
        raise CalibrationError(
            f"{fit_path} holds {_describe_predictive(fit)} predictions but {eval_path} holds "
            f"{_describe_predictive(evaluated)}: evaluate both splits the same way"
        )


def run_calibration(config: CalibrateConfig) -> dict[str, Any]:
    """Fit, evaluate, write the report (and optionally save the calibrator); returns metrics.json."""
    methods = config.methods()
    eval_logits, eval_labels = load_logits_file(config.eval_path, config.label_column)
    if config.save_into is not None:  # before any fitting: the calibrator must fit the model's head
        check_calibrator_target(config.save_into, eval_logits.shape[1])
    predictive = read_predictive(config.eval_path)  # what the calibrator is fitted on (fit file below)
    calibrators: dict[str, Calibrator] = {}
    after: dict[str, np.ndarray] = {}
    if config.cv is not None:
        if config.fit_path is not None:
            raise CalibrationError("--cv cross-validates on the --eval file alone; drop --fit (or drop --cv)")
        for method in methods:
            result = cross_val_calibrate(
                method, eval_logits, eval_labels, config.cv, config.seed, **_kwargs(method, config.n_bins)
            )
            calibrators[method], after[method] = result.calibrator, result.probs
    else:
        if config.fit_path is None:
            raise CalibrationError(
                "give --fit VAL (the split to fit on), or --cv K to cross-validate on --eval"
            )
        fit_logits, fit_labels = load_logits_file(config.fit_path, config.label_column)
        fit_predictive = read_predictive(config.fit_path)
        _check_same_predictive(config.fit_path, fit_predictive, config.eval_path, predictive)
        predictive = fit_predictive
        if fit_logits.shape[1] != eval_logits.shape[1]:
            raise CalibrationError(
                f"{config.fit_path} has {fit_logits.shape[1]} classes but {config.eval_path} has "
                f"{eval_logits.shape[1]}; both must come from the same classifier"
            )
        for method in methods:
            calibrator = get_calibrator(method, **_kwargs(method, config.n_bins)).fit(fit_logits, fit_labels)
            calibrators[method], after[method] = calibrator, calibrator.predict_proba(eval_logits)
    extra: dict[str, Any] = {
        "fit": None if config.fit_path is None else str(config.fit_path),
        "eval": str(config.eval_path),
        "cv": config.cv,
        "calibrators": {name: _describe(c) for name, c in calibrators.items()},
        "predictive": predictive,
    }
    if config.save_into is not None:
        # The shipped calibrator is the one the report recommends: the lowest test ECE.
        best = min(after, key=lambda m: expected_calibration_error(after[m], eval_labels, config.n_bins))
        save_calibrator(calibrators[best], config.save_into, predictive)
        extra["saved_into"] = {"checkpoint": str(config.save_into), "method": best}
    return write_report(
        config.out_dir,
        eval_labels,
        softmax(eval_logits),
        after,
        config.n_bins,
        extra,
        config.n_resamples,
        config.seed,
    )
