"""One entry point for every task's metrics and the files of an evaluation folder.

:func:`evaluate_predictions` takes what a model produced on a split and the references, and
returns the metrics as a JSON-ready dict. With ``out_dir`` it also writes, atomically:

* ``metrics.json``: the metrics (NaN / infinity as ``null``);
* ``logits.npz`` (classification with logits): ``logits`` [N, C] float32, ``labels`` [N] int64
  (multi-label: [N, C] 0/1) and ``label_names`` [C] str, readable with ``np.load`` without pickle
  (what ``lmforge calibrate`` takes);
* ``roc_curve.png``, ``pr_curve.png`` (classification with logits), ``confusion_matrix.png``
  (single-label classification), ``learning_curves.png`` (given a training ``metrics.jsonl``);
* ``summary.html``: the metrics table, per-class / per-type table and the figures, embedded.

Inputs per task (``predictions``, ``references``):

=========================  =================================================  ==============================
task                       predictions                                        references
=========================  =================================================  ==============================
``classification``         class indices or names [N] (or ``logits=`` [N, C])  indices or names [N]; multi-label:
                                                                              an [N, C] 0/1 array, or a list
                                                                              of label-index tuples
``token-classification``   tag sequences (strings, or ids with label_names)   the same; id -100 is ignored
``qa``                     answer strings (``""``: no answer)                 lists of gold answers
``seq2seq`` (translation,  generated strings                                  a string or list per example
summarization)
``lm`` (``chat``)          summed NLL per example (nats)                      token count per example
=========================  =================================================  ==============================
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import EvaluationError
from lmforge.fileio import atomic_save_npz, atomic_write_bytes, atomic_write_text
from lmforge.metrics.calibration import as_numpy
from lmforge.tasks import get_task, task_names

__all__ = ["EVAL_TASKS", "evaluate_predictions", "save_logits", "write_evaluation"]

EVAL_TASKS = task_names(aliases=True)
_GENERATION = ("bleu", "chrf", "rouge", "meteor")


def _finite(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, NaN / inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_logits(
    path: str | Path,
    logits: Any,
    labels: Any,
    label_names: Sequence[str],
    predictive: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``logits`` [N, C] (float32), ``labels`` [N] or [N, C] (int64) and ``label_names`` [C]
    to an ``.npz`` atomically (no pickled objects: ``np.load(path)`` reads it).

    ``predictive`` (how averaged predictions were made: MC dropout, deep ensemble) is stored as a
    JSON string under the key ``predictive``, so a calibrator fitted on these logits knows what it
    was fitted on."""
    z, y = as_numpy(logits, np.float32), as_numpy(labels, np.int64)
    if z.ndim != 2 or y.shape[0] != z.shape[0] or len(label_names) != z.shape[1]:
        raise EvaluationError(
            f"logits {z.shape}, labels {y.shape} and {len(label_names)} label names disagree"
        )
    arrays = {"logits": z, "labels": y, "label_names": np.asarray(list(label_names), dtype=str)}
    if predictive is not None:
        arrays["predictive"] = np.asarray(json.dumps(dict(predictive), sort_keys=True))
    return atomic_save_npz(path, **arrays)


def _summary_html(metrics: dict[str, Any], figures: dict[str, bytes], title: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
        if isinstance(v, (int, float, str)) and not isinstance(v, bool) or v is None
    )
    detail = metrics.get("per_class") or metrics.get("per_type") or {}
    detail_rows = "".join(
        "<tr><td>"
        + html.escape(name)
        + "</td>"
        + "".join(f"<td>{values.get(k, float('nan')):.4f}</td>" for k in ("precision", "recall", "f1"))
        + f"<td>{values.get('support', '')}</td></tr>"
        for name, values in detail.items()
    )
    detail_table = (
        "<h2>Per class</h2><table><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        + detail_rows
        + "</table>"
        if detail_rows
        else ""
    )
    images = "".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name, data in figures.items()
    )
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}figure{display:inline-block;margin:1em}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table>{rows}</table>{detail_table}{images}</body></html>\n"
    )


