"""Supervised fine-tuning of a pretrained model on any task of :mod:`lmforge.tasks`.

The loop never knows which task it runs: the :class:`~lmforge.tasks.Task` gives the loss, the
predictions and the validation metrics. The loop is the pretraining engine's pieces put to a task
objective: batches from an :class:`~lmforge.tasks.ExampleSource` (a task's source),
AdamW / SGD with decay groups and the step-indexed schedule of :mod:`lmforge.train.optim`,
``metrics.jsonl`` and the progress display of :mod:`lmforge.train.metrics`. Fine-tuning adds:
freezing (embeddings, the first ``k`` layers, or the whole body), layer-wise learning-rate decay,
LoRA, class weights, label smoothing, and early stopping on a validation metric with the best
weights kept in ``RUN/best/`` and finally written to ``RUN`` (``lmforge.load(RUN)`` reads it).

Validation metrics are the task's own (:meth:`lmforge.tasks.Task.metrics` with
``validation=True``); a caller may pass another ``evaluator``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text, replace_dir
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel, save
from lmforge.runtime import torch_threads
from lmforge.tasks import LOWER_IS_BETTER, TaskSettings, TaskSplit, get_task
from lmforge.tasks.qa import QAConfig
from lmforge.tasks.sources import TaskSource, to_tensors
from lmforge.tokenizers import Tokenizer
from lmforge.train.config import OptimConfig
from lmforge.train.length_groups import length_grouped_batch
from lmforge.train.lora import apply_lora, merge_lora
from lmforge.train.metrics import MetricsLog, ProgressDisplay
from lmforge.train.optim import learning_rate, set_learning_rate
from lmforge.train.precision import autocast, resolve_precision

__all__ = [
    "Evaluator",
    "FinetuneConfig",
    "TaskSplit",
    "default_evaluator",
    "finetune_model",
    "predict",
    "save_finetuned",
    "write_run_report",
]

FinetuneTask = Literal["classification", "token-classification", "seq2seq", "lm", "chat", "qa"]
#: ``evaluator(task, outputs, references, label_names) -> metrics``; outputs are logits [N, C]
#: (classification) or per-sentence predicted tag ids (token classification, word level).
Evaluator = Callable[[str, Any, Sequence[Any], Sequence[str]], dict[str, Any]]
#: ``on_evaluate(step, metrics)`` after each validation (``lmforge tune`` reports to its trial and
#: may raise to stop the run, e.g. ``optuna.TrialPruned``).
EvalCallback = Callable[[int, dict[str, Any]], None]
#: What a fine-tuning run writes besides its model and report.json (kept when the model is swapped in).
RUN_FILES = ("metrics.jsonl", "finetune.json")


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (the options of ``lmforge finetune``).

    Attributes:
        task: a name of :func:`lmforge.tasks.task_names` (``classification``,
            ``token-classification``, ``qa``, ``seq2seq``, ``lm``, ``chat``).
        max_length: tokens per example, special tokens included (longer inputs are cut); for
            ``seq2seq`` the source tokens.
        max_target_length: ``seq2seq``: target tokens kept for training and generated at most.
        eval_limit: ``seq2seq``: decode only the first N validation pairs per evaluation.
        batch_size: examples per optimizer step.
        epochs: passes over the training data (fractions allowed); ``max_steps`` overrides.
        max_steps: optimizer steps; ``None``: from ``epochs``.
        optim: optimizer and schedule (``lr`` is the peak learning rate of the top layer).
        warmup_ratio: share of the steps spent warming up (when ``optim.warmup_steps`` is 0).
        freeze: ``none``, ``embeddings`` or ``body`` (everything but the task head).
        freeze_layers: also freeze the first ``k`` Transformer layers.
        layer_decay: layer-wise LR decay: layer ``i`` of ``L`` trains at ``lr * decay**(L - i)``,
            embeddings at ``lr * decay**(L + 1)``, the head at ``lr``; 1.0 disables.
        class_weights: ``none`` or ``balanced`` (``n / (C * count_c)``) cross-entropy weights.
        resample: ``none``, ``oversample`` or ``undersample``: randomly repeat / drop training
            examples (seeded) until every class has the largest / smallest class's count
            (classification; see :mod:`lmforge.train.resample`).
        label_smoothing: cross-entropy label smoothing.
        lora_rank: > 0 trains LoRA adapters of this rank (plus the head) instead of all weights.
        lora_alpha: LoRA scale numerator.
        lora_dropout: dropout on the adapter inputs.
        lora_targets: module names to adapt.
        eval_every: validate every this many steps; ``None``: once per epoch.
        metric: validation metric for early stopping and the best checkpoint (``macro_f1``,
            ``accuracy``, ``entity_f1``, ``loss`` ...; lower is better only for losses); empty:
            the task's own (:attr:`lmforge.tasks.Task.default_metric`: ``macro_f1`` for
            classification, ``entity_f1`` for NER, ``f1`` for QA, ``chrf`` for seq2seq, ``loss``
            for lm / chat), as ``lmforge finetune`` chooses.
        patience: stop after this many validations without improvement; ``None``: never.
        dropout: override the model's dropout (``None``: keep the checkpoint's).
        seed: seeds initialisation of the head, batch order, dropout and augmentation.
        augment: text augmentations of the training split (``deletion``, ``swap``,
            ``backtranslation``; see :mod:`lmforge.data.augment`); empty: none.
        augment_prob: word deletion probability / share of words swapped.
        augment_copies: augmented copies added per training example.
        qa: ``qa``: windowing (doc stride, query length) and answer decoding (max answer length,
            SQuAD v2.0 null threshold), see :class:`lmforge.tasks.qa.QAConfig`.
        length_groups: train each batch as up to this many length-sorted micro-batches, each
            padded to its own longest, accumulating gradients: the same update with less padding
            (classification and token classification; see :mod:`lmforge.train.length_groups`);
            1 disables.
        precision: ``fp32``, ``bf16`` (autocast; about 2x faster on CUDA and on CPUs with
            AVX512-BF16 / AMX), ``fp16`` (CUDA, loss scaling) or ``auto`` (bf16/fp16 on CUDA, fp32
            on CPU); see :mod:`lmforge.train.precision`. Training steps only: validation and
            prediction run in fp32, so saved logits (and calibration) do not depend on it.
        threads: torch CPU threads (``None``: torch's default).
        progress: show progress.
    """

    task: FinetuneTask = "classification"
    max_length: int = 128
    max_target_length: int = 128
    eval_limit: int | None = None
    batch_size: int = 16
    epochs: float = 3.0
    max_steps: int | None = None
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-5, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01)
    )
    warmup_ratio: float = 0.06
    freeze: Literal["none", "embeddings", "body"] = "none"
    freeze_layers: int = 0
    layer_decay: float = 1.0
    class_weights: Literal["none", "balanced"] = "none"
    resample: Literal["none", "oversample", "undersample"] = "none"
    label_smoothing: float = 0.0
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    eval_every: int | None = None
    metric: str = ""
    patience: int | None = None
    dropout: float | None = None
    seed: int = 0
    augment: tuple[str, ...] = ()
    augment_prob: float = 0.1
    augment_copies: int = 1
    length_groups: int = 4
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = None
    progress: bool = True
    qa: QAConfig = field(default_factory=QAConfig)

    def __post_init__(self) -> None:
        if not self.metric:  # a classification default would be wrong for every other task
            self.metric = get_task(self.task).default_metric

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def task_settings(self) -> TaskSettings:
        """What the task reads of these settings."""
        return TaskSettings(
            max_length=self.max_length,
            max_target_length=self.max_target_length,
            eval_limit=self.eval_limit,
            label_smoothing=self.label_smoothing,
            class_weights=self.class_weights,
            options=self.qa,
        )


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


