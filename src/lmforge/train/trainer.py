"""Pretraining: a recipe and token data through the one training loop (:mod:`lmforge.train.loop`).

:class:`Trainer` builds the pieces of a run (model, example sources, the objective's loss from
:mod:`lmforge.tasks.pretraining`) and :class:`PretrainingObjective` plugs them into the loop:
step ``s``'s global batch is a function of ``(seed, s)``, each process takes its rows, cut into
micro-batches; validation runs the same loss over the first ``eval_batches`` validation batches
(plus the objective's controls). Resuming repeats an uninterrupted run's losses exactly;
:mod:`lmforge.train.resume` decides which checkpoint a resumed run continues from and which
changed settings it accepts.
"""

from __future__ import annotations

import json
import math
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
from lmforge.tasks.pretraining import STAT_NAMES, PretrainingLoss, get_objective, loss_terms, normalisers
from lmforge.train import checkpoint as ckpt
from lmforge.train import distributed as dist_utils
from lmforge.train.build import DataBundle, batch_tokens, example_sources, model_config, resolve_specials
from lmforge.train.config import TrainConfig
from lmforge.train.loop import LoopSettings, MicroBatches, TrainingLoop, seed_everything
from lmforge.train.optim import build_optimizer
from lmforge.train.precision import resolve_precision
from lmforge.train.resume import REPORT_FILE, ResumePlan, finished_report
from lmforge.train.resume_rules import plan_pretraining_resume, pretraining_settings
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


