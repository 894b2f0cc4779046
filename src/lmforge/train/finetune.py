"""Supervised fine-tuning of a pretrained model on any task of :mod:`lmforge.tasks`, through the
one training loop (:mod:`lmforge.train.loop`).

:class:`FinetuneObjective` plugs a :class:`~lmforge.tasks.Task` into the loop: batches from the
task's :class:`~lmforge.tasks.ExampleSource` (length-grouped micro-batches where the task allows,
see :mod:`lmforge.train.length_groups`), the task's loss, and validation by the task's predictions
and metrics (:meth:`lmforge.tasks.Task.metrics` with ``validation=True``; a caller may pass another
``evaluator``). Fine-tuning adds to the loop: freezing (embeddings, the first ``k`` layers, or the
whole body), layer-wise learning-rate decay, LoRA, class weights, label smoothing, and early
stopping on a validation metric with the best weights kept in ``RUN/best/`` and finally written
to ``RUN`` (``lmforge.load(RUN)`` reads it). Checkpoints in ``RUN/checkpoints/`` let
``lmforge finetune --resume`` continue a run exactly (:mod:`lmforge.train.resume`).
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lmforge.errors import ConfigError
from lmforge.fileio import atomic_replace_dir, atomic_write_text, check_output_dir
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel, load, save, write_checkpoint
from lmforge.runtime import torch_threads
from lmforge.tasks import Task, TaskSplit, get_task
from lmforge.tasks.sources import TaskSource, to_tensors
from lmforge.tokenizers import Tokenizer
from lmforge.train.checkpoint import CHECKPOINTS
from lmforge.train.config import OptimConfig
from lmforge.train.distributed import Runtime
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.length_groups import length_grouped_batch
from lmforge.train.loop import EvalCallback, LoopSettings, MicroBatches, TrainingLoop, seed_everything
from lmforge.train.lora import apply_lora, merge_lora
from lmforge.train.precision import resolve_precision
from lmforge.train.resume import HISTORY, ResumePlan, finished_report
from lmforge.train.resume_rules import finetune_settings, plan_finetune_resume

__all__ = [
    "EvalCallback",
    "Evaluator",
    "FinetuneConfig",
    "FinetuneObjective",
    "TaskSplit",
    "default_evaluator",
    "finetune_model",
    "predict",
    "run_steps",
    "save_finetuned",
    "seed_everything",
    "split_fingerprint",
    "write_run_report",
]

#: ``evaluator(task, outputs, references, label_names) -> metrics``; outputs are logits [N, C]
#: (classification) or per-sentence predicted tag ids (token classification, word level).
Evaluator = Callable[[str, Any, Sequence[Any], Sequence[str]], dict[str, Any]]
#: What a fine-tuning run writes besides its model and report.json (kept when the model is swapped in).
RUN_FILES = ("metrics.jsonl", "finetune.json", HISTORY, CHECKPOINTS)


# -- model preparation ---------------------------------------------------------------------------


def _layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, ``i + 1`` for encoder layer ``i``, ``num_layers + 1`` for the rest (head)."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("stack.layers."):
        return int(name.split(".")[2]) + 1
    return num_layers + 1


def freeze_parameters(model: TransformerModel, freeze: str, freeze_layers: int) -> None:
    """Freeze embeddings, the body (all but the task head), and/or the first ``freeze_layers`` layers."""
    if freeze not in ("none", "embeddings", "body"):
        raise ConfigError(f"freeze={freeze!r}: use none, embeddings or body")
    layers = len(model.stack.layers)
    if freeze_layers > layers:
        raise ConfigError(f"freeze_layers={freeze_layers} but the model has {layers} layers")
    for name, param in model.named_parameters():
        depth = _layer_depth(name, layers)
        head = name.startswith(("classifier.", "pooler."))
        if (
            (freeze == "body" and not head)
            or (freeze == "embeddings" and depth == 0)
            or (1 <= depth <= freeze_layers)
        ):
            param.requires_grad_(False)


def layerwise_groups(
    model: nn.Module, config: OptimConfig, layer_decay: float, num_layers: int
) -> list[dict]:
    """Decay / no-decay groups per depth, each with an ``lr_scale`` of ``layer_decay**(top - depth)``.

    Same decay rule as :func:`lmforge.train.optim.parameter_groups` (matrices decay; biases,
    norms and embeddings do not); :func:`set_learning_rate` multiplies by ``lr_scale``.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    top = num_layers + 1
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or (id(param) in embedding_params and not config.decay_embeddings)
        groups.setdefault((_layer_depth(name, num_layers), no_decay), []).append(param)
    return [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else config.weight_decay,
            "name": "no_decay" if no_decay else "decay",
            "lr_scale": layer_decay ** (top - depth),
        }
        for (depth, no_decay), params in sorted(groups.items())
    ]


