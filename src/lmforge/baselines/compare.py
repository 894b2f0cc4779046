"""One table from several runs' ``metrics.json`` (baselines and fine-tuned / evaluated models).

A run is a folder holding ``metrics.json`` or the file itself. Metrics are read from the top
level of the JSON object and from a nested ``metrics`` object; known metrics come first in a fixed
order (accuracy, F1s, entity F1, perplexity, BLEU, ...), then any other numeric field that is no
setting or count. The best value of each column is marked (highest, or lowest for perplexity,
losses, errors and seconds).

Example:
    >>> report = compare_runs(["runs/tfidf-lr", "runs/bert-eval"], Path("runs/compare"))  # doctest: +SKIP
    >>> report["rows"][0]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import DataError
from lmforge.fileio import atomic_write_text, check_output_dir

__all__ = [
    "HEADLINE_METRICS",
    "TASK_HEADLINE_METRICS",
    "KNOWN_METRICS",
    "compare_runs",
    "load_metrics",
    "lower_is_better",
]

KNOWN_METRICS = (
    "accuracy",
    "macro_f1",
    "micro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "ece",
    "entity_f1",
    "entity_precision",
    "entity_recall",
    "exact_match",
    "f1",
    "bleu",
    "chrf",
    "meteor",
    "rouge1",
    "rouge2",
    "rougeL",
    "perplexity",
    "nll_per_token",
    "bits_per_token",
    "loss",
    "train_seconds",
    "eval_seconds",
)
HEADLINE_METRICS = (
    "accuracy",
    "macro_f1",
    "roc_auc",
    "log_loss",
    "entity_f1",
    "exact_match",
    "f1",
    "bleu",
    "chrf",
    "rougeL",
    "perplexity",
    "train_seconds",
    "eval_seconds",
)
# The one or two numbers a run of each task is summed up by (`lmforge baseline` prints them).
TASK_HEADLINE_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "lm": ("perplexity",),
    "token-classification": ("entity_f1",),
    "seq2seq": ("bleu", "chrf"),
}
# Numeric fields that describe the run rather than measure it.
_NOT_METRICS = {
    "seed",
    "epochs",
    "order",
    "batch_size",
    "lr",
    "c",
    "alpha",
    "embed_dim",
    "window",
    "min_count",
    "max_length",
    "max_vocab",
    "max_features",
    "test_fraction",
    "discount",
    "num_classes",
    "vocab_size",
    "num_features",
    "cooccurrences",
    "glove_loss_first",
    "glove_loss_last",
    "num_sentences",
    "num_tokens",
}
_LOWER_IS_BETTER = (
    "perplexity",
    "loss",
    "log_loss",
    "ece",
    "mce",
    "brier",
    "nll",
    "cross_entropy",
    "seconds",
    "error",
    "oov",
)
METRICS_FILE = "metrics.json"


def lower_is_better(metric: str) -> bool:
    """True for perplexity, losses, calibration errors and times."""
    return any(part in metric for part in _LOWER_IS_BETTER)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """The JSON object of a run folder's ``metrics.json`` (or of the file given).

    Raises:
        DataError: no such file, or not a JSON object.
    """
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no {METRICS_FILE}; pass run folders written by lmforge baseline / evaluate")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{file}: not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise DataError(f"{file}: expected a JSON object of metrics, got {type(data).__name__}")
    return data


def _numbers(data: dict[str, Any]) -> dict[str, float]:
    found: dict[str, float] = {}
    nested = data.get("metrics")
    for source in (data, nested if isinstance(nested, dict) else {}):
        for key, value in source.items():
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if is_number and key not in _NOT_METRICS and not key.startswith("num_"):
                found.setdefault(key, float(value))
    return found


def compare_runs(
    paths: Sequence[str | Path], out: Path | None = None, names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Gather runs into rows and columns; with ``out``, write ``compare.json`` and ``compare.html`` there.

    Args:
        paths: run folders (or ``metrics.json`` files).
        out: report folder, or ``None`` to write nothing.
        names: row names (default: each folder's name).

    Returns:
        ``{"columns": [...], "rows": [{"name", "model", "task", "path", <metric>: value, ...}], "best": {...}}``.
    """
    if out is not None:
        check_output_dir(out)
    if not paths:
        raise DataError("compare: give at least one run folder")
    if names is not None and len(names) != len(paths):
        raise DataError(f"compare: {len(names)} names for {len(paths)} runs")
    rows: list[dict[str, Any]] = []
    numbers: list[dict[str, float]] = []
    for i, path in enumerate(paths):
        data = load_metrics(path)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        model = data.get("model") or data.get("kind") or data.get("name") or ""
        rows.append(
            {
                "name": names[i] if names else folder.name or str(path),
                "model": str(model),
                "task": str(data.get("task", "")),
                "path": str(path),
            }
        )
        numbers.append(_numbers(data))
    present = {key for n in numbers for key in n}
    columns = [m for m in KNOWN_METRICS if m in present] + sorted(present - set(KNOWN_METRICS))
    best: dict[str, float] = {}
    for column in columns:
        values = [n[column] for n in numbers if column in n and math.isfinite(n[column])]
        if values:
            best[column] = min(values) if lower_is_better(column) else max(values)
    for row, n in zip(rows, numbers):
        row.update({c: n[c] for c in columns if c in n})
    report = {"columns": columns, "rows": rows, "best": best}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "compare.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(out / "compare.html", render_html(report))
    return report


def format_value(value: float | None) -> str:
    """Four decimals below 10 (scores), two above (perplexities, seconds)."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"


def render_html(report: dict[str, Any]) -> str:
    """A standalone HTML page with the table; the best value of each column in bold."""
    columns = report["columns"]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", "model", "task", *columns])
    body = []
    for row in report["rows"]:
        cells = [f"<td>{html.escape(str(row[k]))}</td>" for k in ("name", "model", "task")]
        for column in columns:
            value = row.get(column)
            text = html.escape(format_value(value))
            is_best = value is not None and report["best"].get(column) == value
            cells.append(f"<td class='num'>{'<b>' + text + '</b>' if is_best else text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    arrows = ", ".join(f"{c} {'↓' if lower_is_better(c) else '↑'}" for c in columns)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lmforge compare</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "th,td{border:1px solid #ccc;padding:4px 8px}td.num{text-align:right;font-variant-numeric:tabular-nums}"
        "</style></head><body><h1>Runs compared</h1>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<p>Best value in bold ({html.escape(arrows)}).</p></body></html>\n"
    )
