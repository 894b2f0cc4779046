"""Calibration reports: reliability diagrams, confidence histograms, before/after tables.

:func:`write_report` writes, atomically, into one folder:

* ``metrics.json``: ``{"method", "n_bins", "before": {...}, "after": {...}, "methods": {...},
  "ci": {...}, "ece_floor": {...}, "reliability": {...}, ...}`` (before/after hold ece, mce, nll,
  brier, accuracy and the extra metrics of :func:`calibration_summary`; ``ece_floor`` the ECE a
  perfectly calibrated model with the same probabilities would show, see
  :func:`~lmforge.metrics.calibration.ece_noise_floor`);
* ``reliability_<name>.png`` and ``confidence_<name>.png`` for ``before`` and every method;
* ``report.html``: the table and the figures, images embedded as base64 (one self-contained file).

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (Agg canvas) without pyplot, so no
global backend or figure state is touched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.fileio import atomic_write_bytes, atomic_write_text
from lmforge.metrics.calibration import (
    bootstrap_summary,
    calibration_summary,
    ece_noise_floor,
    reliability_bins,
)

TABLE_METRICS = ("accuracy", "ece", "mce", "nll", "brier", "ece_quantile", "classwise_ece", "ace", "auroc")


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def reliability_diagram(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, title: str = "") -> bytes:
    """PNG of a reliability diagram: per-bin accuracy bars vs the diagonal, the gap to the mean
    confidence shaded, bin counts printed on the bars and drawn in a panel below."""
    from matplotlib.figure import Figure

    bins = reliability_bins(probs, labels, n_bins)
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lefts = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    accs = [b["accuracy"] for b in bins]
    confs = [b["confidence"] for b in bins]
    top.bar(lefts, accs, width=widths, align="edge", color="#4C72B0", edgecolor="black", label="accuracy")
    top.bar(
        lefts,
        [c - a for a, c in zip(accs, confs)],
        bottom=accs,
        width=widths,
        align="edge",
        color="#DD8452",
        alpha=0.5,
        edgecolor="#DD8452",
        hatch="//",
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    for b in bins:
        x, y = (b["lower"] + b["upper"]) / 2, min(b["accuracy"], 0.92) + 0.02
        top.text(x, y, f"{int(b['count'])}", ha="center", fontsize=6, rotation=90)
    ece = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / len(labels)
    top.set_title(f"{title} (ECE {100 * ece:.2f}%)".strip())
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=7)
    bottom.bar(lefts, [b["count"] for b in bins], width=widths, align="edge", color="gray", edgecolor="black")
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("count")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    return _png(fig)


def confidence_histogram(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15, title: str = "") -> bytes:
    """PNG of the distribution of top-label confidence with lines at mean confidence and accuracy."""
    from matplotlib.figure import Figure

    confidence = probs.max(axis=1)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.hist(confidence, bins=np.linspace(0, 1, n_bins + 1).tolist(), color="#4C72B0", edgecolor="black")
    ax.axvline(
        float(confidence.mean()), color="#DD8452", linestyle="--", label=f"mean conf. {confidence.mean():.3f}"
    )
    ax.axvline(accuracy, color="black", linestyle=":", label=f"accuracy {accuracy:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _finite(value: Any) -> Any:
    """Replace NaN / inf by None recursively so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_metrics(
    labels: np.ndarray,
    before: np.ndarray,
    after: dict[str, np.ndarray],
    n_bins: int = 15,
    n_resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """The metrics.json content for uncalibrated probabilities ``before`` [N, C] and each method's
    calibrated probabilities ``after[name]`` [N, C] on the same labels [N].

    With several methods, ``method`` is ``"all"``, ``best`` the method with the lowest ECE and
    ``after`` its metrics; ``methods`` always holds every method's metrics.
    """
    methods = {name: calibration_summary(p, labels, n_bins) for name, p in after.items()}
    best = min(methods, key=lambda name: methods[name]["ece"])
    probs = {"before": before, **after}
    summaries = {"before": calibration_summary(before, labels, n_bins), **methods}
    return {
        "method": best if len(after) == 1 else "all",
        "n_bins": n_bins,
        "num_samples": int(labels.shape[0]),
        "num_classes": int(before.shape[1]),
        "before": summaries["before"],
        "after": methods[best],
        "best": best,
        "methods": methods,
        "ci": {
            name: {
                k: list(v) for k, v in bootstrap_summary(p, labels, n_bins, n_resamples, seed=seed).items()
            }
            for name, p in probs.items()
        },
        "ci_level": 0.95,
        # ECE of a perfectly calibrated model with the same probabilities on as many samples, and
        # the p-value of the measured ECE against it
        "ece_floor": {
            name: ece_noise_floor(p, n_bins, n_resamples, seed=seed, observed=summaries[name]["ece"])
            for name, p in probs.items()
        },
        "reliability": {name: reliability_bins(p, labels, n_bins) for name, p in probs.items()},
    }


def _table(metrics: dict[str, Any]) -> str:
    rows = [("before", metrics["before"])] + list(metrics["methods"].items())
    head = "".join(f"<th>{m}</th>" for m in TABLE_METRICS) + "<th>ECE if calibrated</th>"
    body = []
    for name, values in rows:
        cells = []
        for m in TABLE_METRICS:
            value = values.get(m)
            text = "–" if value is None else f"{value:.4f}"
            ci = metrics["ci"].get(name, {}).get(m)
            if ci and ci[0] is not None:
                text += f"<br><small>[{ci[0]:.4f}, {ci[1]:.4f}]</small>"
            cells.append(f"<td>{text}</td>")
        floor = metrics.get("ece_floor", {}).get(name)
        if floor:
            p_value = f"; p = {floor['p_value']:.3f}" if "p_value" in floor else ""
            cells.append(
                f"<td>{floor['mean']:.4f}<br><small>[{floor['low']:.4f}, {floor['high']:.4f}]{p_value}</small></td>"
            )
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>probabilities</th>{head}</tr>{''.join(body)}</table>"


def write_report(
    out_dir: str | Path,
    labels: np.ndarray,
    before: np.ndarray,
    after: dict[str, np.ndarray],
    n_bins: int = 15,
    extra: dict[str, Any] | None = None,
    n_resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Write metrics.json, the figures and report.html into ``out_dir``; returns the metrics.

    Args:
        out_dir: output folder (created).
        labels: [N] labels of the evaluation set.
        before: [N, C] uncalibrated probabilities.
        after: method name -> [N, C] calibrated probabilities.
        n_bins: bins of ECE / MCE and the diagrams.
        extra: more fields for metrics.json (input files, fitted parameters, ...).
        n_resamples: bootstrap resamples of the 95% confidence intervals.
        seed: bootstrap seed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**build_metrics(labels, before, after, n_bins, n_resamples, seed), **(extra or {})}
    figures: list[tuple[str, str]] = []
    for name, p in {"before": before, **after}.items():
        label = "uncalibrated" if name == "before" else name
        for kind, draw in (("reliability", reliability_diagram), ("confidence", confidence_histogram)):
            png = draw(p, labels, n_bins, f"{kind}: {label}")
            file = f"{kind}_{name}.png"
            atomic_write_bytes(out / file, png)
            figures.append((file, base64.b64encode(png).decode("ascii")))
    metrics["figures"] = [file for file, _ in figures]
    atomic_write_text(out / "metrics.json", json.dumps(_finite(metrics), indent=2, allow_nan=False) + "\n")
    images = "".join(
        f'<figure><img alt="{html.escape(file)}" src="data:image/png;base64,{data}"><figcaption>{html.escape(file)}'
        "</figcaption></figure>"
        for file, data in figures
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>lmforge calibration report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}figure{display:inline-block;margin:8px}img{max-width:420px}</style>"
        f"</head><body><h1>Calibration report: {html.escape(str(metrics['method']))}</h1>"
        f"<p>{metrics['num_samples']} evaluation samples, {metrics['num_classes']} classes, {n_bins} bins; "
        "brackets: bootstrap 95% confidence intervals. <i>ECE if calibrated</i>: the ECE that a perfectly "
        "calibrated model with the same probabilities would show on this many samples (labels drawn from "
        "the probabilities; its 95% range): a measured ECE inside it is sampling noise. Best by ECE: "
        f"<b>{html.escape(metrics['best'])}</b>.</p>{_table(metrics)}{images}</body></html>\n"
    )
    atomic_write_text(out / "report.html", page)
    return metrics
