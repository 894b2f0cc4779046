"""Fine-tuning and pretraining settings checked before any work starts.

``validate_finetune_config`` and ``validate_train_config`` raise a :class:`ConfigError` naming the
flag, the config field and the allowed range, so a typo (``--lr -1``, ``--epochs 0``,
``--metric bleu`` on a classifier) fails in a second instead of after the first epoch, and before
the run directory exists. The Python entry points call them (:func:`~lmforge.train.finetune_run.run_finetune`,
:func:`~lmforge.train.finetune_run.run_cross_validation`, :func:`~lmforge.train.trainer.pretrain`,
:func:`~lmforge.train.tune.run_tune`), so the API and the CLI refuse the same values.
"""

from __future__ import annotations

import math
from typing import Any

from lmforge.errors import ConfigError
from lmforge.train.config import TrainConfig
from lmforge.train.finetune_config import FinetuneConfig

__all__ = [
    "validate_cross_validation",
    "validate_finetune_config",
    "validate_train_config",
]

_CHOICES: dict[str, tuple[str, ...]] = {
    "freeze": ("none", "embeddings", "body"),
    "class_weights": ("none", "balanced"),
    "resample": ("none", "oversample", "undersample"),
    "precision": ("auto", "fp32", "bf16", "fp16"),
}
_SCHEDULES = ("linear", "cosine", "constant")


def _flag(field: str) -> str:
    """``optim.lr`` -> ``--lr (optim.lr)``: what the user typed and what the config calls it."""
    return f"--{field.rsplit('.', 1)[-1].replace('_', '-')} ({field})"


def _bad(field: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"{_flag(field)} = {value!r}: must be {rule}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _at_least(field: str, value: Any, low: float, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _number(value) or value < low:
        raise _bad(field, value, f">= {low:g}" + (" (or unset)" if optional else ""))


def _in_range(field: str, value: Any, low: float, high: float, *, high_open: bool = False) -> None:
    if not _number(value) or value < low or value > high or (high_open and value == high):
        raise _bad(field, value, f"in [{low:g}, {high:g}{')' if high_open else ']'}")


def _positive(field: str, value: Any) -> None:
    if not _number(value) or value <= 0:
        raise _bad(field, value, "> 0")


def validate_finetune_config(config: FinetuneConfig) -> FinetuneConfig:
    """Check every field's range and choice, and that ``metric`` is one the task reports.

    Returns:
        ``config`` unchanged.

    Raises:
        ConfigError: the first bad field, as ``--flag (field) = value: must be ...``.
    """
    from lmforge.tasks import get_task

    task = get_task(config.task).name  # an unknown task names the known ones
    for name in ("max_length", "max_target_length", "batch_size", "augment_copies", "length_groups"):
        _at_least(name, getattr(config, name), 1)
    for name in ("eval_limit", "max_steps", "eval_every", "checkpoint_every", "patience", "threads"):
        _at_least(name, getattr(config, name), 1, optional=True)
    _at_least("keep_last", config.keep_last, 0)
    _positive("epochs", config.epochs)
    _positive("optim.lr", config.optim.lr)
    _at_least("optim.weight_decay", config.optim.weight_decay, 0)
    if config.optim.schedule not in _SCHEDULES:
        raise _bad("optim.schedule", config.optim.schedule, f"one of {', '.join(_SCHEDULES)}")
    _in_range("warmup_ratio", config.warmup_ratio, 0, 1, high_open=True)
    _at_least("freeze_layers", config.freeze_layers, 0)
    _in_range("layer_decay", config.layer_decay, 0, 1)
    if config.layer_decay == 0:
        raise _bad("layer_decay", 0, "in (0, 1] (1 disables it)")
    _in_range("label_smoothing", config.label_smoothing, 0, 1, high_open=True)
    _at_least("lora_rank", config.lora_rank, 0)
    _positive("lora_alpha", config.lora_alpha)
    _in_range("lora_dropout", config.lora_dropout, 0, 1, high_open=True)
    if config.dropout is not None:
        _in_range("dropout", config.dropout, 0, 1, high_open=True)
    _in_range("augment_prob", config.augment_prob, 0, 1)
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            raise _bad(name, getattr(config, name), f"one of {', '.join(choices)}")
    qa = config.qa
    _at_least("qa.doc_stride", qa.doc_stride, 0)
    _at_least("qa.max_query_length", qa.max_query_length, 1)
    _at_least("qa.max_answer_length", qa.max_answer_length, 1)
    known = get_task(task).validation_metrics
    if known and config.metric not in known:
        raise ConfigError(
            f"--metric (metric) = {config.metric!r}: {task} validation does not report it; "
            f"choose one of {', '.join(known)}"
        )
    return config


def validate_cross_validation(folds: int) -> None:
    """``--cv K``: at least two folds (the task says whether it can be cross-validated at all)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--cv = {folds!r}: must be an integer >= 2 (the number of folds)")


def validate_train_config(config: TrainConfig, source: str = "config") -> TrainConfig:
    """The recipe's own cross-field checks (:meth:`TrainConfig.check`) plus the optimiser's ranges.

    Returns:
        ``config`` unchanged.
    """
    config.check(source)
    optim = config.optim

    def fail(field: str, value: Any, rule: str) -> ConfigError:
        return ConfigError(f"{source}: field 'optim.{field}' = {value!r}: must be {rule}")

    if not math.isfinite(optim.lr):
        raise fail("lr", optim.lr, "a positive number")
    for field in ("weight_decay", "l1", "warmup_steps"):
        if getattr(optim, field) < 0:
            raise fail(field, getattr(optim, field), ">= 0")
    if not 0 <= optim.min_lr_ratio <= 1:
        raise fail("min_lr_ratio", optim.min_lr_ratio, "in [0, 1]")
    if optim.clip_grad_norm is not None and optim.clip_grad_norm <= 0:
        raise fail("clip_grad_norm", optim.clip_grad_norm, "> 0 (or null to disable clipping)")
    if any(not 0 <= beta < 1 for beta in optim.betas):
        raise fail("betas", list(optim.betas), "two numbers in [0, 1)")
    if optim.eps <= 0:
        raise fail("eps", optim.eps, "> 0")
    return config
