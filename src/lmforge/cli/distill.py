"""``lmforge distill``: a smaller student trained on a fine-tuned teacher's soft targets (and hidden states)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lmforge.cli.compression import print_report, report_data
from lmforge.cli.options import SeedOption, ThreadsOption, console, labelled_data, with_options

if TYPE_CHECKING:
    from lmforge.compress.report import EvalData
    from lmforge.data import TaskDataConfig


@with_options(data_config=labelled_data, evaluation=report_data)
def distill_cmd(
    teacher: Annotated[
        str, typer.Option("--teacher", help="Fine-tuned teacher (checkpoint or run directory).")
    ],
    data: Annotated[
        str, typer.Option("--data", help="Training data of the teacher's task (file or named dataset).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint directory the student is written to.")],
    student: Annotated[
        str | None, typer.Option("--student", help="Student model (any reference; the teacher's vocabulary).")
    ] = None,
    student_layers: Annotated[
        int | None, typer.Option("--student-layers", help="Or: the teacher cut to N blocks.")
    ] = None,
    init: Annotated[
        str, typer.Option("--init", help="A cut student starts from: teacher (every L/N-th block) | random.")
    ] = "teacher",
    temperature: Annotated[float, typer.Option("--temperature", help="Soft-target temperature tau.")] = 2.0,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Weight of the soft-target KL (1 - alpha: the task loss).")
    ] = 0.5,
    hidden_weight: Annotated[
        float, typer.Option("--hidden-weight", help="Weight of the hidden-state MSE (TinyBERT).")
    ] = 0.0,
    attention_weight: Annotated[
        float, typer.Option("--attention-weight", help="Weight of the attention-score MSE (TinyBERT).")
    ] = 0.0,
    steps: Annotated[int, typer.Option("--steps")] = 200,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    *,
    data_config: TaskDataConfig,
    evaluation: EvalData | None,
) -> None:
    """Distill a fine-tuned teacher into a smaller student (soft-target KL at temperature tau,
    optional hidden-state and attention-map losses); writes the student as a checkpoint."""
    from lmforge.compress.distill import DistillConfig, distill

    config = DistillConfig(
        data, data_config, student, student_layers, init,
        temperature, alpha, hidden_weight, attention_weight, steps, batch_size, lr, seed, threads,
    )  # fmt: skip
    report = distill(teacher, out, config, evaluation)
    console.print(
        f"student {report['parameters_after']:,} parameters (teacher {report['parameters_before']:,}), "
        f"{report['run']['steps']} steps, last loss {report['run']['last'].get('loss', float('nan')):.4f}"
    )
    print_report(report, out)
