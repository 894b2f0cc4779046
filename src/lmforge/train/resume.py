"""Resuming a run: which checkpoint to continue from, whether the new settings continue the run,
and the run's history of what changed.

The training loop (:mod:`lmforge.train.loop`) resumes in two steps, for pretraining
(:func:`plan_pretraining_resume`) and fine-tuning (:func:`plan_finetune_resume`) alike:

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
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.errors import CheckpointError, ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.train.checkpoint import (
    CHECKPOINTS,
    checkpoint_step,
    list_checkpoints,
    read_run_state,
    verify_checkpoint,
)

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
        complete: the run already reached its last step (or stopped early) and wrote its final outputs.
        max_steps: the step the run ends at.
    """

    checkpoint: Path | None
    step: int = 0
    max_steps: int = 0
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
    stopped_early: bool = False,
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
        stopped_early: the run's report says it stopped before ``max_steps`` by its own rule
            (early stopping): it is then complete at ``completed_step``.
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
        return ResumePlan(checkpoint=None, max_steps=max_steps)
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
    complete = completed_step == step and (step == max_steps or stopped_early)
    return ResumePlan(chosen, step, max_steps, skipped, changes, complete)


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


def finished_report(run_dir: Path, plan: ResumePlan) -> dict[str, Any]:
    """The report of a run that already ended (``plan.complete``); says so, writes nothing."""
    if plan.step == plan.max_steps:
        ended, further = f"{plan.step} of {plan.max_steps} steps", "resume with a larger --max-steps"
    else:
        ended, further = (
            f"stopped early at step {plan.step} of {plan.max_steps}",
            "start a new run (another --out)",
        )
    notice(
        f"{run_dir} is already complete ({ended}, {run_dir / REPORT_FILE}); nothing to do. To train further, "
        f"{further}"
    )
    return dict(json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8")))


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
