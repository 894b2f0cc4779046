"""``lmforge init``: a freshly initialised model wired to a trained tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.options import console, field_overrides


def init_cmd(
    preset: Annotated[
        str, typer.Option("--preset", help="Model preset (bert-tiny, gpt2-124m, t5-tiny, ...).")
    ],
    tokenizer: Annotated[
        str,
        typer.Option(
            "--tokenizer", help="Tokenizer dir (lmforge tokenizer train), model dir, asset or gpt2-bpe."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint dir to write (lmforge.load reads it).")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Model config fields such as hidden_size=128 num_layers=2 head=causal_lm."),
    ] = None,
) -> None:
    """Write a freshly initialised model for a trained tokenizer (vocabulary and special ids wired),
    to fine-tune from scratch (e.g. a small T5 for `lmforge finetune --task seq2seq`)."""
    from lmforge.models.init import init_model

    model, config = init_model(preset, tokenizer, out, seed=seed, **field_overrides(overrides))
    console.print(
        f"{config.family} {preset}: {model.num_parameters():,} parameters, vocabulary {config.vocab_size:,} "
        f"-> [bold]{out}[/bold]"
    )
