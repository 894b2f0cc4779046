"""The one training loop that pretraining and every fine-tuning task run through.

Step ``s`` (0-based) asks the :class:`Objective` for this process's micro-batches of step ``s``
(a pure function of the seed and ``s``), runs forward/backward over them (accumulating, each loss
weighted by its share), clips, steps the optimizer with the learning rate of step ``s``, then
logs, validates, keeps the best model, stops early and checkpoints on schedule. The loop owns the
optimizer, precision, distributed wrapping, evaluation cadence, early stopping, checkpoints,
resume and logging; it never knows which objective it trains. The objective (pretraining's
:class:`~lmforge.train.trainer.PretrainingObjective`, fine-tuning's
:class:`~lmforge.train.finetune.FinetuneObjective`, both over :mod:`lmforge.tasks`) gives the
batches, the loss, the validation metrics and how a model is saved.

Everything a later step depends on is in the checkpoint (weights, optimizer, loss scaler, every
RNG, the loop's best / patience / throughput state), so a run resumed from the checkpoint of
step ``s`` repeats the uninterrupted run's losses exactly; :mod:`lmforge.train.resume` decides
which checkpoint a resumed run continues from and which changed settings it accepts.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.models import TransformerModel
from lmforge.tasks import LOWER_IS_BETTER
from lmforge.tokenizers import Tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train import distributed as dist_utils
from lmforge.train.config import OptimConfig
from lmforge.train.distributed import Runtime
from lmforge.train.metrics import MetricsLog, ProgressDisplay
from lmforge.train.optim import learning_rate, set_learning_rate
from lmforge.train.precision import autocast
from lmforge.train.resume import ResumePlan, begin_resumed_run, describe_plan, notice, start_history

__all__ = ["EvalCallback", "LoopSettings", "MicroBatches", "Objective", "TrainingLoop", "seed_everything"]

#: This process's micro-batches of one step, each with the share of the step's loss it carries.
MicroBatches = list[tuple[dict[str, Tensor], float]]
#: ``on_evaluate(step, metrics)`` after each validation (``lmforge tune`` reports to its trial and
#: may raise to stop the run, e.g. ``optuna.TrialPruned``).
EvalCallback = Callable[[int, dict[str, Any]], None]


class Objective(Protocol):
    """What a run trains: the loop calls only these.

    Attributes:
        model: the model whose weights every checkpoint holds.
        module: ``forward(micro_batch) -> (loss, stats)``: the micro-batch's loss (its share of
            the step's loss) and a float64 vector of ``num_stats`` sums; what DDP / FSDP /
            ``torch.compile`` wrap.
        tokenizer: saved with every checkpoint.
        num_stats: length of ``stats``.
    """

    model: TransformerModel
    tokenizer: Tokenizer | None
    num_stats: int

    @property
    def module(self) -> nn.Module: ...

    def batches(self, step: int) -> tuple[MicroBatches, int | None]:
        """This process's micro-batches of step ``step`` (0-based) and the global batch's token
        count (``None``: not measured)."""
        ...

    def terms(self, stats: Tensor) -> dict[str, float]:
        """The step's loss terms (``loss`` first) from ``stats`` summed over micro-batches and processes."""
        ...

    def epoch(self, step: int) -> float:
        """Passes over the training data after ``step`` steps."""
        ...

    def validate(self, loop: TrainingLoop) -> dict[str, Any]:
        """Validation metrics of the current weights; ``{}`` when there is no validation data."""
        ...

    def describe(self, metrics: dict[str, Any]) -> str:
        """The console line of a validation's metrics."""
        ...

    def save_model(self, loop: TrainingLoop, path: Path) -> None:
        """Write a loadable model directory at ``path`` (the best one, or the run's result)."""
        ...


