"""``lmforge pretrain``: a recipe run through the pretraining loop (torchrun-ready)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.options import ResumeOption, console


def pretrain(
    config: Annotated[Path, typer.Option("--config", help="Recipe YAML (recipes/pretrain/NAME.yaml).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory: metrics, checkpoints, model, report.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="Token data from `lmforge data prepare` (else data.path).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Override max_steps.")] = None,
    resume: ResumeOption = False,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="With --resume, accept changed optimizer settings (optim.*), precision, device, distributed.",
        ),
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Recipe overrides such as optim.lr=3e-4 model.num_layers=2.")
    ] = None,
) -> None:
    """Pretrain a model (causal LM, masked LM + NSP/SOP, T5 span corruption); torchrun-ready."""
    from lmforge.fileio import check_output_dir
    from lmforge.train import load_config
    from lmforge.train import pretrain as run_pretraining
    from lmforge.train.validation import validate_train_config

    items = list(overrides or [])
    if max_steps is not None:
        items.append(f"max_steps={max_steps}")
    check_output_dir(out)
    recipe = validate_train_config(load_config(config, items), str(config))
    report = run_pretraining(recipe, out, data=data, resume=resume, allow_config_change=allow_config_change)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, one summary line
    if main_process and report.get("final_val_loss") is not None:
        speed = report.get("tokens_per_second")
        console.print(
            f"{report['steps']} steps, val loss {report['final_val_loss']:.4f}, perplexity "
            f"{report['val_perplexity']:.2f}, {f'{speed:,.0f}' if speed else 'n/a'} tokens/s -> [bold]{out}[/bold]"
        )
