"""``lmforge info`` and ``lmforge convert``: look at a model, or rewrite it in another layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.options import console
from lmforge.errors import LmforgeError


def info(
    model: Annotated[
        str, typer.Argument(help="Checkpoint dir, transformers dir, .gguf file, asset or preset name.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print a model's family, shapes, parameter count, dtype and memory."""
    from lmforge.models.info import model_info

    data = model_info(model)
    if as_json:
        print(json.dumps(data))
        return
    table = Table(title=f"{model}", show_header=False)
    for key, value in data.items():
        if key == "memory_bytes":
            value = f"{value / 2**20:,.1f} MiB"
        elif key == "num_parameters":
            value = f"{value:,}"
        table.add_row(key, str(value))
    console.print(table)


def convert(
    src: Annotated[str, typer.Argument(help="Model to read (any format `load` accepts).")],
    dst: Annotated[Path, typer.Argument(help="Directory to write.")],
    to: Annotated[str, typer.Option("--to", help="Output layout: hf or lmforge.")] = "lmforge",
) -> None:
    """Convert a model between lmforge, transformers and GGUF (read-only) layouts."""
    from lmforge.fileio import check_output_dir
    from lmforge.models.io.checkpoint import load, save
    from lmforge.models.io.hf import save_hf

    if to not in ("hf", "lmforge"):
        raise LmforgeError(f"--to must be 'hf' or 'lmforge', got {to!r}")
    check_output_dir(dst, "DST")
    bundle = load(src)
    writer = save_hf if to == "hf" else save
    writer(bundle.model, dst, bundle.tokenizer)
    console.print(f"wrote {to} model to [bold]{dst}[/bold]")
