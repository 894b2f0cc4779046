"""``lmforge quickstart``: the main job end to end on bundled data, with an HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.options import ThreadsOption, console, err_console


def quickstart(
    out: Annotated[Path, typer.Option("--out", help="Run directory (finished stages are reused).")] = Path(
        "runs/quickstart"
    ),
    lang: Annotated[
        str,
        typer.Option("--lang", help="zh: tiny BERT on zh-sentiment; en: tiny GPT-2 on pang-lee-polarity."),
    ] = "zh",
    fast: Annotated[bool, typer.Option("--fast", help="A one-to-two-minute smoke version.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: ThreadsOption = None,
) -> None:
    """Raw text to a calibrated, compressed classifier: train a tokenizer, pretrain a tiny model,
    fine-tune it and MiniLM, a TF-IDF baseline, evaluate, calibrate, prompt SmolLM2 zero/few-shot,
    quantize, and write OUT/report.html."""
    from lmforge.quickstart import QuickstartConfig, run_quickstart
    from lmforge.quickstart.report import metric_rows, serve_commands

    config = QuickstartConfig(out, lang, fast, seed, threads)  # type: ignore[arg-type]
    start = time.perf_counter()
    result = run_quickstart(config, progress=lambda line: err_console.print(line, highlight=False))
    table = Table("model (test split)", "accuracy", "ECE", "NLL")
    for row in metric_rows(result["stages"]):
        table.add_row(row["model"], f"{row['accuracy']:.3f}", f"{row['ece']:.3f}", f"{row['nll']:.3f}")
    console.print(table)
    serve, curl = serve_commands(out)
    console.print(f"report: [bold]{result['report']}[/bold] ({time.perf_counter() - start:.0f}s)")
    console.print("serve the calibrated classifier:", style="bold")
    console.print(serve, soft_wrap=True, highlight=False)
    console.print(curl, soft_wrap=True, highlight=False)
