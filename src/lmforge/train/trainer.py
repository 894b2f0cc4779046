"""The one training loop every pretraining objective runs through.

Step ``s`` (0-based) builds the global batch from ``(seed, s)``, gives each process its rows,
runs forward/backward over micro-batches (accumulating), clips, steps the optimizer with the
learning rate of step ``s``, then logs, validates and checkpoints on schedule. Everything a
later step depends on is in the checkpoint, so ``resume=True`` repeats an uninterrupted run's
losses exactly; :mod:`lmforge.train.resume` decides which checkpoint a resumed run continues from
and which changed settings it accepts.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.models import TransformerModel
from lmforge.models.blocks import Block
from lmforge.runtime import torch_threads
from lmforge.train import checkpoint as ckpt
from lmforge.train import distributed as dist_utils
from lmforge.train.build import DataBundle, batch_tokens, example_sources, model_config, resolve_specials
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import MetricsLog, ProgressDisplay
from lmforge.train.objectives import STAT_NAMES, PretrainingLoss, normalisers, shuffled_context
from lmforge.train.optim import build_optimizer, learning_rate, set_learning_rate
from lmforge.train.precision import autocast, resolve_precision
from lmforge.train.resume import (
    REPORT_FILE,
    ResumePlan,
    begin_resumed_run,
    describe_plan,
    notice,
    plan_pretraining_resume,
    pretraining_settings,
    start_history,
)
from lmforge.train.validation import validate_train_config


def enable_activation_checkpointing(model: TransformerModel) -> None:
    """Recompute every block's activations in the backward pass instead of storing them."""
    from torch.utils.checkpoint import checkpoint

    for module in model.modules():
        if isinstance(module, Block):
            forward = module.forward

            def checkpointed(*args: Any, _forward: Any = forward, **kwargs: Any) -> Any:
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

            module.forward = checkpointed  # type: ignore[method-assign]


