"""``lmforge baseline`` (a classic baseline run) and ``lmforge [baseline] compare`` (runs side by side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from lmforge.cli.options import console, err_console, int_pair
from lmforge.errors import LmforgeError


def baseline_cmd(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help="tfidf-lr|tfidf-nb|tfidf-svm|word2vec-lr|glove-lr|textcnn|bilstm|ngram-kn|ngram-wb|bilstm-tagger",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="Training CSV/TSV/JSONL (CoNLL for the tagger, text for n-grams) or asset."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder: metrics.json, summary.html (+ logits.npz, PNGs).")
    ] = None,
    test: Annotated[
        str | None,
        typer.Option("--test", help="Test file or asset split (default: asset test split / hash split)."),
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="Text column / field.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Label column / field.")] = "label",
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Hash-split share without --test.")
    ] = 0.1,
    on_error: Annotated[
        str, typer.Option("--on-error", help="raise, or skip (and count) bad rows.")
    ] = "raise",
    tokens: Annotated[
        str, typer.Option("--tokens", help="auto|char|word|jieba tokens (non-TF-IDF kinds).")
    ] = "auto",
    analyzer: Annotated[
        str, typer.Option("--analyzer", help="TF-IDF: auto|word|char|char_wb|word+char.")
    ] = "auto",
    word_ngrams: Annotated[str, typer.Option("--word-ngrams", help="TF-IDF word n-gram range.")] = "1,2",
    char_ngrams: Annotated[str, typer.Option("--char-ngrams", help="TF-IDF character n-gram range.")] = "1,3",
    max_features: Annotated[int | None, typer.Option("--max-features", help="TF-IDF vocabulary cap.")] = None,
    c: Annotated[float, typer.Option("--c", help="Inverse regularisation of LR / SVM.")] = 1.0,
    order: Annotated[int, typer.Option("--order", help="n of the n-gram LM.")] = 3,
    discount: Annotated[
        float | None, typer.Option("--discount", help="Fixed Kneser-Ney discount (default: modified KN).")
    ] = None,
    min_count: Annotated[int, typer.Option("--min-count", help="Rarer tokens become <unk>.")] = 1,
    embed_dim: Annotated[int, typer.Option("--embed-dim", help="Embedding size.")] = 100,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Training epochs (default per kind).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Neural kinds: examples per step.")] = 64,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default per kind).")] = None,
    max_length: Annotated[int, typer.Option("--max-length", help="Neural kinds: tokens per example.")] = 256,
    threads: Annotated[
        int | None, typer.Option("--threads", help="torch threads (1 is fastest on a busy CPU).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice.")] = 0,
) -> None:
    """Train a classic baseline and write OUT/metrics.json (accuracy/macro_f1, perplexity or entity_f1)."""
    if ctx.invoked_subcommand is not None:
        return
    if kind is None or data is None or out is None:
        raise LmforgeError(
            "lmforge baseline: --kind, --data and --out are required (or: lmforge baseline compare)"
        )
    from lmforge.baselines.compare import TASK_HEADLINE_METRICS
    from lmforge.baselines.runner import BaselineConfig, run_baseline

    config = BaselineConfig(
        kind=kind, data=data, out=out, test=test, text_column=text_column, label_column=label_column,
        test_fraction=test_fraction, on_error=on_error, tokens=tokens, analyzer=analyzer,
        word_ngrams=int_pair(word_ngrams, "--word-ngrams"), char_ngrams=int_pair(char_ngrams, "--char-ngrams"),
        max_features=max_features, c=c, order=order, discount=discount, min_count=min_count,
        embed_dim=embed_dim, epochs=epochs, batch_size=batch_size, lr=lr, max_length=max_length,
        threads=threads, seed=seed,
    )  # fmt: skip
    metrics = run_baseline(config, progress=lambda line: err_console.print(line, highlight=False))
    shown = [*TASK_HEADLINE_METRICS[metrics["task"]], "train_seconds"]
    console.print(
        f"{kind}: "
        + ", ".join(f"{k} {metrics[k]:.4f}" for k in shown)
        + f" -> [bold]{out / 'metrics.json'}[/bold]"
    )


def compare_cmd(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders (or metrics.json files) to put side by side.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder: compare.json and compare.html.")
    ] = None,
    names: Annotated[str | None, typer.Option("--names", help="Comma-separated row names.")] = None,
) -> None:
    """One table of several runs' metrics (baselines and transformers): rich, JSON and HTML."""
    from lmforge.baselines.compare import HEADLINE_METRICS, compare_runs, format_value, lower_is_better

    report = compare_runs(runs, out, names.split(",") if names else None)
    rows, best = report["rows"], report["best"]
    # The terminal gets the headline metrics; compare.json / compare.html have every column.
    columns = [c for c in report["columns"] if c in HEADLINE_METRICS] or report["columns"]

    def cell(row: dict[str, Any], column: str) -> str:
        text = format_value(row.get(column))
        return (
            f"[bold]{text}[/bold]"
            if row.get(column) is not None and best.get(column) == row[column]
            else text
        )

    # Few runs and many metrics read better with one metric a line (terminals are narrow).
    if len(rows) <= len(columns):
        table = Table(
            "metric",
            *(r["name"] + (f"\n[dim]{r['model']}[/dim]" if r["model"] != r["name"] else "") for r in rows),
        )
        for column in columns:
            table.add_row(
                f"{column} {'↓' if lower_is_better(column) else '↑'}", *(cell(r, column) for r in rows)
            )
    else:
        # Only the label columns that tell runs apart.
        labels = [k for k in ("model", "task") if any(r[k] not in ("", r["name"]) for r in rows)]
        if len({r["task"] for r in rows}) == 1:
            labels = [k for k in labels if k != "task"]
        table = Table("run", *labels, *columns, title=", ".join(sorted({r["task"] for r in rows} - {""})))
        for row in rows:
            table.add_row(row["name"], *(row[k] for k in labels), *(cell(row, c) for c in columns))
    console.print(table)
    if out is not None:
        console.print(f"wrote [bold]{out / 'compare.json'}[/bold] and [bold]{out / 'compare.html'}[/bold]")
