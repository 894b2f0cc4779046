"""``lmforge evaluate``: a fine-tuned run on a split, with metrics, logits and plots written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.options import ThreadsOption, comma_list, console, task_data, with_options

if TYPE_CHECKING:
    from lmforge.data import TaskDataConfig


@with_options(data_config=task_data)
def evaluate_cmd(
    model: Annotated[
        str, typer.Option("--model", help="A fine-tuned run directory (lmforge finetune --out).")
    ],
    data: Annotated[str, typer.Option("--data", help="Test file or named dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Folder: metrics.json, logits.npz, PNGs, summary.html.")],
    split: Annotated[str, typer.Option("--split", help="Split of a named dataset.")] = "test",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    null_threshold: Annotated[
        float | None,
        typer.Option("--null-threshold", help="qa (SQuAD v2): override the run's no-answer threshold."),
    ] = None,
    ensemble: Annotated[
        str | None,
        typer.Option("--ensemble", help="Classifiers: more runs (comma-separated) averaged with --model."),
    ] = None,
    mc_dropout: Annotated[
        int, typer.Option("--mc-dropout", help="Classifiers: N stochastic passes with dropout on, averaged.")
    ] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the MC-dropout masks.")] = 0,
    threads: ThreadsOption = None,
    *,
    data_config: TaskDataConfig,
) -> None:
    """Run a fine-tuned model on a split; write metrics, raw logits/labels and plots
    (seq2seq: greedy predictions, BLEU / chrF ..., and predictions.jsonl). Classifiers can be
    evaluated as a deep ensemble (--ensemble) or with MC dropout (--mc-dropout N): logits.npz then
    holds the log of the averaged probabilities, uncertainty.npz the predictive entropy and
    mutual information."""
    from lmforge.api import evaluate_model

    result, metrics = evaluate_model(
        model, data, out, split=split, data_config=data_config, ensemble=comma_list(ensemble),
        mc_dropout=mc_dropout, batch_size=batch_size, null_threshold=null_threshold, seed=seed,
        threads=threads,
    )  # fmt: skip
    shown = "  ".join(
        f"{k} {metrics[k]:.4f}"
        for k in ("accuracy", "macro_f1", "entity_f1", "bleu", "chrf", "exact_match", "f1", "perplexity")
        if metrics.get(k) is not None
    )
    console.print(f"{result['source']}: {len(result['references'])} examples  {shown} -> [bold]{out}[/bold]")
