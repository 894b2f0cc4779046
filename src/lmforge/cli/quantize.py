"""``lmforge quantize``: post-training quantization of a model into a new checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.compression import print_report, report_data
from lmforge.cli.options import ThreadsOption, comma_list, with_options

if TYPE_CHECKING:
    from lmforge.compress.report import EvalData


@with_options(evaluation=report_data)
def quantize_cmd(
    model: Annotated[str, typer.Argument(help="Model to quantize (checkpoint dir, asset, .gguf ...).")],
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="int8 (dynamic, CPU encoders) | int8-wo | int4-wo | gptq-int4 | gptq-int8; with "
            "--format gguf: q8_0 | q4_0 | q4_1 | f16 | f32.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory (or .gguf file) to write.")],
    output_format: Annotated[
        str, typer.Option("--format", help="lmforge (checkpoint directory) | gguf (one llama.cpp file).")
    ] = "lmforge",
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="int4 methods: columns per scale (32, 64, 128; 64).")
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            "--calibration", help="GPTQ methods: calibration text files or corpus assets (comma-separated)."
        ),
    ] = None,
    calibration_samples: Annotated[
        int, typer.Option("--calibration-samples", help="GPTQ: calibration sequences.")
    ] = 32,
    calibration_length: Annotated[
        int, typer.Option("--calibration-length", help="GPTQ: tokens per sequence.")
    ] = 256,
    damp: Annotated[float, typer.Option("--damp", help="GPTQ: Hessian damping.")] = 0.01,
    lm_head: Annotated[
        bool, typer.Option("--lm-head", help="Also quantize the LM head (decoders: faster decoding).")
    ] = False,
    keep_embeddings: Annotated[
        bool, typer.Option("--keep-embeddings", help="int8: leave the token table in float.")
    ] = False,
    threads: ThreadsOption = None,
    *,
    evaluation: EvalData | None,
) -> None:
    """Quantize a model's linear layers (int8 dynamic, int8 / int4 weight-only, GPTQ int4) into a
    checkpoint that lmforge.load, evaluate and calibrate read, or (--format gguf) into a llama.cpp GGUF
    file (Q8_0 / Q4_0 / Q4_1 / F16 / F32)."""
    from lmforge.compress import QuantizeConfig, quantize

    config = QuantizeConfig(
        method, group_size, embeddings=not keep_embeddings, calibration=tuple(comma_list(calibration)),
        lm_head=lm_head, calibration_samples=calibration_samples, calibration_length=calibration_length,
        damp=damp, threads=threads, format=output_format,
    )  # fmt: skip
    report = quantize(model, out, config, evaluation)
    print_report(report, out)
