"""``lmforge finetune``: fine-tune a pretrained model on a task (or cross-validate it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lmforge.cli.options import (
    MaxLengthOption,
    ModelOption,
    PrecisionOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    augment_names,
    back_translators,
    comma_list,
    console,
    recipe_defaults,
    task_data,
    with_options,
)
from lmforge.errors import ConfigError
from lmforge.fileio import check_output_dir

if TYPE_CHECKING:
    from lmforge.data import TaskDataConfig


@with_options(data_config=task_data)
def finetune_cmd(
    task: Annotated[
        str, typer.Option("--task", help="classification | token-classification | seq2seq | qa | lm | chat.")
    ],
    model: ModelOption,
    data: Annotated[
        str, typer.Option("--data", help="Training CSV/TSV/JSONL (CoNLL for NER) or named dataset.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory; lmforge.load(RUN) reads the model.")],
    validation: Annotated[
        str | None, typer.Option("--validation", help="Validation file (named datasets: their split).")
    ] = None,
    max_length: MaxLengthOption = 128,
    max_target_length: Annotated[
        int, typer.Option("--max-target-length", help="seq2seq: target tokens (and generated at most).")
    ] = 128,
    eval_limit: Annotated[
        int | None, typer.Option("--eval-limit", help="seq2seq: validation pairs decoded per evaluation.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    max_steps: Annotated[int | None, typer.Option("--max-steps")] = None,
    lr: Annotated[float, typer.Option("--lr")] = 5e-5,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    warmup_ratio: Annotated[float, typer.Option("--warmup-ratio")] = 0.06,
    schedule: Annotated[str, typer.Option("--schedule", help="linear | cosine | constant.")] = "linear",
    freeze: Annotated[str, typer.Option("--freeze", help="none | embeddings | body.")] = "none",
    freeze_layers: Annotated[int, typer.Option("--freeze-layers", help="Freeze the first K layers.")] = 0,
    layer_decay: Annotated[float, typer.Option("--layer-decay", help="Layer-wise LR decay (1 = off).")] = 1.0,
    class_weights: Annotated[str, typer.Option("--class-weights", help="none | balanced.")] = "none",
    resample: Annotated[
        str, typer.Option("--resample", help="none | oversample | undersample the training classes.")
    ] = "none",
    length_groups: Annotated[
        int, typer.Option("--length-groups", help="Length-sorted micro-batches per batch (1 = off).")
    ] = 4,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing")] = 0.0,
    lora_rank: Annotated[
        int, typer.Option("--lora-rank", help="> 0: train LoRA adapters (merged on save).")
    ] = 0,
    lora_alpha: Annotated[float, typer.Option("--lora-alpha")] = 16.0,
    lora_targets: Annotated[str, typer.Option("--lora-targets")] = "q_proj,v_proj",
    dropout: Annotated[float | None, typer.Option("--dropout")] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="Early-stopping metric (macro_f1 / entity_f1 default).")
    ] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", help="Early stop after N worse evals.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", help="Steps between evals (1 epoch).")
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option("--checkpoint-every", help="Steps between resumable checkpoints (each eval)."),
    ] = None,
    keep_last: Annotated[
        int, typer.Option("--keep-last", help="Checkpoints kept in RUN/checkpoints (0: none, no --resume).")
    ] = 2,
    resume: ResumeOption = False,
    allow_config_change: Annotated[
        bool,
        typer.Option(
            "--allow-config-change",
            help="With --resume, accept changed optimizer settings (--lr, schedule, warmup, layer decay), "
            "precision, length groups.",
        ),
    ] = False,
    cv: Annotated[
        int | None, typer.Option("--cv", help="Stratified K-fold cross-validation instead.")
    ] = None,
    precision: PrecisionOption = "auto",
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    augment: Annotated[
        str | None, typer.Option("--augment", help="Train-text augmentation: deletion,swap,backtranslation.")
    ] = None,
    augment_prob: Annotated[float, typer.Option("--augment-prob", help="Word deletion / swap rate.")] = 0.1,
    augment_copies: Annotated[int, typer.Option("--augment-copies", help="Augmented copies/example.")] = 1,
    augment_model: Annotated[
        str | None, typer.Option("--augment-model", help="Seq2seq model(s) FWD[,BACK]: back-translate.")
    ] = None,
    augment_prefixes: Annotated[
        str | None, typer.Option("--augment-prefixes", help="Back-translation input prefixes 'FWD|BACK'.")
    ] = None,
    doc_stride: Annotated[
        int, typer.Option("--doc-stride", help="qa: tokens shared by consecutive context windows.")
    ] = 32,
    max_query_length: Annotated[
        int, typer.Option("--max-query-length", help="qa: question tokens kept.")
    ] = 64,
    max_answer_length: Annotated[
        int, typer.Option("--max-answer-length", help="qa: longest predicted answer, in tokens.")
    ] = 30,
    null_threshold: Annotated[
        float, typer.Option("--null-threshold", help="qa (SQuAD v2): answer '' when null - span score > T.")
    ] = 0.0,
    recipe: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Recipe YAML of option values (e.g. `lmforge tune`'s best.yaml); flags override it.",
            is_eager=True,
            callback=recipe_defaults,
        ),
    ] = None,
    *,
    data_config: TaskDataConfig,
) -> None:
    """Fine-tune a pretrained model on a task: classification, NER, seq2seq (translation /
    summarization with an encoder-decoder), ... (or cross-validate with --cv)."""
    from lmforge.tasks import get_task
    from lmforge.tasks.qa import QAConfig
    from lmforge.train import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import run_cross_validation, run_finetune
    from lmforge.train.validation import validate_cross_validation, validate_finetune_config

    check_output_dir(out)
    chosen = get_task(task)  # an unknown task is an error naming the known ones
    optim = OptimConfig(lr=lr, weight_decay=weight_decay, schedule=schedule, min_lr_ratio=0.0)  # type: ignore[arg-type]
    config = FinetuneConfig(
        task=task, max_length=max_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps,  # type: ignore[arg-type]
        optim=optim, warmup_ratio=warmup_ratio, freeze=freeze, freeze_layers=freeze_layers,  # type: ignore[arg-type]
        layer_decay=layer_decay, class_weights=class_weights, label_smoothing=label_smoothing,  # type: ignore[arg-type]
        resample=resample, length_groups=length_groups,  # type: ignore[arg-type]
        lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_targets=tuple(comma_list(lora_targets)),
        eval_every=eval_every, checkpoint_every=checkpoint_every, keep_last=keep_last,
        metric=metric or chosen.default_metric,
        max_target_length=max_target_length, eval_limit=eval_limit,
        patience=patience, dropout=dropout, seed=seed, threads=threads, precision=precision,  # type: ignore[arg-type]
        augment=augment_names(augment, augment_model), augment_prob=augment_prob, augment_copies=augment_copies,
        qa=QAConfig(doc_stride=doc_stride, max_query_length=max_query_length,
                    max_answer_length=max_answer_length, null_threshold=null_threshold),
    )  # fmt: skip
    validate_finetune_config(config)
    if cv is not None:
        if resume:
            raise ConfigError("--resume continues one run; it does not apply to --cv")
        validate_cross_validation(cv)
        summary = run_cross_validation(model, data, out, config, cv, data_config)
        table = Table("metric", "mean", "std")
        for key, mean in summary["mean"].items():
            table.add_row(key, f"{mean:.4f}", f"{summary['std'][key]:.4f}")
        console.print(table)
        console.print(f"{cv}-fold cross-validation -> [bold]{out / 'cv.json'}[/bold]")
        return
    augmenters = back_translators(augment_model, augment_prefixes)
    report = run_finetune(
        model, data, out, config, validation, data_config, augmenters=augmenters, resume=resume,
        allow_config_change=allow_config_change,
    )  # fmt: skip
    best = report.get("best") or {}
    shown = "  ".join(
        f"{k} {best[k]:.4f}"
        for k in ("accuracy", "macro_f1", "entity_f1", "chrf", "bleu", "exact_match", "f1", "loss")
        if isinstance(best.get(k), float)
    )
    console.print(
        f"{report['steps']} steps, {report['examples_per_second'] or 0:.1f} examples/s"
        + (f", best (step {best['step']}): {shown}" if best else "")
        + f" -> [bold]{out}[/bold]"
    )
