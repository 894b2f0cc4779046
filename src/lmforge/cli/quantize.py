"""``lmforge quantize``: post-training quantization of a model into a new checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lmforge.cli.compression import (
    EvalDataOption,
    EvalLimitOption,
    EvalSplitOption,
    FitDataOption,
    FitSplitOption,
    eval_data,
    print_report,
)
from lmforge.cli.options import ThreadsOption, comma_list


def quantize_cmd(
    model: Annotated[str, typer.Argument(help="Model to quantize (checkpoint dir, asset, .gguf ...).")],
    method: Annotated[
        str, typer.Option("--method", help="int8 (dynamic, CPU encoders) | int8-wo | int4-wo | gptq-int4.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory to write.")],
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="int4 methods: columns per scale (32, 64, 128; 64).")
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            "--calibration", help="gptq-int4: calibration text files or corpus assets (comma-separated)."
        ),
    ] = None,
    calibration_samples: Annotated[
        int, typer.Option("--calibration-samples", help="gptq-int4: calibration sequences.")
    ] = 32,
    calibration_length: Annotated[
        int, typer.Option("--calibration-length", help="gptq-int4: tokens per sequence.")
    ] = 256,
    damp: Annotated[float, typer.Option("--damp", help="gptq-int4: Hessian damping.")] = 0.01,
    keep_embeddings: Annotated[
        bool, typer.Option("--keep-embeddings", help="int8: leave the token table in float.")
    ] = False,
    eval_data_: EvalDataOption = None,
    eval_split: EvalSplitOption = "test",
    fit_data: FitDataOption = None,
    fit_split: FitSplitOption = "validation",
    eval_limit: EvalLimitOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Quantize a model's linear layers (int8 dynamic, int8 / int4 weight-only, GPTQ int4) into a
    checkpoint that lmforge.load, evaluate and calibrate read."""
    from lmforge.compress import QuantizeConfig, quantize

    config = QuantizeConfig(
        method, group_size, not keep_embeddings, tuple(comma_list(calibration)), calibration_samples,
        calibration_length, damp, threads,
    )  # fmt: skip
    evaluation = eval_data(eval_data_, eval_split, fit_data, fit_split, eval_limit)
    report = quantize(model, out, config, evaluation)
    print_report(report, out)
