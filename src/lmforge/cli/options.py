"""What the verbs share: the consoles, option types used by several verbs, and flag parsing.

Everything here turns command-line text into Python values; the work itself lives in the stage
packages.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.data import TaskDataConfig

_T = TypeVar("_T")

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
LimitOption = Annotated[int | None, typer.Option("--limit", help="Read at most N records.")]
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


def with_options(**groups: Callable[..., Any]) -> Callable[[Callable[..., _T]], Callable[..., _T]]:
    """Share a block of options between verbs, in the manner of FastAPI's ``Depends``.

    Each keyword names a keyword-only parameter of the decorated command and a *group*: a function
    whose own parameters are typer options. The group's options take that parameter's place in the
    signature typer reads (so ``--help`` lists them as the command's own), and the command receives
    what the group returns, built from the values given. A group may itself use groups.

    Example:
        >>> @with_options(data_config=labelled_data)  # doctest: +SKIP
        ... def prune_cmd(model: str, *, data_config: TaskDataConfig) -> None: ...
    """

    def decorate(command: Callable[..., _T]) -> Callable[..., _T]:
        parameters: list[inspect.Parameter] = []
        owned: dict[str, list[str]] = {}
        for parameter in _resolved_parameters(command, skip=groups):
            group = groups.get(parameter.name)
            if group is None:
                parameters.append(parameter)
                continue
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"{command.__name__}: {parameter.name} must be keyword-only (after *)")
            own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in _resolved_parameters(group)]
            owned[parameter.name] = [p.name for p in own]
            parameters.extend(own)

        @functools.wraps(command)
        def run(**values: Any) -> _T:
            for name, group in groups.items():
                values[name] = group(**{option: values.pop(option) for option in owned[name]})
            return command(**values)

        # typer reads __signature__ (inspect.signature stops there) and the resolved annotations.
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


def _resolved_parameters(
    function: Callable[..., Any], skip: dict[str, Any] | None = None
) -> list[inspect.Parameter]:
    """``function``'s parameters with string annotations (``from __future__ import annotations``)
    evaluated in its module; those in ``skip`` are kept as written (their types may exist only
    for type checkers)."""
    module_globals = getattr(function, "__globals__", {})
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        if isinstance(parameter.annotation, str) and parameter.name not in (skip or {}):
            parameter = parameter.replace(annotation=eval(parameter.annotation, module_globals))  # noqa: S307
        parameters.append(parameter)
    return parameters


def labelled_data(
    text_column: TextColumnOption = "text",
    label_column: LabelColumnOption = "label",
    limit: LimitOption = None,
) -> TaskDataConfig:
    """The options of a verb that reads classification data: text and label columns, ``--limit``."""
    from lmforge.data import TaskDataConfig

    return TaskDataConfig(text_column=text_column, label_column=label_column, limit=limit)


@with_options(config=labelled_data)
def classification_data(
    *,
    config: TaskDataConfig,
    text_pair_column: TextPairColumnOption = None,
    on_error: OnErrorOption = "raise",
) -> TaskDataConfig:
    """:func:`labelled_data` with sentence pairs and ``--on-error``."""
    if on_error not in ("raise", "skip"):
        raise typer.BadParameter("--on-error must be raise or skip")
    return replace(config, text_pair_column=text_pair_column, on_error=on_error)  # type: ignore[arg-type]


@with_options(config=classification_data)
def task_data(
    *,
    config: TaskDataConfig,
    source_column: Annotated[
        str | None, typer.Option("--source-column", help="seq2seq: source field (source / document).")
    ] = None,
    target_column: Annotated[
        str | None, typer.Option("--target-column", help="seq2seq: target field (target / summary).")
    ] = None,
) -> TaskDataConfig:
    """:func:`classification_data` with the seq2seq columns: the data options of every task."""
    return replace(config, source_column=source_column, target_column=target_column)


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
