"""Seq2seq evaluation folders: metrics chosen for the target language, and the predictions file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.evaluate.report import write_evaluation
from lmforge.metrics.seq2seq import seq2seq_metrics
from lmforge.tasks.seq2seq import write_predictions

__all__ = ["evaluate_seq2seq"]


def evaluate_seq2seq(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    sources: Sequence[str] | None = None,
    ids: Sequence[str | None] | None = None,
    target_language: str | None = None,
    out_dir: str | Path | None = None,
    metrics_log: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    title: str = "seq2seq evaluation",
) -> dict[str, Any]:
    """Metrics of generated strings; with ``out_dir`` also the evaluation folder.

    ``out_dir`` gets ``metrics.json`` (``{"task": "seq2seq", **metrics, **extra}``),
    ``summary.html`` (with learning curves from ``metrics_log``) and ``predictions.jsonl``: one
    ``{"id", "source", "prediction", "reference"}`` object a line, in example order.
    """
    metrics = {"task": "seq2seq", **seq2seq_metrics(predictions, references, target_language=target_language)}
    metrics.update(extra or {})
    if out_dir is None:
        return metrics
    out = Path(out_dir)
    files = write_evaluation(out, metrics, metrics_log=metrics_log, title=title)
    files["predictions"] = str(write_predictions(out, predictions, references, sources=sources, ids=ids))
    return {**metrics, "files": files}