class Trainer:
    """Owns the model, optimizer, data sources and run directory of one pretraining run.

    Args:
        config: the run's settings.
        data: token data (``DataBundle.from_dir(path)`` for a prepared directory).
        out_dir: run directory: ``metrics.jsonl``, ``checkpoints/``, ``best/``, ``model/``,
            ``report.json``.
    """

    def __init__(self, config: TrainConfig, data: DataBundle, out_dir: str | Path) -> None:
        self.config, self.data, self.out_dir = config, data, Path(out_dir)
        self.runtime = dist_utils.setup(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.cpu_memory_reuse and self.runtime.device.type == "cpu":
            dist_utils.keep_freed_memory()
        runtime = self.runtime
        self.precision = resolve_precision(config.precision, runtime.device)
        world = runtime.world_size
        batch = config.data.batch_size
        micro = config.data.micro_batch_size or batch // world
        if batch % world or micro <= 0 or (batch // world) % micro:
            raise ConfigError(
                f"data.batch_size={batch} must split evenly over {world} process(es) and "
                f"data.micro_batch_size={config.data.micro_batch_size}"
            )
        self.micro_batch, self.accumulation = micro, batch // world // micro

        self.specials, model_vocab = resolve_specials(data, config)
        self.model_config = model_config(config, self.specials, model_vocab)
        self.train_source, self.val_source = example_sources(data, config, self.specials)

        _seed_everything(config.seed)
        self.model = TransformerModel(self.model_config).to(runtime.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.loss_module = PretrainingLoss(self.model, config.objective.kind)
        self.sharded = runtime.distributed and config.distributed == "fsdp"
        blocks = (
            []
            if self.model_config.num_layer_groups
            else [m for m in self.model.modules() if isinstance(m, Block)]
        )
        self.wrapped = dist_utils.wrap(self.loss_module, runtime, config.distributed, blocks)
        self.forward: Any = torch.compile(self.wrapped) if config.compile else self.wrapped
        self.optimizer = build_optimizer(self.wrapped, config.optim)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.metrics = MetricsLog(self.out_dir, runtime.is_main, config.tensorboard)
        self.best_val_loss = math.inf
        self.last_eval: dict[str, float] = {}
        self.settings = pretraining_settings(config, data)  # saved in each checkpoint's run_state.json
        self.train_seconds, self.timed_tokens = 0.0, 0  # over the run's steps, across resumes

    # -- one step ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.runtime.device)

    def _micro_batches(self, batch: dict[str, np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """This process's rows of a global batch, cut into micro-batches of tensors on the device."""
        lm_norm, sentence_norm = normalisers(batch, self.config.objective.kind)
        per_rank = len(batch["input_ids"]) // self.runtime.world_size
        first = self.runtime.rank * per_rank
        device = self.runtime.device
        out = []
        for start in range(first, first + per_rank, self.micro_batch):
            rows = slice(start, start + self.micro_batch)
            micro = {k: torch.from_numpy(np.ascontiguousarray(v[rows])).to(device) for k, v in batch.items()}
            micro["lm_norm"] = torch.tensor(lm_norm, device=device)
            micro["sentence_norm"] = torch.tensor(sentence_norm, device=device)
            out.append(micro)
        return out

    def train_step(self, step: int) -> dict[str, float]:
        """Optimizer step ``step`` (0-based); returns the global batch's loss terms."""
        config, runtime = self.config, self.runtime
        set_learning_rate(self.optimizer, learning_rate(step, config.max_steps, config.optim))
        batch = self.train_source.train_batch(step, config.data.batch_size)
        micro_batches = self._micro_batches(batch)
        stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=runtime.device)
        # DDP and FSDP average gradients over processes; losses are already global shares.
        scale = float(runtime.world_size)
        for index, micro in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            with dist_utils.no_gradient_sync(self.wrapped, skip=not last):
                with self._autocast():
                    loss, micro_stats = self.forward(micro)
                scaled = loss * scale
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            stats += micro_stats
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if config.optim.l1 > 0:
            self._add_l1_gradient()
        grad_norm = math.nan
        if config.optim.clip_grad_norm:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.optim.clip_grad_norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        dist_utils.all_reduce_sum(stats, runtime)
        result = _loss_terms(stats)
        result.update(tokens=float(batch_tokens(batch)), grad_norm=grad_norm)
        return result

    def _add_l1_gradient(self) -> None:
        """L1 penalty ``l1 * sum|w|`` over decayed weights, added as its (sub)gradient ``l1 * sign(w)``."""
        for group in self.optimizer.param_groups:
            if group.get("name") != "decay":
                continue
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.add_(param.detach().sign(), alpha=self.config.optim.l1)

    # -- evaluation ----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss, perplexity and accuracies over the first ``eval_batches`` batches."""
        source, batch_size = self.val_source, self.config.data.batch_size
        if source.num_examples == 0:
            return {}
        # Each validation example once: the last batch is short, never filled up with repeats.
        count = min(self.config.eval_batches, source.num_eval_batches(batch_size))
        stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=self.runtime.device)
        masked = self.config.objective.kind == "masked_lm"
        shuffled = torch.zeros_like(stats)  # masked LM: the same batches with word order destroyed
        self.wrapped.eval()
        try:
            for index in range(count):
                batch = source.eval_batch(index, batch_size)
                world = self.runtime.world_size
                if len(batch["input_ids"]) % world:  # ranks must run the same forwards (FSDP gathers)
                    batch = {k: v[: len(v) - len(v) % world] for k, v in batch.items()}
                    if not len(batch["input_ids"]):
                        break
                controls = [(batch, stats)] + ([(shuffled_context(batch, index), shuffled)] if masked else [])
                for rows, total in controls:
                    for micro in self._micro_batches(rows):
                        with self._autocast():
                            _, micro_stats = self.forward(micro)
                        total += micro_stats
        finally:
            self.wrapped.train()
        dist_utils.all_reduce_sum(stats, self.runtime)
        terms = _loss_terms(stats)
        result = {
            "val_loss": terms["loss"],
            "val_perplexity": math.exp(min(terms["lm_loss"], 80.0)),
            "val_accuracy": float(stats[2] / stats[1].clamp(min=1)),
        }
        if masked:  # how much of the accuracy needs word order (~0: the model is a bag of words)
            dist_utils.all_reduce_sum(shuffled, self.runtime)
            result["val_accuracy_shuffled"] = float(shuffled[2] / shuffled[1].clamp(min=1))
        if "sentence_loss" in terms:
            result["val_lm_loss"] = terms["lm_loss"]
            result["val_sentence_loss"] = terms["sentence_loss"]
            result["val_sentence_accuracy"] = float(stats[5] / stats[4].clamp(min=1))
        return result

    # -- the loop ------------------------------------------------------------------------------

    def _trainer_state(self, step: int, tokens_seen: int) -> dict[str, Any]:
        return {
            "best_val_loss": self.best_val_loss,
            "last_eval": self.last_eval,
            "tokens_seen": tokens_seen,
            "train_seconds": self.train_seconds,
            "timed_tokens": self.timed_tokens,
            "config": json.loads(json.dumps(self.config.to_dict())),
        }

    def _save_checkpoint(self, step: int, tokens_seen: int) -> None:
        ckpt.save_checkpoint(
            self.out_dir, step, self.wrapped, self.model, self.optimizer, self.scaler,
            self._trainer_state(step, tokens_seen), self.data.tokenizer, self.runtime, self.sharded,
            self.config.keep_last, run_state={"settings": self.settings},
        )  # fmt: skip

    def _save_model(self, name: str) -> None:
        """Write an lmforge model directory atomically: into a temp dir, then swapped in."""
        final, tmp = self.out_dir / name, self.out_dir / f".tmp-{name}"
        if self.runtime.is_main and tmp.exists():
            shutil.rmtree(tmp)
        ckpt.save_model(self.wrapped, self.model, tmp, self.data.tokenizer, self.runtime, self.sharded)
        if self.runtime.is_main:
            if final.exists():
                shutil.rmtree(final)
            tmp.replace(final)
        dist_utils.barrier(self.runtime)

    def _begin(self, resumed: ResumePlan | None) -> tuple[int, int]:
        """Load the checkpoint ``resumed`` names (if any) and prepare the run directory for the
        steps after it; returns (steps done, tokens seen)."""
        runtime = self.runtime
        start_step, tokens_seen = 0, 0
        if resumed is not None and resumed.checkpoint is not None:
            state = ckpt.load_checkpoint(
                resumed.checkpoint,
                self.wrapped,
                self.model,
                self.optimizer,
                self.scaler,
                runtime,
                self.sharded,
            )
            start_step, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
            self.best_val_loss = float(state.get("best_val_loss", math.inf))
            self.last_eval = dict(state.get("last_eval", {}))
            # Checkpoints from before these were kept have neither: throughput then covers this session.
            self.train_seconds = float(state.get("train_seconds", 0.0))
            self.timed_tokens = int(state.get("timed_tokens", 0))
        if runtime.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            config_file = self.out_dir / "config.yaml"
            if resumed is not None:
                begin_resumed_run(self.out_dir, resumed)
            else:
                start_history(self.out_dir)
            # config.yaml holds the settings the run started with; later changes are in history.jsonl.
            if resumed is None or not config_file.is_file():
                settings = json.loads(json.dumps(self.config.to_dict()))
                atomic_write_text(config_file, yaml.safe_dump(settings))
            self.metrics.truncate(start_step)
        return start_step, tokens_seen

    def run(
        self, resume: bool = False, allow_config_change: bool = False, plan: ResumePlan | None = None
    ) -> dict[str, Any]:
        """Train to ``config.max_steps`` (or the time limit); returns the report (also in ``report.json``).

        Args:
            resume: continue from the newest complete checkpoint (see :func:`pretrain`).
            allow_config_change: accept optimiser / precision changes on resume.
            plan: the resume plan when the caller already made it.
        """
        config, runtime = self.config, self.runtime
        if not resume:
            previous = ckpt.latest(self.out_dir)
            if previous is not None:
                raise ConfigError(
                    f"{self.out_dir} already holds checkpoints ({previous.name}); pass --resume to continue "
                    "or choose another --out"
                )
        elif plan is None:
            plan = plan_pretraining_resume(config, self.data, self.out_dir, allow_config_change)
        if plan is not None and plan.complete:
            return _finished_report(self.out_dir, plan)
        resumed = plan if plan is not None and plan.checkpoint is not None else None
        start_step, tokens_seen = self._begin(resumed)
        display = ProgressDisplay(config.progress and runtime.is_main, config.max_steps, start_step)
        if resumed is not None:
            for line in describe_plan(resumed):
                notice(line)
            display.print(f"resumed from {resumed.checkpoint} at step {start_step}")
        display.print(
            f"{self.model_config.family} {self.model.num_parameters():,} parameters, "
            f"{config.objective.kind}, {self.train_source.num_examples:,} training examples, "
            f"{runtime.world_size} process(es) on {runtime.device.type}, {self.precision}"
        )
        session_seconds, session_tokens, window_loss, window_steps = 0.0, 0, 0.0, 0
        began = time.perf_counter()
        step = start_step
        try:
            while step < config.max_steps:
                tick = time.perf_counter()
                result = self.train_step(step)
                step += 1
                seconds = time.perf_counter() - tick
                session_seconds += seconds
                self.train_seconds += seconds
                tokens_seen += int(result["tokens"])
                session_tokens += int(result["tokens"])
                self.timed_tokens += int(result["tokens"])
                window_loss, window_steps = window_loss + result["loss"], window_steps + 1
                tokens_per_second = session_tokens / max(session_seconds, 1e-9)
                info = f"loss {result['loss']:.4f}  {tokens_per_second:,.0f} tok/s"
                if step % config.log_every == 0 or step == config.max_steps:
                    record = {
                        "kind": "train", "step": step, **{k: v for k, v in result.items() if k != "tokens"},
                        "mean_loss": window_loss / window_steps, "lr": self.optimizer.param_groups[0]["lr"],
                        "tokens_per_second": tokens_per_second,
                        "epoch": self.train_source.epoch_of(step, config.data.batch_size),
                    }  # fmt: skip
                    self.metrics.write(record)
                    window_loss, window_steps = 0.0, 0
                display.step(step, info, force_line=step % config.log_every == 0)
                out_of_time = (
                    config.max_minutes is not None and (time.perf_counter() - began) > 60 * config.max_minutes
                )
                out_of_time = dist_utils.broadcast_flag(out_of_time, runtime)
                final = step == config.max_steps or out_of_time
                if step % config.eval_every == 0 or final:
                    self._evaluate_and_log(step, display)
                if step % config.checkpoint_every == 0 or final:
                    self._save_checkpoint(step, tokens_seen)
                if out_of_time:
                    display.print(f"time limit of {config.max_minutes} min reached at step {step}")
                    break
        finally:
            display.close()
            self.metrics.close()
        if not self.last_eval:
            self._evaluate_and_log(step, display)
        self._save_model("model")
        report = self._report(step, self.timed_tokens, self.train_seconds, time.perf_counter() - began)
        if runtime.is_main:
            atomic_write_text(self.out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        return report

    def _evaluate_and_log(self, step: int, display: ProgressDisplay) -> None:
        result = self.evaluate()
        if not result:
            return
        self.last_eval = {"step": step, **result}
        self.metrics.write({"kind": "eval", "step": step, **result})
        display.print(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()))
        if result["val_loss"] < self.best_val_loss:
            self.best_val_loss = result["val_loss"]
            self._save_model("best")

    def _report(self, step: int, tokens: int, train_seconds: float, wall_seconds: float) -> dict[str, Any]:
        """``tokens_per_second`` and ``train_seconds`` cover the steps of every session of the run."""
        last = self.last_eval
        return {
            "steps": step,
            "final_val_loss": last.get("val_loss"),
            "val_perplexity": last.get("val_perplexity"),
            "best_val_loss": None if math.isinf(self.best_val_loss) else self.best_val_loss,
            "tokens_per_second": tokens / train_seconds if train_seconds else None,
            "train_seconds": train_seconds,
            "wall_seconds": wall_seconds,
            "last_eval": last,
            "objective": self.config.objective.kind,
            "model": {"preset": self.config.model.preset, "family": self.model_config.family,
                      "num_parameters": self.model.num_parameters()},
            "world_size": self.runtime.world_size,
            "device": self.runtime.device.type,
            "precision": self.precision,
            "data": self.data.source,
        }  # fmt: skip


def _loss_terms(stats: torch.Tensor) -> dict[str, float]:
    values = dict(zip(STAT_NAMES, stats.tolist()))
    lm = values["lm_loss"] / max(values["lm_count"], 1.0)
    terms = {"loss": lm, "lm_loss": lm}
    if values["sentence_count"]:
        sentence = values["sentence_loss"] / values["sentence_count"]
        terms.update(loss=lm + sentence, sentence_loss=sentence)
    return terms


def _finished_report(out_dir: Path, plan: ResumePlan) -> dict[str, Any]:
    """The report of a run that already reached its last step; nothing is written."""
    notice(
        f"{out_dir} is already complete ({plan.step} of {plan.step} steps, {out_dir / REPORT_FILE}); nothing "
        "to do. To train further, resume with a larger --max-steps"
    )
    return dict(json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8")))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pretrain(
    config: TrainConfig,
    out_dir: str | Path,
    data: DataBundle | str | Path | None = None,
    resume: bool = False,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Run pretraining end to end; the Python face of ``lmforge pretrain``.

    Args:
        config: settings (``load_config(recipe, overrides)``).
        out_dir: the run directory.
        data: token data, a prepared directory, or ``None`` for ``config.data.path``.
        resume: continue from the newest complete checkpoint in ``out_dir`` (start fresh if none;
            a torn newer one is set aside with a message). A run that already reached
            ``max_steps`` is left untouched and its report returned. Settings may differ from
            the run's only as ``lmforge.train.resume.PRETRAIN_RULES`` allow (cadence, limits,
            ``max_steps``); each accepted change goes to ``out_dir/history.jsonl``.
        allow_config_change: on resume, also accept changed optimiser settings (``optim.*``),
            ``precision``, ``device`` and ``distributed``.

    Returns:
        The report: ``final_val_loss``, ``val_perplexity``, ``tokens_per_second``, ``steps``, ...

    Raises:
        ConfigError: on resume, a setting differs that may not (every such field named, old → new).
        CheckpointError: on resume, checkpoints exist but none is complete (with the command that
            starts over).
    """
    validate_train_config(config)  # the Python API gets the CLI's checks, before any work
    if not isinstance(data, DataBundle):
        path = data if data is not None else config.data.path
        if path is None:
            raise ConfigError("no training data: pass --data DIR or set data.path in the recipe")
        data = DataBundle.from_dir(str(path))
    # Planned before the model is built: a refused change must not reach model construction or
    # load_state_dict, and a finished run must not be touched.
    plan = plan_pretraining_resume(config, data, out_dir, allow_config_change) if resume else None
    if plan is not None and plan.complete:
        return _finished_report(Path(out_dir), plan)
    with torch_threads(config.threads):  # config.threads applies to this run only
        trainer = Trainer(config, data, out_dir)
        try:
            return trainer.run(resume=resume, allow_config_change=allow_config_change, plan=plan)
        finally:
            dist_utils.teardown(trainer.runtime)
