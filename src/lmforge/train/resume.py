"""Resuming a run: which checkpoint to continue from, whether the new settings continue the run,
and the run's history of what changed.

Any training loop resumes in two steps (pretraining does in :mod:`lmforge.train.trainer`):

1. :func:`plan_resume` reads, never writes: it verifies the checkpoints newest first and picks the
   newest complete one (each torn one skipped, with the reason); compares the new settings with
   that checkpoint's ``run_state.json`` under :class:`ChangeRules`, refusing in one line every
   field that may not change (``old → new``); and says whether the run is already complete.
2. :func:`begin_resumed_run` (main process, once the checkpoint is loaded) sets torn checkpoints
   aside, drops leftovers of cut saves, cuts ``history.jsonl`` back to the checkpoint's step (the
   steps after it are trained again) and records the resume and each accepted change.

Settings are flat ``{"optim.lr": 0.001, "dataset.train_tokens": 123, ...}`` mappings
(:func:`flatten`); ``config.yaml`` keeps the settings the run started with, and
``history.jsonl`` says which later ones took effect from which step.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import CheckpointError, ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.train.build import DataBundle
from lmforge.train.checkpoint import (
    CHECKPOINTS,
    checkpoint_step,
    list_checkpoints,
    read_run_state,
    verify_checkpoint,
)
from lmforge.train.config import TrainConfig

HISTORY = "history.jsonl"
CONFIG_FILE = "config.yaml"
REPORT_FILE = "report.json"
ALLOW_FLAG = "--allow-config-change"
_MISSING: Any = object()  # a field one side does not have (a model override added or removed)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` -> ``{"optim.lr": 1e-3}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = list(value) if isinstance(value, tuple) else value
    return flat


@dataclass(frozen=True)
class ChangeRules:
    """Which settings may differ from the run's when it is resumed; every other one is fixed.

    Attributes:
        safe: fields (``"section.*"`` for a whole section) accepted and recorded.
        flagged: fields accepted only with ``allow_config_change`` (``--allow-config-change``).
    """

    safe: tuple[str, ...]
    flagged: tuple[str, ...] = ()

    def kind(self, name: str) -> Literal["safe", "flagged", "fixed"]:
        if _matches(name, self.safe):
            return "safe"
        return "flagged" if _matches(name, self.flagged) else "fixed"


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or (p.endswith(".*") and name.startswith(p[:-1])) for p in patterns)


@dataclass(frozen=True)
class ConfigChange:
    """One setting that differs from the run's: ``field`` went from ``old`` to ``new``."""

    field: str
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.field} {_show(self.old)} → {_show(self.new)}"


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value)


