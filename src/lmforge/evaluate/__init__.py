"""Evaluation stage: metrics computed on model outputs, the files of an evaluation folder, and the
calibration metrics (here so that the fine-tuning evaluator and the calibrate stage share one
implementation).

``evaluate_predictions(task, predictions, references, label_names, logits=..., out_dir=...)`` is
the one entry point; the metric modules are :mod:`~lmforge.metrics.classification`,
:mod:`~lmforge.metrics.sequence` (entity F1), :mod:`~lmforge.metrics.qa` (SQuAD EM / F1) and
:mod:`~lmforge.metrics.generation` (BLEU, chrF, METEOR, ROUGE, perplexity).
"""

from lmforge.evaluate.report import (
    EVAL_TASKS,
    evaluate_predictions,
    evaluate_result,
    save_logits,
    write_evaluation,
)

__all__ = ["EVAL_TASKS", "evaluate_predictions", "evaluate_result", "save_logits", "write_evaluation"]