def build_finetune_optimizer(model: TransformerModel, config: FinetuneConfig) -> torch.optim.Optimizer:
    groups = layerwise_groups(model, config.optim, config.layer_decay, len(model.stack.layers))
    if not groups:
        raise ConfigError(
            "every parameter is frozen: nothing to fine-tune (check --freeze / --freeze-layers)"
        )
    if config.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=config.optim.lr, momentum=config.optim.momentum)
    # Fused AdamW: one kernel per parameter, much faster on CPU with many per-layer groups.
    return torch.optim.AdamW(
        groups, lr=config.optim.lr, betas=config.optim.betas, eps=config.optim.eps, fused=True
    )


def prepare_model(model: TransformerModel, config: FinetuneConfig) -> None:
    """Apply dropout override, freezing and LoRA to a freshly loaded model (in place)."""
    if config.dropout is not None:
        model.set_dropout(config.dropout)
    freeze_parameters(model, config.freeze, config.freeze_layers)
    if config.lora_rank > 0:
        trainable_head = {
            n
            for n, p in model.named_parameters()
            if p.requires_grad and n.startswith(("classifier.", "pooler."))
        }
        apply_lora(model, config.lora_targets, config.lora_rank, config.lora_alpha, config.lora_dropout)
        for name, param in model.named_parameters():
            if name in trainable_head or name.startswith("classifier."):
                param.requires_grad_(True)


def require_tokenizer(loaded: LoadedModel, model: str | Path) -> Tokenizer:
    """The tokenizer saved with ``loaded`` (``model`` names it in the error); fine-tuning needs one."""
    if loaded.tokenizer is None:
        raise ConfigError(f"{model}: no tokenizer saved with the model; fine-tuning needs one")
    return loaded.tokenizer


def _plain_model(model: TransformerModel) -> TransformerModel:
    """``model``, or a copy with its LoRA adapters merged into plain weights."""
    if not any(name.endswith("lora_a") for name, _ in model.named_parameters()):
        return model
    plain = copy.deepcopy(model)
    merge_lora(plain)
    return plain


def save_finetuned(model: TransformerModel, path: Path, tokenizer: Tokenizer | None) -> None:
    """Write an lmforge checkpoint to ``path``, swapped in whole (:func:`lmforge.save` is atomic);
    LoRA adapters merged into a copy."""
    save(_plain_model(model), path, tokenizer)


# -- prediction and metrics ----------------------------------------------------------------------


def predict(model: TransformerModel, split: TaskSplit, task: str, batch_size: int = 64) -> tuple[Any, float]:
    """Model outputs on a split and its mean loss (see :meth:`lmforge.tasks.Task.predict`).

    Returns:
        ``(outputs, loss)``: logits [N, C] float32 for classification; for token classification
        a list of per-sentence word-level predicted tag ids; for seq2seq the greedily decoded
        strings; for QA one answer per question; for lm / chat the summed NLL per example.
    """
    return get_task(task).predict(model, split, batch_size)


