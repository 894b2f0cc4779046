"""``lmforge prune``: structured (heads, MLP neurons) or magnitude pruning, then a recovery fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.compression import print_report, report_data
from lmforge.cli.options import SeedOption, ThreadsOption, console, labelled_data, with_options

if TYPE_CHECKING:
    from lmforge.compress.report import EvalData
    from lmforge.data import TaskDataConfig


@with_options(data_config=labelled_data, evaluation=report_data)
def prune_cmd(
    model: Annotated[str, typer.Argument(help="Fine-tuned model to prune (checkpoint or run directory).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    heads: Annotated[
        float, typer.Option("--heads", help="Share of attention heads to remove (structured).")
    ] = 0.0,
    ffn: Annotated[float, typer.Option("--ffn", help="Share of MLP neurons to remove (structured).")] = 0.0,
    magnitude: Annotated[
        float, typer.Option("--magnitude", help="Share of block weights to zero (unstructured sparsity).")
    ] = 0.0,
    data: Annotated[
        str | None, typer.Option("--data", help="The model's training data: importance scores and recovery.")
    ] = None,
    scope: Annotated[
        str, typer.Option("--scope", help="global | layer: rank units over all layers or per layer.")
    ] = "global",
    schedule: Annotated[
        str, typer.Option("--schedule", help="--magnitude: oneshot | cubic (gradual during recovery).")
    ] = "oneshot",
    recovery_steps: Annotated[
        int, typer.Option("--recovery-steps", help="Fine-tuning steps after pruning.")
    ] = 0,
    importance_batches: Annotated[
        int, typer.Option("--importance-batches", help="Batches the head / neuron importance sums over.")
    ] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Recovery learning rate.")] = 5e-5,
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    *,
    data_config: TaskDataConfig,
    evaluation: EvalData | None,
) -> None:
    """Prune attention heads and MLP neurons (tensors really shrink) or individual weights
    (magnitude), then fine-tune briefly to recover; writes a checkpoint lmforge.load reads."""
    from lmforge.compress.prune import PruneConfig, prune

    config = PruneConfig(
        heads, ffn, magnitude, scope, schedule, data, data_config,
        importance_batches, recovery_steps, batch_size, lr, seed, threads,
    )  # fmt: skip
    report = prune(model, out, config, evaluation)
    if "parameters_after" in report:
        shown = f"parameters {report['parameters_before']:,} -> {report['parameters_after']:,}"
        if "sparsity" in report:
            shown += f", sparsity {report['sparsity']:.3f}"
        console.print(shown)
    print_report(report, out)