def _same(old: Any, new: Any) -> bool:
    if _is_number(old) and _is_number(new):  # YAML may give 1 where the config holds 1.0
        return bool(old == new or (math.isnan(old) and math.isnan(new)))
    return type(old) is type(new) and bool(old == new)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def diff_settings(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> list[ConfigChange]:
    """Fields whose values differ, sorted by name. A field the old settings lack counts as its
    value in ``defaults`` (settings added in a later lmforge version), else as unset."""
    defaults = defaults or {}
    changes = []
    for name in sorted(set(old) | set(new)):
        before = old.get(name, defaults.get(name, _MISSING))
        after = new.get(name, _MISSING)
        if not _same(before, after):
            changes.append(ConfigChange(name, before, after))
    return changes


@dataclass
class ResumePlan:
    """Where a resumed run continues and what it changes.

    Attributes:
        checkpoint: the newest complete checkpoint; ``None``: the run has none, start at step 0.
        step: its step (steps already trained).
        skipped: newer checkpoints that are torn, each with the reason.
        changes: accepted settings that differ from the checkpoint's.
        complete: the run already reached its last step and wrote its final outputs.
    """

    checkpoint: Path | None
    step: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    changes: list[ConfigChange] = field(default_factory=list)
    complete: bool = False


def plan_resume(
    run_dir: Path,
    settings: Mapping[str, Any],
    rules: ChangeRules,
    *,
    max_steps: int,
    completed_step: int | None,
    allow_config_change: bool = False,
    defaults: Mapping[str, Any] | None = None,
    legacy_settings: Callable[[Path], Mapping[str, Any] | None] | None = None,
    restart_command: str = "the same command without --resume, after removing the run directory",
) -> ResumePlan:
    """Decide how ``run_dir`` resumes with ``settings``; reads files, writes none.

    Args:
        settings: the new run's flat settings (also saved in each checkpoint's ``run_state.json``).
        rules: which differences are accepted.
        max_steps: the step the run now ends at.
        completed_step: the step the run's final outputs (report, model) were written at, if any.
        defaults: values of settings an older checkpoint lacks.
        legacy_settings: reads the settings of a checkpoint without ``run_state.json``.
        restart_command: shown when no checkpoint is complete.

    Raises:
        CheckpointError: checkpoints exist but none is complete (the message has the command
            that starts over).
        ConfigError: a setting differs that may not (or not without ``allow_config_change``),
            or ``max_steps`` lies before the checkpoint.
    """
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        return ResumePlan(checkpoint=None)
    skipped: list[tuple[Path, str]] = []
    chosen: Path | None = None
    for path in reversed(checkpoints):
        reason = verify_checkpoint(path)
        if reason is None:
            chosen = path
            break
        skipped.append((path, reason))
    if chosen is None:
        why = "; ".join(f"{path.name}: {reason}" for path, reason in skipped)
        raise CheckpointError(
            f"{run_dir / CHECKPOINTS}: no complete checkpoint to resume from ({why}); start over with: "
            f"{restart_command}"
        )
    state = read_run_state(chosen)
    saved = state.get("settings") if state is not None else None
    if saved is None and legacy_settings is not None:
        saved = legacy_settings(chosen)
    changes = diff_settings(saved, settings, defaults) if saved is not None else []
    check_changes(chosen, changes, rules, allow_config_change)
    step = checkpoint_step(chosen)
    if max_steps < step:
        raise ConfigError(
            f"{chosen}: max_steps={max_steps} lies before this checkpoint's step {step}; resume with "
            f"--max-steps {step} or more"
        )
    complete = step == max_steps and completed_step == step
    return ResumePlan(chosen, step, skipped, changes, complete)


def check_changes(
    checkpoint: Path, changes: list[ConfigChange], rules: ChangeRules, allow_config_change: bool
) -> None:
    """Raise one :class:`ConfigError` naming every change ``rules`` refuse (``field old → new``)."""
    fixed = [c.describe() for c in changes if rules.kind(c.field) == "fixed"]
    flagged = [c.describe() for c in changes if rules.kind(c.field) == "flagged"]
    problems = []
    if fixed:
        problems.append(f"{', '.join(fixed)} (fixed for a run)")
    if flagged and not allow_config_change:
        problems.append(f"{', '.join(flagged)} (only with {ALLOW_FLAG})")
    if problems:
        raise ConfigError(
            f"{checkpoint}: cannot resume with changed settings: {'; '.join(problems)}; resume with the "
            "run's values (its config.yaml and history.jsonl) or start a new run with another --out"
        )


def describe_plan(plan: ResumePlan) -> list[str]:
    """Lines telling the user what resuming does (torn checkpoints skipped, settings changed)."""
    lines = []
    for path, reason in plan.skipped:
        lines.append(
            f"{path} is torn ({reason}); resuming from the newest complete checkpoint "
            f"{plan.checkpoint.name if plan.checkpoint else '-'} instead, the torn one is set aside as "
            f"{_aside(path).name}"
        )
    if plan.changes:
        lines.append(
            f"from step {plan.step}: "
            + ", ".join(c.describe() for c in plan.changes)
            + f" (recorded in {HISTORY})"
        )
    return lines


def notice(text: str) -> None:
    """Print a resume message on stderr, once per run (the main process under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Writing: the run directory once resuming goes ahead


def _aside(path: Path) -> Path:
    return path.parent / f".torn-{path.name}"


def begin_resumed_run(run_dir: Path, plan: ResumePlan) -> None:
    """Set torn checkpoints aside, drop cut saves and record the resume in ``history.jsonl``.

    Call on the main process after the checkpoint is loaded; records from ``plan.step`` on are
    dropped first, as the steps after the checkpoint are trained again.
    """
    for path, _ in plan.skipped:
        target = _aside(path)
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
    root = run_dir / CHECKPOINTS
    for leftover in root.glob(".tmp-step-*"):  # a save cut short: never renamed into place
        shutil.rmtree(leftover, ignore_errors=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    records = [r for r in read_history(run_dir) if int(r.get("step", 0)) < plan.step]
    checkpoint = plan.checkpoint.name if plan.checkpoint is not None else None
    skipped = [{"checkpoint": p.name, "reason": reason} for p, reason in plan.skipped]
    records.append(
        {"event": "resume", "step": plan.step, "checkpoint": checkpoint, "skipped": skipped, "time": now}
    )
    for change in plan.changes:
        old, new = (None if v is _MISSING else v for v in (change.old, change.new))
        records.append(
            {
                "event": "config_change",
                "step": plan.step,
                "field": change.field,
                "old": old,
                "new": new,
                "time": now,
            }
        )
    write_history(run_dir, records)


def start_history(run_dir: Path) -> None:
    """A fresh run's ``history.jsonl``: one ``start`` record."""
    write_history(run_dir, [{"event": "start", "step": 0, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}])


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``history.jsonl`` (none for runs from before it existed)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def write_history(run_dir: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in records))


def override_arguments(changes: list[ConfigChange]) -> list[str] | None:
    """``key=value`` overrides that turn the old settings into the new, or ``None`` when one
    cannot be written so (a field removed)."""
    items = []
    for change in changes:
        if change.new is _MISSING:
            return None
        value = change.new if isinstance(change.new, str) else json.dumps(change.new)
        items.append(f"{change.field}={value}")
    return items


# ---------------------------------------------------------------------------------------------
# Pretraining


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
        completed_step=_reported_step(run_dir),
        allow_config_change=allow_config_change,
        defaults=flatten(json.loads(json.dumps(TrainConfig().to_dict()))),
        legacy_settings=lambda path: _legacy_pretraining_settings(path, settings),
        restart_command=_pretraining_restart_command(run_dir, data.source, settings),
    )


def _reported_step(run_dir: Path) -> int | None:
    from lmforge.models.io.checkpoint import WEIGHTS_NAME

    try:
        report = json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (run_dir / "model" / WEIGHTS_NAME).is_file() or not isinstance(report, dict):
        return None
    steps = report.get("steps")
    return steps if isinstance(steps, int) else None


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