@dataclass
class LoopSettings:
    """How the loop runs, whatever it trains.

    Attributes:
        max_steps: optimizer steps (also the length of the learning-rate schedule).
        optim: schedule, gradient clipping and L1 penalty (the optimizer itself is built by the caller).
        precision: a resolved precision (:func:`lmforge.train.precision.resolve_precision`).
        eval_every: validate every N steps (and after the last one).
        checkpoint_every: checkpoint every N steps (and after the last one).
        keep_last: complete checkpoints kept; 0: none written (the run cannot be resumed).
        metric: the validation metric the best model and early stopping watch (lower is better
            for those in :data:`lmforge.tasks.LOWER_IS_BETTER`).
        patience: stop after this many validations without improvement; ``None``: never.
        max_minutes: stop (and checkpoint) after this much wall time; ``None``: no limit.
        keep_best_on_interrupt: Ctrl-C ends the run normally when a best model was saved
            (fine-tuning keeps it), instead of propagating.
        log_every: steps between ``metrics.jsonl`` train records.
        line_every: steps between progress lines when stderr is not a terminal.
        distributed / compile: under torchrun, ``ddp`` or ``fsdp`` wrapping; ``torch.compile``.
        settings_file / settings_text: written at the start of a fresh run (``config.yaml``,
            ``finetune.json``); a resumed run keeps the original and records changes in
            ``history.jsonl``.
        config: the run's settings as JSON types, also kept in each checkpoint's ``trainer.pt``.
        run_settings: flat settings saved in each checkpoint's ``run_state.json``, which a resumed
            run is compared with.
    """

    max_steps: int
    optim: OptimConfig
    precision: str
    eval_every: int
    checkpoint_every: int
    keep_last: int
    metric: str = "val_loss"
    patience: int | None = None
    max_minutes: float | None = None
    keep_best_on_interrupt: bool = False
    log_every: int = 1
    line_every: int = 50
    distributed: str = "ddp"
    compile: bool = False
    progress: bool = True
    tensorboard: bool = False
    settings_file: str = "config.yaml"
    settings_text: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    run_settings: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (before building a model or loading one with a fresh head)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _better(value: float, best: float | None, lower_is_better: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best if lower_is_better else value > best


def _plain(value: Any) -> Any:
    """``value`` as JSON types (checkpoints load with ``weights_only``, which takes no numpy scalars)."""
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))