def save_finetuned(model: TransformerModel, path: Path, tokenizer: Tokenizer | None) -> None:
    """Write an lmforge checkpoint to ``path`` (built beside it, then swapped in whole); LoRA
    adapters merged into a copy."""
    tmp = path.parent / f".{path.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    plain = model
    if any(name.endswith("lora_a") for name, _ in model.named_parameters()):
        plain = copy.deepcopy(model)
        merge_lora(plain)
    save(plain, tmp, tokenizer)
    replace_dir(tmp, path)


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


# -- the loop ------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _better(value: float, best: float | None, metric: str) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if metric in LOWER_IS_BETTER else value > best


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
) -> dict[str, Any]:
    """Fine-tune ``model`` (already carrying its task head) and write the run directory.

    ``RUN/`` gets ``metrics.jsonl`` (train and eval records), ``finetune.json`` (the settings),
    ``report.json`` and the final model: the best validation checkpoint when there is a
    validation split, else the last weights (LoRA merged either way).

    Args:
        model: the model with the task's head (:attr:`lmforge.tasks.Task.head`);
            ``config.extra["id2label"]`` is set to ``label_names`` here.
        tokenizer: saved with the model.
        train: training split.
        out_dir: run directory.
        config: settings.
        label_names: class or tag names in index order.
        validation: validation split (early stopping, best checkpoint).
        evaluator: validation metrics (see :data:`Evaluator`); default :func:`default_evaluator`.
        on_evaluate: called as ``on_evaluate(step, metrics)`` after each validation; an
            exception it raises ends the run (``RUN`` then holds no final model).

    Returns:
        The report: ``steps``, ``best`` (the best validation metrics and step), ``last_eval``,
        ``examples_per_second``, ``stopped_early``.
    """
    out = Path(out_dir)
    check_run_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    if train.source.num_examples == 0:
        raise ConfigError("the training data has no examples")
    positions = model.config.max_positions
    if model.config.positions == "learned" and config.max_length > positions:
        raise ConfigError(
            f"max_length {config.max_length} is longer than the model's {positions} learned positions; "
            f"use --max-length {positions} or less"
        )
    task = get_task(config.task)
    settings = config.task_settings()
    evaluator = evaluator or default_evaluator
    model.config.extra["id2label"] = list(label_names)
    model.config.extra["task"] = config.task
    model.config.extra["max_length"] = config.max_length
    steps_per_epoch = math.ceil(train.source.num_examples / config.batch_size)
    max_steps = config.max_steps or max(1, int(round(config.epochs * steps_per_epoch)))
    optim = copy.copy(config.optim)
    if not optim.warmup_steps and config.warmup_ratio > 0:
        optim.warmup_steps = int(config.warmup_ratio * max_steps)
    eval_every = config.eval_every or steps_per_epoch
    loss_module: nn.Module = task.loss(model, settings, train, len(label_names))
    weights = task.class_weights(train, len(label_names)) if config.class_weights == "balanced" else None
    optimizer = build_finetune_optimizer(model, config)
    device = next(model.parameters()).device
    precision = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    metrics = MetricsLog(out, enabled=True, tensorboard=False)
    metrics.truncate(-1)
    atomic_write_text(out / "finetune.json", json.dumps(config.to_dict(), indent=2) + "\n")
    display = ProgressDisplay(config.progress, max_steps, 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    display.print(
        f"fine-tuning {model.config.family} ({trainable:,} of {model.num_parameters():,} parameters trainable), "
        f"{train.source.num_examples:,} examples, {max_steps} steps, {device.type} {precision}"
    )
    best: dict[str, Any] | None = None
    best_value: float | None = None
    stale, stopped_early, interrupted, step, train_seconds = 0, False, False, 0, 0.0
    last_eval: dict[str, Any] = {}
    model.train()

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    with torch_threads(config.threads):  # config.threads applies to this run only
        try:
            grouped = config.length_groups > 1 and task.length_groups and isinstance(train.source, TaskSource)
            while step < max_steps:
                tick = time.perf_counter()
                lr = learning_rate(step, max_steps, optim)
                set_learning_rate(optimizer, lr)
                if grouped:  # length-sorted micro-batches, gradients accumulated (see length_groups)
                    loss_value = 0.0
                    assert isinstance(train.source, TaskSource)
                    parts = length_grouped_batch(
                        train.source, step, config.batch_size, config.length_groups, task.target_key, weights
                    )
                    for part, share in parts:
                        with autocast(precision, device):
                            loss, _ = loss_module(to_tensors(part, device))
                        loss_value += float(loss.detach()) * share
                        backward(loss * share)
                else:
                    batch = to_tensors(train.source.train_batch(step, config.batch_size), device)
                    with autocast(precision, device):
                        loss, _ = loss_module(batch)
                    loss_value = float(loss.detach())
                    backward(loss)
                if scaler is not None:
                    scaler.unscale_(optimizer)
                if optim.clip_grad_norm:
                    params = [p for group in optimizer.param_groups for p in group["params"]]
                    torch.nn.utils.clip_grad_norm_(params, optim.clip_grad_norm)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                train_seconds += time.perf_counter() - tick
                record = {"kind": "train", "step": step, "loss": loss_value, "lr": lr,
                          "epoch": train.source.epoch_of(step, config.batch_size)}  # fmt: skip
                metrics.write(record)
                display.step(step, f"loss {loss_value:.4f}", force_line=step % 50 == 0)
                if validation is None or (step % eval_every and step != max_steps):
                    continue
                outputs, val_loss = predict(model, validation, config.task, max(config.batch_size, 32))
                last_eval = {
                    "step": step,
                    "loss": val_loss,
                    **evaluator(config.task, outputs, validation.references, label_names),
                }
                metrics.write(
                    {"kind": "eval", **{k: v for k, v in last_eval.items() if isinstance(v, (int, float))}}
                )
                if config.metric not in last_eval:
                    raise ConfigError(
                        f"metric {config.metric!r} is not among the validation metrics {sorted(last_eval)}"
                    )
                value = float(last_eval[config.metric])
                display.print(f"step {step}: val {config.metric} {value:.4f}  val loss {val_loss:.4f}")
                if on_evaluate is not None:
                    on_evaluate(step, dict(last_eval))
                if _better(value, best_value, config.metric):
                    best_value, best, stale = value, dict(last_eval), 0
                    save_finetuned(model, out / "best", tokenizer)
                else:
                    stale += 1
                    if config.patience is not None and stale >= config.patience:
                        stopped_early = True
                        display.print(
                            f"early stop at step {step}: no better {config.metric} for {stale} evaluations"
                        )
                        break
        except KeyboardInterrupt:
            # Ctrl-C keeps the best validation checkpoint as the run's model; without one there is
            # nothing trustworthy to keep (the live weights may be mid-update), so the interrupt stands.
            if best is None or not (out / "best" / "config.json").exists():
                raise
            interrupted = True
            display.print(
                f"interrupted at step {step}: the run keeps the best checkpoint (step {best['step']})"
            )
        finally:
            display.close()
            metrics.close()
    # The best validation weights (else the last ones) become the run's model; the run directory
    # is rebuilt beside itself and swapped in whole, so no file of an earlier run survives.
    staging = out.parent / f".{out.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    if best is not None:
        (out / "best").replace(staging)
    else:
        save_finetuned(model, staging, tokenizer)
    for name in RUN_FILES:
        if (out / name).exists():
            (out / name).replace(staging / name)
    report = {
        "steps": step,
        "max_steps": max_steps,
        "stopped_early": stopped_early,
        "interrupted": interrupted,
        "best": best,
        "last_eval": last_eval,
        "examples_per_second": step * config.batch_size / train_seconds if train_seconds else None,
        "train_seconds": train_seconds,
        "trainable_parameters": trainable,
        "precision": precision,
        "label_names": list(label_names),
    }
    atomic_write_text(staging / "report.json", json.dumps(report, indent=2) + "\n")
    replace_dir(staging, out)
    return report


def check_run_dir(out: Path) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty directory that is not an lmforge run or
    checkpoint: the run's directory is replaced whole at the end, and must not hold anything else."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a directory")
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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (call before loading a model with a fresh head)."""
    _seed_everything(seed)
