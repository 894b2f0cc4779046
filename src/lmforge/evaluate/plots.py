"""Evaluation figures as PNG bytes: ROC and precision-recall curves, confusion matrix, learning curves.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas, without pyplot,
so no global backend or figure state is touched; callers write the bytes atomically.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.metrics.calibration import _binary_auc
from lmforge.metrics.classification import average_precision, pr_curve, roc_curve

__all__ = ["confusion_matrix_png", "learning_curves_png", "pr_curve_png", "read_metrics_log", "roc_curve_png"]

_MAX_CURVES = 10  # beyond this many classes one-vs-rest curves are unreadable: draw the first ones
_MAX_ANNOTATED = 20
_NOT_PLOTTED = (
    "per_second",
    "per_sec",
    "epoch",
    "time",
    "perplexity",
    "grad",
    "tokens",
    "examples",
    "seconds",
)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _one_vs_rest(
    probs: np.ndarray, labels: np.ndarray, label_names: list[str]
) -> tuple[Any, Any, list[tuple[int, np.ndarray]]]:
    """A new figure, its axes and the classes that get a curve with their (N,) masks of positives:
    the positive class of a binary problem, else the first ones; a class never seen is left out."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4.5))
    classes = [1] if probs.shape[1] == 2 else list(range(min(probs.shape[1], _MAX_CURVES)))
    curves = [(k, labels == k) for k in classes]
    return fig, fig.subplots(), [(k, positive) for k, positive in curves if positive.any()]


def _curves_png(fig: Any, ax: Any, axis_labels: tuple[str, str], title: str, legend: str) -> bytes:
    """Label, title and legend (at ``legend``) a figure of :func:`_one_vs_rest` curves; its PNG."""
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(loc=legend, fontsize=7)
    fig.tight_layout()
    return _png(fig)


def roc_curve_png(probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> bytes:
    """ROC curve (binary) or one-vs-rest ROC curves (multiclass) with their AUCs in the legend."""
    fig, ax, curves = _one_vs_rest(probs, labels, label_names)
    for k, positive in curves:
        if positive.all():  # no negatives: no false-positive rate
            continue
        fpr, tpr, _ = roc_curve(probs[:, k], positive)
        ax.plot(fpr, tpr, label=f"{label_names[k]} (AUC {_binary_auc(probs[:, k], positive):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="chance")
    title = "ROC curve" if probs.shape[1] == 2 else "ROC curves (one vs rest)"
    return _curves_png(fig, ax, ("false positive rate", "true positive rate"), title, "lower right")


def pr_curve_png(probs: np.ndarray, labels: np.ndarray, label_names: list[str]) -> bytes:
    """Precision-recall curve(s) with average precision in the legend and the base rate dotted."""
    fig, ax, curves = _one_vs_rest(probs, labels, label_names)
    for k, positive in curves:
        precision, recall, _ = pr_curve(probs[:, k], positive)
        ap = average_precision(probs[:, k], positive)
        (line,) = ax.step(recall, precision, where="post", label=f"{label_names[k]} (AP {ap:.3f})")
        ax.axhline(float(positive.mean()), linestyle=":", color=line.get_color(), linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    title = "Precision-recall curve" if probs.shape[1] == 2 else "Precision-recall (one vs rest)"
    return _curves_png(fig, ax, ("recall", "precision"), title, "lower left")


def confusion_matrix_png(matrix: np.ndarray | list[list[int]], label_names: list[str]) -> bytes:
    """Confusion matrix: colour = share of the true class (row), text = count."""
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(3 + 0.5 * len(label_names), 12)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ticks = list(range(len(label_names)))
    ax.set_xticks(ticks, label_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, label_names, fontsize=8)
    if len(label_names) <= _MAX_ANNOTATED:
        for i in ticks:
            for j in ticks:
                color = "white" if shares[i, j] > 0.5 else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    return _png(fig)


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """Records of a training ``metrics.jsonl`` that have a ``step``; cut or malformed lines are skipped
    (the last line of a killed run may be half written)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
            records.append(record)
    return records


def learning_curves_png(records: list[dict[str, Any]]) -> bytes | None:
    """Numeric series of a metrics log against ``step``: losses, then other metrics (accuracy,
    F1, ...), then the learning rate, each in its own panel (throughput, epoch, perplexity and
    gradient norms are left out: their scales would flatten the rest). ``None``: nothing to draw."""
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[float], list[float]]] = {}
    for record in records:
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(float(record["step"]))
            values.append(float(value))
    groups: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        "loss": {},
        "metrics": {},
        "learning rate": {},
    }
    for name, points in series.items():
        if "loss" in name:
            groups["loss"][name] = points
        elif name in ("lr", "learning_rate"):
            groups["learning rate"][name] = points
        elif not any(part in name for part in _NOT_PLOTTED):
            groups["metrics"][name] = points
    panels = [(title, group) for title, group in groups.items() if group]
    if not panels:
        return None
    fig = Figure(figsize=(6, 3 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, group) in zip(axes, panels):
        for name, (steps, values) in sorted(group.items()):
            ax.plot(steps, values, label=name, marker="." if len(steps) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