class TrainingLoop:
    """Trains an :class:`Objective` in a run directory; :meth:`run` goes from the start (or a
    resume plan's checkpoint) to the last step, an early stop, the time limit or Ctrl-C.

    Args:
        objective: what is trained.
        settings: how.
        out_dir: the run directory (``metrics.jsonl``, ``history.jsonl``, ``checkpoints/``, ``best/``).
        runtime: this process's device and place in the world.
        make_optimizer: builds the optimizer over the wrapped module's parameters.
        shard_modules: modules FSDP shards one by one (the blocks).
        on_evaluate: called as ``on_evaluate(step, metrics)`` after each validation.

    After :meth:`run`: ``step``, ``best`` / ``best_value`` (metrics and value of the best
    validation), ``last_eval``, ``stopped_early``, ``interrupted``, ``train_seconds`` and
    ``timed_tokens`` (over every session of the run), ``tokens_seen``, ``wall_seconds``.
    """

    def __init__(
        self,
        objective: Objective,
        settings: LoopSettings,
        out_dir: Path,
        runtime: Runtime,
        make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
        shard_modules: Sequence[nn.Module] = (),
        on_evaluate: EvalCallback | None = None,
    ) -> None:
        self.objective, self.settings, self.out_dir, self.runtime = (
            objective,
            settings,
            Path(out_dir),
            runtime,
        )
        self.on_evaluate = on_evaluate
        self.sharded = runtime.distributed and settings.distributed == "fsdp"
        self.wrapped = dist_utils.wrap(objective.module, runtime, settings.distributed, shard_modules)
        self.forward: Any = torch.compile(self.wrapped) if settings.compile else self.wrapped
        self.optimizer = make_optimizer(self.wrapped)
        self.scaler = torch.amp.GradScaler("cuda") if settings.precision == "fp16" else None
        self.metrics = MetricsLog(self.out_dir, runtime.is_main, settings.tensorboard)
        self.display: ProgressDisplay | None = None
        self.step = 0
        self.best_value: float | None = None
        self.best: dict[str, Any] | None = None
        self.stale = 0
        self.last_eval: dict[str, Any] = {}
        self.stopped_early = self.interrupted = False
        self.tokens_seen, self.timed_tokens = 0, 0
        self.train_seconds, self.wall_seconds = 0.0, 0.0

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.settings.precision, self.runtime.device)

    # -- one step ----------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, float]:
        """Optimizer step ``step`` (0-based); returns the step's loss terms, ``grad_norm``, ``lr``
        and (when measured) ``tokens``."""
        settings, runtime = self.settings, self.runtime
        lr = learning_rate(step, settings.max_steps, settings.optim)
        set_learning_rate(self.optimizer, lr)
        micro_batches, tokens = self.objective.batches(step)
        stats = torch.zeros(self.objective.num_stats, dtype=torch.float64, device=runtime.device)
        # DDP and FSDP average gradients over processes; losses are already global shares.
        scale = float(runtime.world_size)
        for index, (micro, share) in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            with dist_utils.no_gradient_sync(self.wrapped, skip=not last):
                with self.autocast():
                    loss, micro_stats = self.forward(micro)
                scaled = loss * (scale * share)
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            stats += micro_stats * share
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if settings.optim.l1 > 0:
            self._add_l1_gradient()
        grad_norm = math.nan
        if settings.optim.clip_grad_norm:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.optim.clip_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        dist_utils.all_reduce_sum(stats, runtime)
        result = {**self.objective.terms(stats), "grad_norm": grad_norm, "lr": lr}
        if tokens is not None:
            result["tokens"] = float(tokens)
        return result

    def _add_l1_gradient(self) -> None:
        """L1 penalty ``l1 * sum|w|`` over decayed weights, added as its (sub)gradient ``l1 * sign(w)``."""
        for group in self.optimizer.param_groups:
            if group.get("name") != "decay":
                continue
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.add_(param.detach().sign(), alpha=self.settings.optim.l1)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, plan: ResumePlan | None, start_line: str) -> None:
        """Train from the checkpoint ``plan`` names (or step 0) until the run ends.

        Args:
            plan: a resume plan (:func:`lmforge.train.resume.plan_resume`); ``None`` or one without
                a checkpoint starts a fresh run.
            start_line: printed once training starts (model, data, device).
        """
        settings, runtime = self.settings, self.runtime
        resumed = plan if plan is not None and plan.checkpoint is not None else None
        start_step = self._begin(resumed)
        display = self.display = ProgressDisplay(
            settings.progress and runtime.is_main, settings.max_steps, start_step
        )
        if resumed is not None:
            for line in describe_plan(resumed):
                notice(line)
            display.print(f"resumed from {resumed.checkpoint} at step {start_step}")
        display.print(start_line)
        session_seconds, session_tokens, window_loss, window_steps = 0.0, 0, 0.0, 0
        began = time.perf_counter()
        step = self.step = start_step
        # The loop owns the mode: a loaded model arrives in eval mode, and training steps need
        # dropout (validation switches to eval and back itself).
        self.wrapped.train()
        try:
            while step < settings.max_steps:
                tick = time.perf_counter()
                result = self.train_step(step)
                step = self.step = step + 1
                seconds = time.perf_counter() - tick
                session_seconds += seconds
                self.train_seconds += seconds
                tokens = result.pop("tokens", None)
                lr = result.pop("lr")
                window_loss, window_steps = window_loss + result["loss"], window_steps + 1
                info = f"loss {result['loss']:.4f}"
                record = {
                    "kind": "train",
                    "step": step,
                    **result,
                    "mean_loss": window_loss / window_steps,
                    "lr": lr,
                }
                if tokens is not None:
                    self.tokens_seen += int(tokens)
                    self.timed_tokens += int(tokens)
                    session_tokens += int(tokens)
                    record["tokens_per_second"] = session_tokens / max(session_seconds, 1e-9)
                    info += f"  {record['tokens_per_second']:,.0f} tok/s"
                if step % settings.log_every == 0 or step == settings.max_steps:
                    self.metrics.write({**record, "epoch": self.objective.epoch(step)})
                    window_loss, window_steps = 0.0, 0
                display.step(step, info, force_line=step % settings.line_every == 0)
                out_of_time = (
                    settings.max_minutes is not None
                    and (time.perf_counter() - began) > 60 * settings.max_minutes
                )
                out_of_time = dist_utils.broadcast_flag(out_of_time, runtime)
                final = step == settings.max_steps or out_of_time
                if step % settings.eval_every == 0 or final:
                    final = self.validate(step) or final
                if settings.keep_last and (step % settings.checkpoint_every == 0 or final):
                    self._save_checkpoint(step)
                if out_of_time:
                    display.print(f"time limit of {settings.max_minutes} min reached at step {step}")
                if final:
                    break
        except KeyboardInterrupt:
            # Ctrl-C keeps the best validation checkpoint as the run's model; without one there is
            # nothing trustworthy to keep (the live weights may be mid-update), so the interrupt stands.
            best_dir = self.out_dir / "best" / "config.json"
            if not settings.keep_best_on_interrupt or self.best is None or not best_dir.exists():
                raise
            self.interrupted = True
            display.print(
                f"interrupted at step {step}: the run keeps the best checkpoint (step {self.best['step']})"
            )
        finally:
            display.close()
            self.metrics.close()
            self.wall_seconds = time.perf_counter() - began

    def validate(self, step: int) -> bool:
        """Validate at ``step``: log the metrics, keep the best model in ``RUN/best``; returns
        whether patience ran out (the run stops early)."""
        metrics = self.objective.validate(self)
        if not metrics:
            return False
        settings = self.settings
        self.last_eval = {"step": step, **metrics}
        self.metrics.write({"kind": "eval", **{k: v for k, v in self.last_eval.items() if _is_number(v)}})
        if settings.metric not in self.last_eval:
            raise ConfigError(
                f"metric {settings.metric!r} is not among the validation metrics {sorted(self.last_eval)}"
            )
        value = float(self.last_eval[settings.metric])
        if self.display is not None:
            self.display.print(f"step {step}: {self.objective.describe(metrics)}")
        if self.on_evaluate is not None:
            self.on_evaluate(step, dict(self.last_eval))
        if _better(value, self.best_value, settings.metric in LOWER_IS_BETTER):
            self.best_value, self.best, self.stale = value, dict(self.last_eval), 0
            self.objective.save_model(self, self.out_dir / "best")
            return False
        self.stale += 1
        if settings.patience is not None and self.stale >= settings.patience:
            self.stopped_early = True
            if self.display is not None:
                self.display.print(
                    f"early stop at step {step}: no better {settings.metric} for {self.stale} evaluations"
                )
            return True
        return False

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """The loop's part of ``trainer.pt``: what later steps and the report depend on."""
        return {
            "best_value": self.best_value,
            "best": _plain(self.best),
            "stale": self.stale,
            "last_eval": _plain(self.last_eval),
            "tokens_seen": self.tokens_seen,
            "train_seconds": self.train_seconds,
            "timed_tokens": self.timed_tokens,
            "config": self.settings.config,
        }

    def _save_checkpoint(self, step: int) -> None:
        ckpt.save_checkpoint(
            self.out_dir, step, self.wrapped, self.objective.model, self.optimizer, self.scaler,
            self._state(), self.objective.tokenizer, self.runtime, self.sharded, self.settings.keep_last,
            run_state={"settings": self.settings.run_settings},
        )  # fmt: skip

    def _begin(self, resumed: ResumePlan | None) -> int:
        """Load the checkpoint ``resumed`` names (if any) and prepare the run directory for the
        steps after it; returns the steps done."""
        start_step = 0
        if resumed is not None and resumed.checkpoint is not None:
            state = ckpt.load_checkpoint(
                resumed.checkpoint, self.wrapped, self.objective.model, self.optimizer, self.scaler,
                self.runtime, self.sharded,
            )  # fmt: skip
            start_step, self.tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
            # Pretraining checkpoints from before the one loop kept the best value as best_val_loss.
            best = state.get("best_value", state.get("best_val_loss"))
            self.best_value = None if best is None or math.isinf(best) else float(best)
            self.best, self.stale = state.get("best"), int(state.get("stale", 0))
            self.last_eval = dict(state.get("last_eval") or {})
            # Checkpoints from before these were kept have neither: throughput then covers this session.
            self.train_seconds = float(state.get("train_seconds", 0.0))
            self.timed_tokens = int(state.get("timed_tokens", 0))
        if self.runtime.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            settings_file = self.out_dir / self.settings.settings_file
            if resumed is not None:
                begin_resumed_run(self.out_dir, resumed)
            else:
                start_history(self.out_dir)
            # The settings file holds the settings the run started with; later changes are in history.jsonl.
            if resumed is None or not settings_file.is_file():
                atomic_write_text(settings_file, self.settings.settings_text)
            self.metrics.truncate(start_step if resumed is not None else -1)
        return start_step