class PretrainingObjective:
    """A pretraining objective as the loop's :class:`~lmforge.train.loop.Objective`.

    Args:
        trainer: the run whose model, sources and settings it trains.
    """

    num_stats = len(STAT_NAMES)

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.config, self.runtime = trainer.config, trainer.runtime
        self.model, self.tokenizer = trainer.model, trainer.data.tokenizer
        self.task = get_objective(trainer.config.objective.kind)
        self.module = PretrainingLoss(trainer.model, trainer.config.objective.kind)

    def micro_batches(self, batch: dict[str, np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """This process's rows of a global batch, cut into micro-batches of tensors on the device."""
        lm_norm, sentence_norm = normalisers(batch, self.task)
        per_rank = len(batch["input_ids"]) // self.runtime.world_size
        first = self.runtime.rank * per_rank
        device = self.runtime.device
        out = []
        for start in range(first, first + per_rank, self.trainer.micro_batch):
            rows = slice(start, start + self.trainer.micro_batch)
            micro = {k: torch.from_numpy(np.ascontiguousarray(v[rows])).to(device) for k, v in batch.items()}
            micro["lm_norm"] = torch.tensor(lm_norm, device=device)
            micro["sentence_norm"] = torch.tensor(sentence_norm, device=device)
            out.append(micro)
        return out

    def batches(self, step: int) -> tuple[MicroBatches, int | None]:
        # Losses are normalised by global counts, so every micro-batch carries its own share.
        batch = self.trainer.train_source.train_batch(step, self.config.data.batch_size)
        return [(micro, 1.0) for micro in self.micro_batches(batch)], batch_tokens(batch)

    def terms(self, stats: torch.Tensor) -> dict[str, float]:
        return loss_terms(stats)

    def epoch(self, step: int) -> float:
        return self.trainer.train_source.epoch_of(step, self.config.data.batch_size)

    @torch.no_grad()
    def validate(self, loop: TrainingLoop) -> dict[str, Any]:
        """Validation loss, perplexity and accuracies over the first ``eval_batches`` batches."""
        source, batch_size = self.trainer.val_source, self.config.data.batch_size
        if source.num_examples == 0:
            return {}
        # Each validation example once: the last batch is short, never filled up with repeats.
        count = min(self.config.eval_batches, source.num_eval_batches(batch_size))
        stats = torch.zeros(len(STAT_NAMES), dtype=torch.float64, device=self.runtime.device)
        controls: dict[str, torch.Tensor] = {}  # the same batches altered (masked LM: word order destroyed)
        loop.wrapped.eval()
        try:
            for index in range(count):
                batch = source.eval_batch(index, batch_size)
                world = self.runtime.world_size
                if len(batch["input_ids"]) % world:  # ranks must run the same forwards (FSDP gathers)
                    batch = {k: v[: len(v) - len(v) % world] for k, v in batch.items()}
                    if not len(batch["input_ids"]):
                        break
                altered = self.task.validation_controls(batch, index)
                for name in altered:
                    controls.setdefault(name, torch.zeros_like(stats))
                for rows, total in [(batch, stats), *((altered[n], controls[n]) for n in altered)]:
                    for micro in self.micro_batches(rows):
                        with loop.autocast():
                            _, micro_stats = loop.forward(micro)
                        total += micro_stats
        finally:
            loop.wrapped.train()
        dist_utils.all_reduce_sum(stats, self.runtime)
        terms = loss_terms(stats)
        result = {
            "val_loss": terms["loss"],
            "val_perplexity": math.exp(min(terms["lm_loss"], 80.0)),
            "val_accuracy": float(stats[2] / stats[1].clamp(min=1)),
        }
        for name, control in controls.items():
            dist_utils.all_reduce_sum(control, self.runtime)
            result[f"val_accuracy_{name}"] = float(control[2] / control[1].clamp(min=1))
        if "sentence_loss" in terms:
            result["val_lm_loss"] = terms["lm_loss"]
            result["val_sentence_loss"] = terms["sentence_loss"]
            result["val_sentence_accuracy"] = float(stats[5] / stats[4].clamp(min=1))
        return result

    def describe(self, metrics: dict[str, Any]) -> str:
        return "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())

    def save_model(self, loop: TrainingLoop, path: Path) -> None:
        """An lmforge model directory, swapped in whole (gathered from every process under FSDP)."""
        ckpt.save_model(loop.wrapped, self.model, path, self.tokenizer, self.runtime, loop.sharded)
        dist_utils.barrier(self.runtime)


class Trainer:
    """Owns the model, optimizer, data sources and run directory of one pretraining run.

    Args:
        config: the run's settings.
        data: token data (``DataBundle.from_dir(path)`` for a prepared directory).
        out_dir: run directory: ``metrics.jsonl``, ``history.jsonl``, ``config.yaml``,
            ``checkpoints/``, ``best/``, ``model/``, ``report.json``.
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

        seed_everything(config.seed)
        self.model = TransformerModel(self.model_config).to(runtime.device)
        if config.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        self.objective = PretrainingObjective(self)
        self.loss_module = self.objective.module
        blocks = (
            []
            if self.model_config.num_layer_groups
            else [m for m in self.model.modules() if isinstance(m, Block)]
        )
        settings = json.loads(json.dumps(config.to_dict()))
        self.settings = pretraining_settings(config, data)  # saved in each checkpoint's run_state.json
        loop_settings = LoopSettings(
            max_steps=config.max_steps, optim=config.optim, precision=self.precision,
            eval_every=config.eval_every, checkpoint_every=config.checkpoint_every, keep_last=config.keep_last,
            metric="val_loss", max_minutes=config.max_minutes, log_every=config.log_every,
            line_every=config.log_every, distributed=config.distributed, compile=config.compile,
            progress=config.progress, tensorboard=config.tensorboard, settings_file="config.yaml",
            settings_text=yaml.safe_dump(settings), config=settings, run_settings=self.settings,
        )  # fmt: skip
        self.loop = TrainingLoop(
            self.objective, loop_settings, self.out_dir, runtime,
            lambda wrapped: build_optimizer(wrapped, config.optim), blocks,
        )  # fmt: skip
        self.sharded, self.wrapped, self.forward = self.loop.sharded, self.loop.wrapped, self.loop.forward
        self.optimizer, self.scaler, self.metrics = self.loop.optimizer, self.loop.scaler, self.loop.metrics

    def train_step(self, step: int) -> dict[str, float]:
        """Optimizer step ``step`` (0-based); returns the global batch's loss terms."""
        return self.loop.train_step(step)

    def evaluate(self) -> dict[str, Any]:
        """Validation loss, perplexity and accuracies over the first ``eval_batches`` batches."""
        return self.objective.validate(self.loop)

    def run(
        self, resume: bool = False, allow_config_change: bool = False, plan: ResumePlan | None = None
    ) -> dict[str, Any]:
        """Train to ``config.max_steps`` (or the time limit); returns the report (also in ``report.json``).

        Args:
            resume: continue from the newest complete checkpoint (see :func:`pretrain`).
            allow_config_change: accept optimiser / precision changes on resume.
            plan: the resume plan when the caller already made it.
        """
        config, runtime, loop = self.config, self.runtime, self.loop
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
            return finished_report(self.out_dir, plan)
        loop.run(
            plan,
            f"{self.model_config.family} {self.model.num_parameters():,} parameters, "
            f"{config.objective.kind}, {self.train_source.num_examples:,} training examples, "
            f"{runtime.world_size} process(es) on {runtime.device.type}, {self.precision}",
        )
        if not loop.last_eval:
            loop.validate(loop.step)
        self.objective.save_model(loop, self.out_dir / "model")
        report = self._report()
        if runtime.is_main:
            atomic_write_text(self.out_dir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
        return report

    def _report(self) -> dict[str, Any]:
        """``tokens_per_second`` and ``train_seconds`` cover the steps of every session of the run."""
        loop = self.loop
        last = loop.last_eval
        return {
            "steps": loop.step,
            "final_val_loss": last.get("val_loss"),
            "val_perplexity": last.get("val_perplexity"),
            "best_val_loss": loop.best_value,
            "tokens_per_second": loop.timed_tokens / loop.train_seconds if loop.train_seconds else None,
            "train_seconds": loop.train_seconds,
            "wall_seconds": loop.wall_seconds,
            "last_eval": last,
            "objective": self.config.objective.kind,
            "model": {"preset": self.config.model.preset, "family": self.model_config.family,
                      "num_parameters": self.model.num_parameters()},
            "world_size": self.runtime.world_size,
            "device": self.runtime.device.type,
            "precision": self.precision,
            "data": self.data.source,
        }  # fmt: skip


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
            the run's only as ``lmforge.train.resume_rules.PRETRAIN_RULES`` allow (cadence, limits,
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
        return finished_report(Path(out_dir), plan)
    with torch_threads(config.threads):  # config.threads applies to this run only
        trainer = Trainer(config, data, out_dir)
        try:
            return trainer.run(resume=resume, allow_config_change=allow_config_change, plan=plan)
        finally:
            dist_utils.teardown(trainer.runtime)
