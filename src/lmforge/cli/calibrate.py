"""``lmforge calibrate``: post-hoc calibrators fitted on logits, reported before and after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lmforge.cli.options import console


def calibrate_cmd(
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="temperature|vector|matrix|platt|isotonic|histogram|bbq, several comma-separated, or all",
        ),
    ],
    eval_file: Annotated[Path, typer.Option("--eval", help="Logits to evaluate on (.npz/.pt/.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder: metrics.json, PNGs, report.html.")],
    fit: Annotated[
        Path | None, typer.Option("--fit", help="Logits to fit on (validation split; .npz/.pt/.csv).")
    ] = None,
    bins: Annotated[int, typer.Option("--bins", help="Bins for ECE, diagrams and histogram binning.")] = 15,
    cv: Annotated[
        int | None, typer.Option("--cv", help="K-fold cross-validated fitting on --eval (no --fit).")
    ] = None,
    save_into: Annotated[
        Path | None, typer.Option("--save-into", help="Checkpoint dir to store the calibrator in.")
    ] = None,
    label_column: Annotated[
        str, typer.Option("--label-column", help="Label column of CSV inputs.")
    ] = "label",
    seed: Annotated[int, typer.Option("--seed", help="Seed of CV folds and bootstrap CIs.")] = 0,
) -> None:
    """Fit post-hoc calibrators on logits and report calibration before and after."""
    from lmforge.calibrate.pipeline import CalibrateConfig, run_calibration

    config = CalibrateConfig(method, eval_file, out, fit, bins, cv, save_into, label_column, seed)
    metrics = run_calibration(config)
    table = Table("probabilities", "accuracy", "ECE", "MCE", "NLL", "Brier", "ECE if calibrated (95%)", "p")
    for name, values in [("before", metrics["before"]), *metrics["methods"].items()]:
        floor = metrics["ece_floor"][name]
        table.add_row(
            name,
            *(f"{values[k]:.4f}" for k in ("accuracy", "ece", "mce", "nll", "brier")),
            f"{floor['mean']:.4f} [{floor['low']:.4f}, {floor['high']:.4f}]",
            f"{floor['p_value']:.3f}",
        )
    console.print(table)
    if "saved_into" in metrics:
        predictive = metrics.get("predictive")
        passes = (
            f" (on {predictive['mc_passes']} MC-dropout passes, which predict_proba repeats)"
            if predictive
            else ""
        )
        console.print(
            f"saved {metrics['saved_into']['method']} calibrator{passes} into [bold]{save_into}[/bold]"
        )
    console.print(f"report: [bold]{out / 'report.html'}[/bold]")
