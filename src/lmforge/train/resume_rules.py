"""What each kind of run may change when it is resumed, and how its resume is planned.

:mod:`lmforge.train.resume` is the loop's resume, the same for every run: it picks the newest
complete checkpoint, compares settings under :class:`~lmforge.train.resume.ChangeRules` and keeps
the run's history. This module holds the two kinds of run's part: which fields are safe to change
(cadence, limits, resources), which only with ``--allow-config-change`` (the optimiser and
numerics), the settings a run is compared on (its config plus a fingerprint of its data), when a
run counts as complete and the command that starts it over.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmforge.models.io.checkpoint import WEIGHTS_NAME
from lmforge.train.build import DataBundle
from lmforge.train.checkpoint import CHECKPOINTS
from lmforge.train.config import TrainConfig
from lmforge.train.finetune_config import FinetuneConfig
from lmforge.train.resume import (
    CONFIG_FILE,
    REPORT_FILE,
    ChangeRules,
    ResumePlan,
    diff_settings,
    flatten,
    override_arguments,
    plan_resume,
)

__all__ = [
    "FINETUNE_RULES",
    "PRETRAIN_RULES",
    "finetune_settings",
    "plan_finetune_resume",
    "plan_pretraining_resume",
    "pretraining_settings",
    "reported_step",
]


# -- pretraining ------------------------------------------------------------------------------


# Cadence, limits and resources: the run stays the same run. The optimiser and numerics change
# what is learned from here on, so they need the flag; everything else (model, objective, data,
# seed, batch size) would make the result not a continuation and is fixed.
PRETRAIN_RULES = ChangeRules(
    safe=(
        "max_steps", "max_minutes", "eval_every", "eval_batches", "log_every", "checkpoint_every",
        "keep_last", "progress", "tensorboard", "threads", "cpu_memory_reuse", "compile",
        "activation_checkpointing", "data.path", "data.micro_batch_size", "dataset.source",
    ),
    flagged=("optim.*", "precision", "device", "distributed"),
)  # fmt: skip


def pretraining_settings(config: TrainConfig, data: DataBundle) -> dict[str, Any]:
    """The flat settings a pretraining run is compared on: its config and what its data holds."""
    fingerprint = {
        "source": data.source,
        "vocab_size": data.vocab_size,
        "special_tokens": dict(sorted(data.special_tokens.items())),
        "train_documents": data.train.num_documents,
        "train_tokens": len(data.train.tokens),
        "validation_documents": data.validation.num_documents,
        "validation_tokens": len(data.validation.tokens),
    }
    return {**flatten(json.loads(json.dumps(config.to_dict()))), **flatten(fingerprint, "dataset")}


def plan_pretraining_resume(
    config: TrainConfig, data: DataBundle, run_dir: str | Path, allow_config_change: bool = False
) -> ResumePlan:
    """:func:`plan_resume` for ``lmforge pretrain --resume`` (complete = ``report.json`` and
    ``model/`` written at the checkpoint's step)."""
    run_dir = Path(run_dir)
    settings = pretraining_settings(config, data)
    return plan_resume(
        run_dir,
        settings,
        PRETRAIN_RULES,
        max_steps=config.max_steps,
        completed_step=reported_step(run_dir, run_dir / "model")[0],
        allow_config_change=allow_config_change,
        defaults=flatten(json.loads(json.dumps(TrainConfig().to_dict()))),
        legacy_settings=lambda path: _legacy_pretraining_settings(path, settings),
        restart_command=_pretraining_restart_command(run_dir, data.source, settings),
    )


def reported_step(run_dir: Path, model_dir: Path) -> tuple[int | None, bool]:
    """The step the run's ``report.json`` was written at (``None``: no report, or no model in
    ``model_dir``) and whether it says the run stopped early."""
    try:
        report = json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, False
    if not (model_dir / WEIGHTS_NAME).is_file() or not isinstance(report, dict):
        return None, False
    steps = report.get("steps")
    return (steps if isinstance(steps, int) else None), bool(report.get("stopped_early"))


def _legacy_pretraining_settings(path: Path, settings: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Settings of a checkpoint from before ``run_state.json``: the config inside ``trainer.pt``
    (such checkpoints did not describe their data, which is then taken to be the same)."""
    import torch

    try:
        payload = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception:  # unreadable: loading it reports the problem
        return None
    config = payload.get("config") if isinstance(payload, dict) else None
    if not isinstance(config, dict):
        return None
    return {**{k: v for k, v in settings.items() if k.startswith("dataset.")}, **flatten(config)}


def _pretraining_restart_command(run_dir: Path, data_source: str, settings: Mapping[str, Any]) -> str:
    """``rm -r RUN/checkpoints && lmforge pretrain --config RUN/config.yaml --data D --out RUN [k=v ...]``."""
    import yaml

    remove = shlex.join(["rm", "-r", str(run_dir / CHECKPOINTS)])
    fallback = f"{remove}, then your pretrain command without --resume"
    try:
        started = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return fallback
    if not isinstance(started, dict):
        return fallback
    own = {k: v for k, v in settings.items() if not k.startswith("dataset.")}
    overrides = override_arguments(diff_settings(flatten(started), own))
    if overrides is None:
        return fallback
    words = ["lmforge", "pretrain", "--config", str(run_dir / CONFIG_FILE)]
    words += ["--data", data_source] if data_source != "memory" else []
    return f"{remove} && {shlex.join([*words, '--out', str(run_dir), *overrides])}"


# -- fine-tuning ------------------------------------------------------------------------------


# As for pretraining: cadence, limits, resources and where the files now lie are safe; the
# optimiser and numerics (the learning rate and its schedule's shape, precision, how a batch is cut
# into length groups) need the flag; the task, the data and how it is read, the model and what
# trains (freezing, LoRA, dropout), the loss and the metric that picks the best model are fixed.
FINETUNE_RULES = ChangeRules(
    safe=(
        "max_steps", "epochs", "eval_every", "checkpoint_every", "keep_last", "patience", "progress",
        "threads", "model.source", "data.source", "data.validation",
    ),
    flagged=("optim.*", "warmup_ratio", "layer_decay", "precision", "length_groups"),
)  # fmt: skip


def finetune_settings(config: FinetuneConfig, fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    """The flat settings a fine-tuning run is compared on: its config and ``fingerprint``, what
    the runner knows of its model and data (``model.source``, ``data.source``, ``data.examples``,
    ``data.label_names``, ``data.validation``, ``data.validation_examples``)."""
    return {**flatten(config.to_dict()), **flatten(json.loads(json.dumps(fingerprint)))}


def plan_finetune_resume(
    config: FinetuneConfig,
    settings: Mapping[str, Any],
    run_dir: str | Path,
    max_steps: int,
    allow_config_change: bool = False,
) -> ResumePlan:
    """:func:`plan_resume` for ``lmforge finetune --resume`` (complete = ``report.json`` and the
    run's model written at the checkpoint's step, the last one or an early stop)."""
    run_dir = Path(run_dir)
    completed, stopped_early = reported_step(run_dir, run_dir)
    remove = shlex.join(["rm", "-r", str(run_dir / CHECKPOINTS)])
    return plan_resume(
        run_dir,
        settings,
        FINETUNE_RULES,
        max_steps=max_steps,
        completed_step=completed,
        stopped_early=stopped_early,
        allow_config_change=allow_config_change,
        defaults=flatten(FinetuneConfig(task=config.task).to_dict()),
        restart_command=f"{remove}, then your finetune command without --resume",
    )
