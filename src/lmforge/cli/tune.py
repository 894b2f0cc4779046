"""``lmforge tune``: a hyperparameter search over fine-tuning runs (Optuna)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.options import (
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    SeedOption,
    ThreadsOption,
    classification_data,
    console,
    with_options,
)

if TYPE_CHECKING:
    from lmforge.data import TaskDataConfig


@with_options(data_config=classification_data)
def tune_cmd(
    model: ModelOption,
    data: Annotated[str, typer.Option("--data", help="Training CSV/TSV/JSONL or named dataset.")],
    out: Annotated[
        Path, typer.Option("--out", help="Run directory: trials/, trials.json, tune.json, best.yaml.")
    ],
    task: Annotated[
        str, typer.Option("--task", help="classification | token-classification (metric entity_f1).")
    ] = "classification",
    validation: Annotated[
        str | None,
        typer.Option(
            "--validation", help="Validation file scoring each trial (named datasets: their split)."
        ),
    ] = None,
    sampler: Annotated[str, typer.Option("--sampler", help="tpe (Bayesian) | random.")] = "tpe",
    trials: Annotated[
        int, typer.Option("--trials", help="Finished trials the study should hold in all.")
    ] = 20,
    study_name: Annotated[str, typer.Option("--study-name")] = "lmforge-tune",
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL (default sqlite:///OUT/study.db).")
    ] = None,
    search_space: Annotated[
        Path | None, typer.Option("--search-space", help="YAML of ranges overriding the default space.")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Validation metric to optimise (default: the task's).")
    ] = None,
    pruner: Annotated[str, typer.Option("--pruner", help="median | none.")] = "median",
    max_length: MaxLengthOption = 128,
    class_weights: Annotated[str, typer.Option("--class-weights", help="none | balanced.")] = "none",
    resample: Annotated[str, typer.Option("--resample", help="none | oversample | undersample.")] = "none",
    keep_models: Annotated[
        bool, typer.Option("--keep-models", help="Keep every trial's weights (default: the best only).")
    ] = False,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    *,
    data_config: TaskDataConfig,
) -> None:
    """Search fine-tuning hyperparameters with Optuna (TPE or random, median pruning, resumable SQLite study)."""
    from lmforge.tasks import get_task
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.tune import TuneConfig, run_tune

    metric = metric or get_task(task).default_metric
    base = FinetuneConfig(
        task=task, max_length=max_length, class_weights=class_weights, resample=resample,  # type: ignore[arg-type]
        metric=metric, seed=seed, threads=threads, precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip
    tune = TuneConfig(
        trials=trials, sampler=sampler, study_name=study_name, storage=storage, pruner=pruner,  # type: ignore[arg-type]
        keep_models=keep_models, seed=seed,
    )  # fmt: skip
    summary = run_tune(model, data, out, base, tune, search_space, validation, data_config, log=console.print)
    best = summary["best"]
    if best is None:
        console.print(f"no trial finished; see [bold]{out / 'trials.json'}[/bold]")
        return
    console.print(
        f"best trial {best['number']}: {metric} {best['value']:.4f}  ({summary['states']}) -> "
        f"[bold]{out / 'best.yaml'}[/bold] (lmforge finetune --config {out / 'best.yaml'} --out RUN)"
    )
