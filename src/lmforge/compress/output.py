"""How every compression verb ends: the compressed model written as a checkpoint with its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.calibrate.base import Calibrator
from lmforge.calibrate.io import save_calibrator
from lmforge.compress.report import EvalData, compression_report
from lmforge.fileio import atomic_replace_dir, check_output_dir
from lmforge.models import TransformerModel
from lmforge.models.io.build import check_replaceable
from lmforge.models.io.checkpoint import WEIGHTS_NAME, LoadedModel, write_checkpoint
from lmforge.tokenizers import Tokenizer

__all__ = ["REPORT_NAME", "prepare_output", "publish"]

#: The report every compression verb writes into its checkpoint.
REPORT_NAME = "compression.json"


def prepare_output(out: str | Path, eval_data: EvalData | None = None) -> None:
    """Refuse an output directory (or report settings) that cannot work, before any work starts."""
    check_output_dir(out)
    check_replaceable(Path(out))
    if eval_data is not None:
        eval_data.validate()


def publish(
    out: str | Path,
    model: TransformerModel,
    tokenizer: Tokenizer | None,
    report: dict[str, Any],
    before: LoadedModel | None = None,
    eval_data: EvalData | None = None,
) -> Path:
    """Write ``model`` as an lmforge checkpoint at ``out`` with ``compression.json``, built beside
    ``out`` and swapped in whole (:func:`lmforge.fileio.atomic_replace_dir`).

    With ``eval_data`` (and the float model ``before``), ``report["calibration"]`` gets the
    before / after / recalibrated metrics, and the temperature scaling fitted on the compressed
    model is saved with it (``calibrator.json``), so ``lmforge.load(out)`` predicts calibrated
    probabilities.
    """
    calibrator: Calibrator | None = None
    if eval_data is not None and before is not None:
        after = LoadedModel(model, tokenizer, model.config, str(out))
        report["calibration"], calibrator = compression_report(before, after, eval_data)

    def build(directory: Path) -> None:
        write_checkpoint(model, directory, tokenizer)
        report["file_bytes"] = (directory / WEIGHTS_NAME).stat().st_size
        if calibrator is not None:
            save_calibrator(calibrator, directory)
        text = json.dumps(report, indent=2, default=str) + "\n"
        (directory / REPORT_NAME).write_text(text, encoding="utf-8")

    return atomic_replace_dir(out, build)
