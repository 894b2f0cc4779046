"""``lmforge prompt``: zero/few-shot prompted classification over templates, shots and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.options import console, err_console, unescape
from lmforge.errors import LmforgeError


def prompt_cmd(
    model: Annotated[str, typer.Option("--model", help="Causal or masked LM: asset, checkpoint dir, .gguf.")],
    data: Annotated[str, typer.Option("--data", help="CSV file, or zh-sentiment / pang-lee-polarity.")],
    labels: Annotated[str, typer.Option("--labels", help="Label words in class order, or class=word pairs.")],
    template: Annotated[
        list[str],
        typer.Option("--template", help="Prompt with {text}, optionally {label}; repeat for several."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and prompt_results.png.")],
    text_column: Annotated[str, typer.Option("--text-column", help="CSV text column.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="CSV label column.")] = "label",
    shots: Annotated[str, typer.Option("--shots", help="Comma-separated demonstration counts.")] = "0",
    seeds: Annotated[int, typer.Option("--seeds", help="Demonstration draws per template and shots.")] = 5,
    calibration: Annotated[
        str,
        typer.Option(
            "--calibration", help="Comma-separated: none, contextual, batch, pmi, or a post-hoc method."
        ),
    ] = "none,contextual,batch",
    scoring: Annotated[str, typer.Option("--scoring", help="sum | mean | first over label tokens.")] = "sum",
    limit: Annotated[int | None, typer.Option("--limit", help="Test examples (first N of split).")] = None,
    instruction: Annotated[str, typer.Option("--instruction", help="Text before the demonstrations.")] = "",
    chat: Annotated[bool, typer.Option("--chat", help="Wrap prompts in the model's chat template.")] = False,
    balanced: Annotated[
        bool, typer.Option("--balanced/--unbalanced", help="Equal demonstrations per class.")
    ] = True,
    test_fraction: Annotated[float, typer.Option("--test-fraction", help="Test share (by text hash).")] = 0.5,
    fit_size: Annotated[int, typer.Option("--fit-size", help="Labelled examples for post-hoc methods.")] = 32,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Inputs per forward pass.")] = 16,
    max_text_chars: Annotated[
        int | None, typer.Option("--max-text-chars", help="Truncate texts to this many characters.")
    ] = None,
) -> None:
    """Zero/few-shot classification by label log-probability, with prompt calibration, over templates x seeds."""
    from lmforge.prompting import PromptRunConfig, run_prompt_protocol

    try:
        shot_counts = [int(s) for s in shots.split(",") if s.strip()]
    except ValueError:
        raise LmforgeError(f"--shots {shots!r}: give comma-separated integers such as 0,4") from None
    config = PromptRunConfig(
        model=model,
        data=data,
        templates=[unescape(t) for t in template],
        labels=labels,
        text_column=text_column,
        label_column=label_column,
        shots=shot_counts,
        seeds=seeds,
        calibration=[c.strip() for c in calibration.split(",") if c.strip()],
        scoring=scoring,  # type: ignore[arg-type]  # validated by PromptRunConfig.validate
        limit=limit,
        balanced=balanced,
        chat=chat,
        instruction=unescape(instruction),
        test_fraction=test_fraction,
        fit_size=fit_size,
        batch_size=batch_size,
        max_text_chars=max_text_chars,
    )
    results = run_prompt_protocol(config, out, progress=lambda line: err_console.print(line, highlight=False))
    table = Table("shots", "calibration", "accuracy", "macro-F1", "ECE", "rows", title=f"{data} · {model}")
    for row in results["aggregate"]:
        table.add_row(
            str(row["shots"]),
            row["calibration"],
            *(f"{row[m + '_mean']:.3f} ± {row[m + '_std']:.3f}" for m in ("accuracy", "macro_f1", "ece")),
            str(row["n"]),
        )
    console.print(table)
    console.print(f"wrote [bold]{out / 'results.json'}[/bold] and [bold]{out / 'prompt_results.png'}[/bold]")
