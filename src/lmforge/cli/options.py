"""What the verbs share: the consoles, option types used by several verbs, and flag parsing.

Everything here turns command-line text into Python values; the work itself lives in the stage
packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from lmforge.errors import LmforgeError

console = Console()
err_console = Console(stderr=True)

# Options several verbs share (finetune, tune, prune, distill, ...).
ModelOption = Annotated[
    str, typer.Option("--model", help="Checkpoint dir, transformers dir or asset (minilm-l6).")
]
TextColumnOption = Annotated[str, typer.Option("--text-column")]
LabelColumnOption = Annotated[str, typer.Option("--label-column")]
TextPairColumnOption = Annotated[str | None, typer.Option("--text-pair-column")]
OnErrorOption = Annotated[str, typer.Option("--on-error", help="raise | skip bad records.")]
LimitOption = Annotated[int | None, typer.Option("--limit", help="Read at most N training records.")]
MaxLengthOption = Annotated[int, typer.Option("--max-length")]
SeedOption = Annotated[int, typer.Option("--seed")]
ThreadsOption = Annotated[int | None, typer.Option("--threads")]
# `lmforge pretrain` and `lmforge finetune`: both run the training loop, which owns resume.
ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")]
PrecisionOption = Annotated[
    str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16: training-step autocast.")
]


def unescape(text: str) -> str:
    """Shell arguments cannot easily hold newlines: read a literal backslash-n as one."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def comma_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def int_pair(text: str, option: str) -> tuple[int, int]:
    """``"1,3"`` -> ``(1, 3)`` for an n-gram range option."""
    try:
        low, high = (int(part) for part in text.split(","))
    except ValueError:
        raise LmforgeError(f"{option} {text!r}: give two integers such as 1,3") from None
    return low, high


def field_overrides(items: list[str] | None) -> dict[str, Any]:
    """``FIELD=VALUE`` arguments as a dict, values read as YAML (``2`` -> 2, ``true`` -> True)."""
    import yaml

    fields: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LmforgeError(f"override {item!r}: use FIELD=VALUE, e.g. hidden_size=128")
        fields[key.strip()] = yaml.safe_load(value)
    return fields


def task_data_config(
    text_column: str, label_column: str, text_pair_column: str | None, on_error: str, limit: int | None
) -> Any:
    """The :class:`~lmforge.data.TaskDataConfig` of the column and error-handling options."""
    from lmforge.data import TaskDataConfig

    if on_error not in ("raise", "skip"):
        raise typer.BadParameter("--on-error must be raise or skip")
    return TaskDataConfig(
        text_column=text_column, label_column=label_column, text_pair_column=text_pair_column,
        on_error=on_error, limit=limit,  # type: ignore[arg-type]
    )  # fmt: skip


def recipe_defaults(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """``--config RECIPE``: the recipe's keys become the command's defaults, so flags given override them."""
    if value is None:
        return value
    from lmforge.train.recipe import read_option_recipe

    known = {p.name for p in ctx.command.params if p.name and p.name != param.name}
    # Click fills every option not given on the command line from default_map; eager options
    # are processed first, so this lands before the others are read.
    ctx.default_map = {**(ctx.default_map or {}), **read_option_recipe(value, known)}
    return value


def augment_names(augment: str | None, augment_model: str | None) -> tuple[str, ...]:
    """--augment names; --augment-model alone means back-translation."""
    names = comma_list(augment)
    if augment_model and "backtranslation" not in names:
        names.append("backtranslation")
    return tuple(names)


def back_translators(augment_model: str | None, augment_prefixes: str | None) -> list[Any]:
    """The back-translation augmenter of --augment-model FWD[,BACK] and --augment-prefixes 'FWD|BACK'."""
    if not augment_model:
        return []
    from lmforge.generate.backtranslate import load_back_translator

    forward, _, backward = (augment_prefixes or "").partition("|")
    return [load_back_translator(comma_list(augment_model), unescape(forward), unescape(backward))]
