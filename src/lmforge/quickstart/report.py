"""``OUT/report.html``: one self-contained page (figures embedded as base64, no external files) of
what the quickstart did: data and splits, loss curves, the test metric table (baseline, both
fine-tuned models, the calibrated one, the prompted LM, the compressed model), reliability
diagrams before and after calibration, ROC and confusion matrix, compression, timings, versions,
and how to serve the calibrated model."""

from __future__ import annotations

import base64
import html
import json
import platform
from pathlib import Path
from typing import Any

from lmforge.fileio import atomic_write_text
from lmforge.quickstart.plan import Plan, QuickstartConfig

__all__ = ["REPORT_NAME", "metric_rows", "serve_commands", "write_report"]

REPORT_NAME = "report.html"
_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
    "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}"
    "td:first-child,th:first-child{text-align:left}figure{display:inline-block;margin:6px;vertical-align:top}"
    "img{max-width:360px}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}small{color:#666}"
)


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return _esc(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(path: Path, caption: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{_esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _floor(row: dict[str, Any]) -> str:
    floor = row.get("ece_floor")
    if not floor:
        return "–"
    return f"{floor['mean']:.4f} [{floor['low']:.4f}, {floor['high']:.4f}]"


def metric_rows(stages: dict[str, Any]) -> list[dict[str, Any]]:
    """The test-split metric table: one row per model / probability source."""
    s = {name: entry["summary"] for name, entry in stages.items()}
    rows: list[dict[str, Any]] = [{"model": "TF-IDF + logistic regression", **s["baseline"]}]
    best = s["evaluate"]["best"]
    for key, name in (
        ("tiny", "tiny model pretrained here, fine-tuned"),
        ("minilm", "MiniLM-L6, fine-tuned"),
    ):
        rows.append(
            {
                "model": name + (" (chosen on validation)" if key == best else ""),
                **s["evaluate"][f"{key}-test"],
            }
        )
    for method, row in s["calibrate"]["rows"].items():
        if method != "uncalibrated":
            rows.append({"model": f"{best} + {method} calibration (fit on validation)", **row})
    for row in s["prompt"]["rows"]:
        label = {"none": "uncalibrated", "contextual": "contextual calibration", "batch": "batch calibration"}
        rows.append(
            {"model": f"SmolLM2-135M prompted, {row['shots']}-shot, {label[row['calibration']]}", **row}
        )
    compressed = (s["compress"].get("calibration") or {}).get("after")
    if compressed:
        rows.append({"model": f"{best} int8", **compressed["raw"]})
        rows.append({"model": f"{best} int8 + temperature (refit)", **compressed["recalibrated"]})
    return rows


def serve_commands(out: Path) -> tuple[str, str]:
    """The ``lmforge serve`` command for the calibrated classifier and a ``curl`` line for it."""
    state = json.loads((out / "stages.json").read_text(encoding="utf-8"))
    best = state["stages"]["evaluate"]["summary"]["best"]
    model = out / f"finetune-{best}"
    serve = f"lmforge serve {model} --port 8000"
    text = (
        "这家酒店的服务很好，房间也很干净。"
        if state["plan"]["lang"] == "zh"
        else "A warm, funny and moving film."
    )
    body = json.dumps({"model": model.name, "input": [text]}, ensure_ascii=False)
    curl = f"curl -s http://127.0.0.1:8000/v1/classify -H 'Content-Type: application/json' -d '{body}'"
    return serve, curl


def _versions(plan: Plan) -> list[list[Any]]:
    import numpy
    import sklearn
    import tokenizers
    import torch

    from lmforge.assets import check_asset
    from lmforge.version import __version__

    rows: list[list[Any]] = [
        ["lmforge", __version__], ["torch", torch.__version__], ["tokenizers", tokenizers.__version__],
        ["scikit-learn", sklearn.__version__], ["numpy", numpy.__version__], ["python", platform.python_version()],
    ]  # fmt: skip
    assets = ["minilm-l6", "smollm2-135m-instruct", plan.dataset, *plan.corpus]
    for name in dict.fromkeys(assets):
        status = check_asset(name)
        rows.append([f"asset {name}", f"{status['package']} {status['installed_version']}"])
    return rows


def _machine() -> str:
    from lmforge.runtime import machine_info

    info = machine_info()
    bf16 = "native bf16" if info["native_bf16"] else "no native bf16"
    return f"{info['cpu']}, {info['torch_threads']} torch threads, ISA {info['cpu_capability']} ({bf16})"


def write_report(out: Path, config: QuickstartConfig, plan: Plan, stages: dict[str, Any]) -> Path:
    """Write ``out/report.html`` from the stage summaries and the files the stages wrote."""
    s = {name: entry["summary"] for name, entry in stages.items()}
    best = s["evaluate"]["best"]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>lmforge quickstart</title><style>{_CSS}"
        f"</style></head><body><h1>lmforge quickstart ({_esc(plan.lang)}{', fast' if config.fast else ''})</h1>",
        f"<p>{_esc(plan.dataset)} sentiment, two classes; machine: {_esc(_machine())}.</p>",
        "<h2>Data</h2>",
        _table(
            ["split", "examples", *plan.labels, "median characters"],
            [
                [name, v["examples"], *v["label_counts"].values(), v["median_chars"]]
                for name, v in s["data"]["splits"].items()
            ],
        ),
        f"<p>Pretraining corpus: {_esc(', '.join(s['data']['corpus']['sources']))}: "
        f"{s['data']['corpus']['lines']:,} lines, {s['data']['corpus']['characters']:,} characters; "
        f"{_esc(s['tokenizer']['kind'])} tokenizer ({_esc(s['tokenizer']['family'])} specials), vocabulary "
        f"{s['tokenizer']['vocab_size']:,}; "
        + ", ".join(f"{k} {v['tokens']:,} tokens" for k, v in s["tokenizer"]["splits"].items())
        + ".</p>",
        "<h2>Pretraining and fine-tuning</h2>",
        _table(
            ["run", "steps", "speed", "result"],
            [
                [
                    "pretrain ("
                    + ("MLM + whole-word masking + NSP" if plan.lang == "zh" else "causal LM")
                    + ")",
                    s["pretrain"]["steps"],
                    f"{s['pretrain']['tokens_per_second'] or 0:,.0f} tokens/s",
                    f"val loss {s['pretrain']['final_val_loss'] or float('nan'):.3f}, perplexity "
                    f"{s['pretrain']['val_perplexity'] or float('nan'):.1f}",
                ],
                *[
                    [
                        f"fine-tune {k}",
                        s[f"finetune-{k}"]["steps"],
                        f"{s[f'finetune-{k}']['examples_per_second'] or 0:.1f} examples/s",
                        f"best validation accuracy {s[f'finetune-{k}']['validation_accuracy'] or float('nan'):.4f} "
                        f"(step {s[f'finetune-{k}']['best_step']})",
                    ]
                    for k in ("tiny", "minilm")
                ],
            ],
        ),  # fmt: skip
        _figure(out / "eval" / "tiny-test" / "learning_curves.png", "tiny model: fine-tuning curves"),
        _figure(out / "eval" / "minilm-test" / "learning_curves.png", "MiniLM: fine-tuning curves"),
        _figure(out / "pretrain" / "learning_curves.png", "pretraining curves"),
        "<h2>Test metrics</h2><p>ECE with 15 bins; <i>ECE if calibrated</i> is the ECE a perfectly "
        "calibrated model with the same probabilities would show on as many examples (mean and 95% range): "
        "a measured ECE inside it cannot be told from perfect calibration on this split.</p>",
        _table(
            ["model", "examples", "accuracy", "macro-F1", "ECE", "ECE if calibrated", "NLL"],
            [
                [
                    r["model"],
                    r.get("examples"),
                    r["accuracy"],
                    r.get("macro_f1"),
                    r["ece"],
                    _floor(r),
                    r["nll"],
                ]
                for r in metric_rows(stages)
            ],
        ),
        f"<h2>Calibration of the chosen model ({_esc(best)})</h2>"
        f"<p>Saved into the classifier: <b>{_esc(s['calibrate']['saved'])}</b> "
        "(lmforge.load(classifier).predict_proba returns calibrated probabilities).</p>",
        *[
            _figure(out / "calibration" / f"reliability_{name}.png", f"reliability: {name}")
            for name in ("before", "temperature", "isotonic", "histogram")
        ],
        f"<h2>ROC and confusion matrix ({_esc(best)}, test)</h2>",
        _figure(out / "eval" / f"{best}-test" / "roc_curve.png", "ROC curve"),
        _figure(out / "eval" / f"{best}-test" / "confusion_matrix.png", "confusion matrix"),
        _compression(s["compress"]),
        "<h2>Timings</h2>",
        _table(
            ["stage", "seconds", "reused from an earlier run"],
            [[name, float(e["seconds"]), e.get("reused", False)] for name, e in stages.items()]
            + [["total", float(sum(e["seconds"] for e in stages.values())), ""]],
        ),
        "<h2>Versions</h2>",
        _table(["component", "version"], _versions(plan)),
        "<h2>Serve the calibrated model</h2><pre>" + "\n".join(map(_esc, serve_commands(out))) + "</pre>",
        "</body></html>",
    ]
    return atomic_write_text(out / REPORT_NAME, "\n".join(p for p in parts if p))


def _compression(summary: dict[str, Any]) -> str:
    calibration = summary.get("calibration") or {}
    before, after = calibration.get("before", {}), calibration.get("after", {})
    speed = summary["examples_per_second"]
    rows = []
    for name, entry, size, rate in (
        ("float32", before, summary["file_bytes_before"], speed["before"]),
        ("int8 (dynamic)", after, summary["file_bytes_after"], speed["after"]),
    ):
        raw, recalibrated = entry.get("raw", {}), entry.get("recalibrated", {})
        rows.append(
            [name, (size or 0) / 2**20, rate, raw.get("accuracy"), raw.get("ece"), raw.get("nll"),
             recalibrated.get("ece"), entry.get("temperature")]
        )  # fmt: skip
    table = _table(
        [
            "weights",
            "file MiB",
            "test examples/s",
            "accuracy",
            "ECE",
            "NLL",
            "ECE recalibrated",
            "temperature",
        ],
        rows,
    )
    agreement = calibration.get("agreement")
    note = f"<p>Predictions agree on {agreement:.1%} of the test split.</p>" if agreement is not None else ""
    return f"<h2>Compression ({_esc(summary['model'])}, int8)</h2>{table}{note}"