def default_evaluator(
    task: str, outputs: Any, references: Sequence[Any], label_names: Sequence[str]
) -> dict[str, Any]:
    """The task's validation metrics (:meth:`lmforge.tasks.Task.metrics`, ``validation=True``)."""
    metrics, _ = get_task(task).metrics(outputs, references, label_names, validation=True)
    return metrics


# -- the objective -------------------------------------------------------------------------------


class _LossStats(nn.Module):
    """A task's loss module as the loop takes it: ``(loss, stats)``, the stats being the loss."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        loss, _ = self.loss(batch)
        return loss, loss.detach().double().view(1)


class FinetuneObjective:
    """A fine-tuning task as the loop's :class:`~lmforge.train.loop.Objective`.

    Args:
        model: the model with the task's head, prepared (:func:`prepare_model`).
        tokenizer: saved with checkpoints and models.
        task: the task.
        train / validation: the tokenised splits.
        config: the run's settings.
        label_names: class or tag names in index order.
        evaluator: validation metrics.
    """

    num_stats = 1

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer | None,
        task: Task,
        train: TaskSplit,
        validation: TaskSplit | None,
        config: FinetuneConfig,
        label_names: Sequence[str],
        evaluator: Evaluator,
    ) -> None:
        self.model, self.tokenizer, self.task, self.config = model, tokenizer, task, config
        self.train, self.validation, self.label_names, self.evaluator = (
            train,
            validation,
            label_names,
            evaluator,
        )
        self.device = next(model.parameters()).device
        loss = task.loss(model, config.task_settings(), train, len(label_names))
        # The loss's class weights (computed once by the task) also weigh the length groups' shares.
        weights = getattr(loss, "class_weights", None)
        self.class_weights = weights.detach().cpu().numpy() if isinstance(weights, Tensor) else None
        self.module = _LossStats(loss).to(self.device)
        self.grouped = (
            config.length_groups > 1 and task.length_groups and isinstance(train.source, TaskSource)
        )

    def batches(self, step: int) -> tuple[MicroBatches, int | None]:
        config, source = self.config, self.train.source
        if self.grouped:  # length-sorted micro-batches, gradients accumulated (see length_groups)
            assert isinstance(source, TaskSource)
            parts = length_grouped_batch(
                source,
                step,
                config.batch_size,
                config.length_groups,
                self.task.target_key,
                self.class_weights,
            )
            return [(to_tensors(part, self.device), share) for part, share in parts], None
        return [(to_tensors(source.train_batch(step, config.batch_size), self.device), 1.0)], None

    def terms(self, stats: Tensor) -> dict[str, float]:
        return {"loss": float(stats[0])}

    def epoch(self, step: int) -> float:
        return self.train.source.epoch_of(step, self.config.batch_size)

    def validate(self, loop: TrainingLoop) -> dict[str, Any]:
        if self.validation is None:
            return {}
        config, validation = self.config, self.validation
        outputs, loss = predict(self.model, validation, config.task, max(config.batch_size, 32))
        return {"loss": loss, **self.evaluator(config.task, outputs, validation.references, self.label_names)}

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"val {self.config.metric} {float(metrics[self.config.metric]):.4f}  val loss {metrics['loss']:.4f}"

    def save_model(self, loop: TrainingLoop, path: Path) -> None:
        save_finetuned(self.model, path, self.tokenizer)


# -- the run -------------------------------------------------------------------------------------


def run_steps(config: FinetuneConfig, num_examples: int) -> tuple[int, int]:
    """``(max_steps, steps_per_epoch)`` of a run over ``num_examples`` training examples."""
    steps_per_epoch = math.ceil(num_examples / config.batch_size)
    return config.max_steps or max(1, int(round(config.epochs * steps_per_epoch))), steps_per_epoch


def split_fingerprint(
    train: TaskSplit, validation: TaskSplit | None, label_names: Sequence[str]
) -> dict[str, Any]:
    """What a resumed run compares of the data when the caller knows no more (tokenised splits)."""
    return {
        "data.examples": train.source.num_examples,
        "data.label_names": list(label_names),
        "data.validation_examples": None if validation is None else validation.source.num_examples,
    }


def finetune_model(
    model: TransformerModel,
    tokenizer: Tokenizer | None,
    train: TaskSplit,
    out_dir: str | Path,
    config: FinetuneConfig,
    label_names: Sequence[str],
    validation: TaskSplit | None = None,
    evaluator: Evaluator | None = None,
    on_evaluate: EvalCallback | None = None,
    *,
    resume: bool = False,
    allow_config_change: bool = False,
    run_settings: Mapping[str, Any] | None = None,
    plan: ResumePlan | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (already carrying its task head) and write the run directory.

    ``RUN/`` gets ``metrics.jsonl`` (train and eval records), ``finetune.json`` (the settings the
    run started with), ``history.jsonl``, ``checkpoints/`` (the newest ``config.keep_last``),
    ``report.json`` and the final model: the best validation checkpoint when there is a
    validation split, else the last weights (LoRA merged either way).

    Args:
        model: the model with the task's head (:attr:`lmforge.tasks.Task.head`);
            ``config.extra["id2label"]`` is set to ``label_names`` here.
        tokenizer: saved with the model.
        train: training split.
        out_dir: run directory; without ``resume`` an earlier run there is replaced.
        config: settings.
        label_names: class or tag names in index order.
        validation: validation split (early stopping, best checkpoint).
        evaluator: validation metrics (see :data:`Evaluator`); default :func:`default_evaluator`.
        on_evaluate: called as ``on_evaluate(step, metrics)`` after each validation; an
            exception it raises ends the run (``RUN`` then holds no final model).
        resume: continue from the newest complete checkpoint in ``out_dir`` (see
            :func:`lmforge.train.finetune_run.run_finetune`).
        allow_config_change: on resume, also accept changed optimiser settings and precision.
        run_settings: the flat settings the run is compared on when resumed (default: ``config``
            plus :func:`split_fingerprint`).
        plan: the resume plan when the caller already made it.

    Returns:
        The report: ``steps``, ``best`` (the best validation metrics and step), ``last_eval``,
        ``examples_per_second``, ``stopped_early``.
    """
    out = Path(out_dir)
    check_run_dir(out)
    if train.source.num_examples == 0:
        raise ConfigError("the training data has no examples")
    positions = model.config.max_positions
    if model.config.positions == "learned" and config.max_length > positions:
        raise ConfigError(
            f"max_length {config.max_length} is longer than the model's {positions} learned positions; "
            f"use --max-length {positions} or less"
        )
    task = get_task(config.task)
    max_steps, steps_per_epoch = run_steps(config, train.source.num_examples)
    settings = dict(
        run_settings or finetune_settings(config, split_fingerprint(train, validation, label_names))
    )
    if resume and plan is None:
        plan = plan_finetune_resume(config, settings, out, max_steps, allow_config_change)
    if plan is not None and plan.complete:
        return finished_report(out, plan)
    if plan is None or plan.checkpoint is None:
        _clear_previous_run(out)
    else:
        _restore_best(out)
    model.config.extra["id2label"] = list(label_names)
    model.config.extra["task"] = config.task
    model.config.extra["max_length"] = config.max_length
    optim = copy.copy(config.optim)
    if not optim.warmup_steps and config.warmup_ratio > 0:
        optim.warmup_steps = int(config.warmup_ratio * max_steps)
    eval_every = config.eval_every or steps_per_epoch
    objective = FinetuneObjective(
        model, tokenizer, task, train, validation, config, label_names, evaluator or default_evaluator
    )
    device = objective.device
    precision = resolve_precision(config.precision, device)
    loop_settings = LoopSettings(
        max_steps=max_steps, optim=optim, precision=precision, eval_every=eval_every,
        checkpoint_every=config.checkpoint_every or eval_every, keep_last=config.keep_last,
        metric=config.metric, patience=config.patience, keep_best_on_interrupt=True, progress=config.progress,
        settings_file="finetune.json", settings_text=json.dumps(config.to_dict(), indent=2) + "\n",
        config=config.to_dict(), run_settings=settings,
    )  # fmt: skip
    loop = TrainingLoop(
        objective, loop_settings, out, Runtime(device), lambda _: build_finetune_optimizer(model, config),
        on_evaluate=on_evaluate,
    )  # fmt: skip
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    with torch_threads(config.threads):  # config.threads applies to this run only
        loop.run(
            plan,
            f"fine-tuning {model.config.family} ({trainable:,} of {model.num_parameters():,} parameters "
            f"trainable), {train.source.num_examples:,} examples, {max_steps} steps, {device.type} {precision}",
        )
    report = {
        "steps": loop.step,
        "max_steps": max_steps,
        "stopped_early": loop.stopped_early,
        "interrupted": loop.interrupted,
        "best": loop.best,
        "last_eval": loop.last_eval,
        "examples_per_second": loop.step * config.batch_size / loop.train_seconds
        if loop.train_seconds
        else None,
        "train_seconds": loop.train_seconds,
        "trainable_parameters": trainable,
        "precision": precision,
        "label_names": list(label_names),
    }
    _publish(out, report, None if loop.best is None else out / "best", model, tokenizer)
    return report


