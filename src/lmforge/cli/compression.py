"""What ``lmforge quantize``, ``prune`` and ``distill`` share: the report options and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from lmforge.cli.options import console

if TYPE_CHECKING:
    from lmforge.compress.report import EvalData


def report_data(
    eval_data: Annotated[
        str | None,
        typer.Option(
            "--eval-data",
            help="Classifiers: report accuracy / ECE / NLL before, after and recalibrated on this data "
            "(file or named dataset such as zh-sentiment), and save the recalibration with the model.",
        ),
    ] = None,
    eval_split: Annotated[
        str, typer.Option("--eval-split", help="Split of --eval-data reported on.")
    ] = "test",
    fit_data: Annotated[
        str | None,
        typer.Option("--fit-data", help="Data the recalibration is fitted on (default --eval-data)."),
    ] = None,
    fit_split: Annotated[
        str, typer.Option("--fit-split", help="Split the recalibration is fitted on.")
    ] = "validation",
    eval_limit: Annotated[
        int | None, typer.Option("--eval-limit", help="Read at most N examples per split.")
    ] = None,
) -> EvalData | None:
    """The report options (an option group, see :func:`~lmforge.cli.options.with_options`): the
    :class:`~lmforge.compress.report.EvalData` they name, ``None`` without ``--eval-data``."""
    from lmforge.compress.report import EvalData
    from lmforge.data import TaskDataConfig

    if eval_data is None:
        if fit_data is not None:
            raise typer.BadParameter("--fit-data needs --eval-data")
        return None
    return EvalData(eval_data, eval_split, fit_data, fit_split, TaskDataConfig(limit=eval_limit))


def print_report(report: dict[str, Any], out: Path) -> None:
    """Sizes, then the calibration table when there is one."""
    before, after = report.get("weight_bytes_before"), report.get("weight_bytes_after")
    sizes = f"weights {before / 2**20:,.1f} MiB -> {after / 2**20:,.1f} MiB, " if before and after else ""
    console.print(f"{sizes}file {report['file_bytes'] / 2**20:,.1f} MiB -> [bold]{out}[/bold]")
    calibration = report.get("calibration")
    if not calibration:
        return
    table = Table("model", "probabilities", "accuracy", "ECE", "ECE if calibrated (95%)", "NLL")
    for name in ("before", "after"):
        for kind in ("raw", "recalibrated"):
            m = calibration[name][kind]
            floor = m["ece_floor"]
            table.add_row(
                name, kind, f"{m['accuracy']:.4f}", f"{m['ece']:.4f}",
                f"{floor['mean']:.4f} [{floor['low']:.4f}, {floor['high']:.4f}]", f"{m['nll']:.4f}",
            )  # fmt: skip
    console.print(table)
    console.print(f"agreement with the model before: {calibration['agreement']:.4f}")