def write_evaluation(
    out_dir: str | Path,
    metrics: dict[str, Any],
    *,
    arrays: dict[str, Any] | None = None,
    label_names: Sequence[str] | None = None,
    metrics_log: str | Path | None = None,
    title: str = "Evaluation",
) -> dict[str, str]:
    """Write metrics.json, logits.npz, the figures and summary.html; returns {kind: file path}."""
    from lmforge.evaluate.plots import (
        confusion_matrix_png,
        learning_curves_png,
        pr_curve_png,
        read_metrics_log,
        roc_curve_png,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arrays = arrays or {}
    written: dict[str, str] = {}
    figures: dict[str, bytes] = {}
    names = list(label_names) if label_names is not None else None
    if "logits" in arrays:
        classes = arrays["logits"].shape[1]
        names = names or [str(k) for k in range(classes)]
        written["logits"] = str(
            save_logits(
                out / "logits.npz", arrays["logits"], arrays["labels"], names, metrics.get("predictive")
            )
        )
    if "probs" in arrays and names is not None:
        figures["roc_curve"] = roc_curve_png(arrays["probs"], arrays["labels"], names)
        figures["pr_curve"] = pr_curve_png(arrays["probs"], arrays["labels"], names)
    if "confusion_matrix" in arrays:
        matrix = arrays["confusion_matrix"]
        figures["confusion_matrix"] = confusion_matrix_png(
            matrix, names or [str(k) for k in range(len(matrix))]
        )
    if metrics_log is not None and Path(metrics_log).is_file():
        curves = learning_curves_png(read_metrics_log(metrics_log))
        if curves is not None:
            figures["learning_curves"] = curves
    for name, data in figures.items():
        atomic_write_bytes(out / f"{name}.png", data)
        written[name] = str(out / f"{name}.png")
    clean = _finite(metrics)
    atomic_write_text(out / "metrics.json", json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    written["metrics"] = str(out / "metrics.json")
    atomic_write_text(out / "summary.html", _summary_html(clean, figures, title))
    written["summary"] = str(out / "summary.html")
    return written


def evaluate_predictions(
    task: str,
    predictions: Any = None,
    references: Any = None,
    label_names: Sequence[str] | None = None,
    *,
    logits: Any = None,
    out_dir: str | Path | None = None,
    metrics_log: str | Path | None = None,
    multi_label: bool = False,
    threshold: float = 0.5,
    bleu_tokenize: str = "13a",
    rouge_tokenizer: str = "default",
    generation: Sequence[str] = _GENERATION,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics of one task's predictions against references (see the module table for the inputs).

    Args:
        task: one of :data:`EVAL_TASKS`.
        predictions: model outputs; for classification optional when ``logits`` are given.
        references: the gold data.
        label_names: class names (classification) or tag names (token classification, by id).
        logits: classification scores [N, C] (softmax; sigmoid with ``multi_label``).
        out_dir: also write the evaluation folder there (see :func:`write_evaluation`).
        metrics_log: a training ``metrics.jsonl`` to draw learning curves from.
        multi_label: classification with independent labels.
        threshold: multi-label decision threshold on the probability.
        bleu_tokenize: sacreBLEU tokenizer (``"char"`` for Japanese / Chinese targets).
        rouge_tokenizer: ``"default"`` or ``"char"``.
        generation: which generation metrics to compute for seq2seq.
        extra: more entries for the result and ``metrics.json`` (e.g. how the predictions were made).

    Returns:
        ``{"task": task, **metrics}``; classification has ``accuracy`` and ``macro_f1``,
        token classification ``entity_f1`` (micro over entities), qa ``exact_match`` and ``f1``, seq2seq
        ``bleu``, ``chrf``, ``rouge*`` (and ``meteor``), lm ``perplexity``. With ``out_dir`` the
        written files are listed under ``"files"``.

    Raises:
        EvaluationError: unknown task, or inputs of the wrong shape or length.
    """
    if task not in EVAL_TASKS:
        raise EvaluationError(f"unknown task {task!r}; use one of {', '.join(EVAL_TASKS)}")
    if references is None:
        raise EvaluationError("references are required")
    # Each task reads the options that concern it (classification the logits, seq2seq the
    # generation metrics) and ignores the others.
    metrics, arrays = get_task(task).metrics(
        predictions, references, label_names, logits=logits, multi_label=multi_label, threshold=threshold,
        generation=generation, bleu_tokenize=bleu_tokenize, rouge_tokenizer=rouge_tokenizer,
    )  # fmt: skip
    result: dict[str, Any] = {"task": task, **metrics, **(extra or {})}
    if out_dir is not None:
        names = list(label_names) if label_names is not None else None
        files = write_evaluation(
            out_dir,
            result,
            arrays=arrays,
            label_names=names,
            metrics_log=metrics_log,
            title=f"{task} evaluation",
        )
        result["files"] = files
    return _finite(result)


def evaluate_result(
    result: Mapping[str, Any],
    out_dir: str | Path,
    *,
    metrics_log: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score a prediction result (:func:`lmforge.train.finetune_run.predict_dataset` or a Bayesian
    predictive) with its task's metrics and write the evaluation folder: ``metrics.json`` (with the
    result's ``loss``, ``data`` source and ``predictive``), ``logits.npz`` and plots for classifiers,
    ``uncertainty.npz`` for a Bayesian predictive, and the task's own files (seq2seq
    ``predictions.jsonl``, QA ``predictions.json``).

    Returns:
        ``{"task": ..., **metrics, "files": {...}}``.
    """
    task = get_task(str(result["task"]))
    names = list(result.get("label_names") or []) or None
    options = {"target_language": result["target_language"]} if result.get("target_language") else {}
    metrics, arrays = task.metrics(result["outputs"], result["references"], names, **options)
    entries: dict[str, Any] = {"loss": result.get("loss"), "data": result.get("source")}
    if "predictive" in result:
        entries["predictive"] = result["predictive"]
    full: dict[str, Any] = {"task": task.name, **metrics, **entries, **(extra or {})}
    out = Path(out_dir)
    files = write_evaluation(
        out, full, arrays=arrays, label_names=names, metrics_log=metrics_log, title=f"{task.name} evaluation"
    )
    files.update(task.write_outputs(out, dict(result)))
    if "uncertainty" in result:
        files["uncertainty"] = str(atomic_save_npz(out / "uncertainty.npz", **result["uncertainty"]))
    return _finite({**full, "files": files})