def _clear_previous_run(out: Path) -> None:
    """A fresh run replaces the run at ``out``: its checkpoints and history must not mix with the
    new ones (its model and other files go when the new run's directory is swapped in)."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    (out / HISTORY).unlink(missing_ok=True)


def _restore_best(out: Path) -> None:
    """Before resuming a run that was published (finished or interrupted), put its model, which is
    its best validation model, back as ``RUN/best``: loaded and saved again, so that only the
    model's own files go there (not a calibrator saved into the run since)."""
    if (out / "best").is_dir() or not (out / "config.json").is_file():
        return
    published = load(out)
    save(published.model, out / "best", published.tokenizer)


def _publish(
    out: Path, report: dict[str, Any], best: Path | None, model: TransformerModel, tokenizer: Tokenizer | None
) -> None:
    """Make ``out`` the finished run: the best validation weights (else the last ones) as its model,
    the run's files and ``report.json`` beside them; built beside ``out`` and swapped in whole
    (:func:`lmforge.fileio.atomic_replace_dir`), so no file of an earlier run survives."""

    def build(directory: Path) -> None:
        atomic_write_text(directory / "report.json", json.dumps(report, indent=2) + "\n")
        if best is not None:
            for entry in best.iterdir():
                os.replace(entry, directory / entry.name)
        else:
            write_checkpoint(_plain_model(model), directory, tokenizer)
        for name in RUN_FILES:
            if (out / name).exists():
                os.replace(out / name, directory / name)

    atomic_replace_dir(out, build)


def check_run_dir(out: Path) -> None:
    """Refuse an ``--out`` that is a file (:func:`lmforge.fileio.check_output_dir`), or a non-empty
    directory that is not an lmforge run or checkpoint: the run's directory is replaced whole at
    the end, and must not hold anything else."""
    check_output_dir(out)
    if out.is_dir() and any(out.iterdir()):
        known = RUN_FILES + ("report.json", "config.json", "best")
        if not any((out / name).exists() for name in known):
            raise ConfigError(
                f"--out {out}: a non-empty directory that is not an lmforge run; the run replaces its "
                "directory whole, so choose a new or empty one"
            )


def write_run_report(
    out_dir: str | Path,
    report: dict[str, Any],
    model: str | Path,
    data: str,
    validation: str | None,
    **fields: Any,
) -> dict[str, Any]:
    """Add what a runner knows (model, data and validation sources, task extras) to ``report`` and
    rewrite ``out_dir/report.json``; returns the report."""
    report.update(model=str(model), data=data, validation=validation, **fields)
    atomic_write_text(Path(out_dir) / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report
