"""What compression did to a classifier: accuracy, calibration, size and speed, before and after.

Compression shifts calibration (a pruned or quantized model is usually over- or under-confident
in new ways), so every report shows, for the model before compression and after it: accuracy,
ECE with its noise floor (the ECE a perfectly calibrated model with the same confidences would
show on this many examples, :func:`lmforge.metrics.calibration.ece_noise_floor`) and NLL, raw
and after recalibrating with the calibrate stage (temperature scaling fitted on a held-out split,
applied to the test split), plus the share of test predictions the two models agree on.
Size and speed are measured by ``bench/compress.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.calibrate.base import Calibrator, softmax
from lmforge.calibrate.registry import get_calibrator
from lmforge.data import TASK_DATASETS, TaskDataConfig
from lmforge.errors import ConfigError
from lmforge.metrics.calibration import (
    accuracy,
    ece_noise_floor,
    expected_calibration_error,
    negative_log_likelihood,
)
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.tasks import get_task
from lmforge.train.finetune_run import load_split

__all__ = [
    "EvalData",
    "calibration_metrics",
    "classifier_logits",
    "compression_report",
]


@dataclass
class EvalData:
    """The splits a compression report measures on.

    Attributes:
        data: a classification file or named dataset (``zh-sentiment``).
        split: the split reported on.
        fit_data: where the recalibration is fitted; default ``data`` (a named dataset's
            ``fit_split``; a file needs its own ``fit_data``).
        fit_split: the split recalibration is fitted on.
        config: column names, error handling and ``limit`` (examples read per split).
        batch_size: examples per forward pass.
        bins: ECE bins.
    """

    data: str | Path
    split: str = "test"
    fit_data: str | Path | None = None
    fit_split: str = "validation"
    config: TaskDataConfig = field(default_factory=TaskDataConfig)
    batch_size: int = 64
    bins: int = 15

    def validate(self) -> None:
        named = not Path(self.data).exists() and str(self.data) in TASK_DATASETS
        if self.fit_data is None and not named:
            raise ConfigError(
                f"--eval-data {self.data}: a file has no validation split; name the data to recalibrate on "
                "with --fit-data"
            )
        if self.batch_size < 1 or self.bins < 2:
            raise ConfigError("the report's batch size must be >= 1 and its bins >= 2")


def classifier_logits(
    loaded: LoadedModel, data: str | Path, split: str, config: TaskDataConfig, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, C] (float64) and labels [N] of a sequence classifier on a split, tokenised the way
    it was fine-tuned (its ``id2label`` and ``max_length``)."""
    task = get_task("classification")
    if loaded.config.head != task.head:
        raise ConfigError(
            f"{loaded.source}: the compression report needs a sequence classifier, this model has head "
            f"{loaded.config.head!r}"
        )
    names = [str(n) for n in loaded.config.extra.get("id2label", [])]
    split_data, _ = load_split(loaded, task.name, names, data, split, config)
    logits, _ = task.predict(loaded.model, split_data, batch_size)
    return np.asarray(logits, dtype=np.float64), np.asarray(split_data.references, dtype=np.int64)


def calibration_metrics(
    probs: np.ndarray, labels: np.ndarray, bins: int = 15, seed: int = 0
) -> dict[str, Any]:
    """Accuracy, ECE, its noise floor (mean and 95% range) and NLL of probabilities [N, C]."""
    ece = expected_calibration_error(probs, labels, bins)
    return {
        "accuracy": accuracy(probs, labels),
        "ece": ece,
        "ece_floor": ece_noise_floor(probs, bins, seed=seed, observed=ece),
        "nll": negative_log_likelihood(probs, labels),
    }


def _model_metrics(loaded: LoadedModel, data: EvalData) -> tuple[dict[str, Any], np.ndarray, Calibrator]:
    logits, labels = classifier_logits(loaded, data.data, data.split, data.config, data.batch_size)
    fit_logits, fit_labels = classifier_logits(
        loaded, data.fit_data or data.data, data.fit_split, data.config, data.batch_size
    )
    calibrator = get_calibrator("temperature").fit(fit_logits, fit_labels)
    metrics = {
        "examples": len(labels),
        "raw": calibration_metrics(softmax(logits), labels, data.bins),
        "recalibrated": calibration_metrics(calibrator.predict_proba(logits), labels, data.bins),
        "temperature": float(calibrator.temperature),  # type: ignore[attr-defined]
    }
    return metrics, logits.argmax(-1), calibrator


def compression_report(
    before: LoadedModel, after: LoadedModel, data: EvalData
) -> tuple[dict[str, Any], Calibrator]:
    """Accuracy, ECE (with noise floor) and NLL of ``before`` and ``after``, raw and recalibrated,
    and their agreement on the test split.

    Returns:
        ``(report, calibrator)``: ``{"before": {...}, "after": {...}, "agreement": float, ...}``,
        each model's entry holding ``raw`` and ``recalibrated`` metrics and the fitted
        ``temperature``; and the temperature scaling fitted for ``after`` (which the verbs save
        with the compressed model, so ``lmforge.load`` returns calibrated probabilities).
    """
    data.validate()
    first, first_predictions, _ = _model_metrics(before, data)
    second, second_predictions, calibrator = _model_metrics(after, data)
    report = {
        "data": str(data.data),
        "split": data.split,
        "fit": f"{data.fit_data or data.data}:{data.fit_split}",
        "before": first,
        "after": second,
        "agreement": float(np.mean(first_predictions == second_predictions)),
    }
    return report, calibrator
