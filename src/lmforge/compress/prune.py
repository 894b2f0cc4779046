"""Pruning a fine-tuned model (``lmforge prune``): structured or magnitude, then a recovery fine-tune.

- Structured (``heads`` / ``ffn``): heads and MLP neurons ranked by gradient x activation
  importance on the model's training data (:mod:`lmforge.compress.importance`), the least
  important share removed and the tensors shrunk (:mod:`lmforge.compress.structured`).
- Magnitude (``magnitude``): the smallest weights of the block linears zeroed, at once or on a
  cubic schedule during recovery (:mod:`lmforge.compress.magnitude`).

Recovery is a short fine-tune on the same data through the training stage's loop
(:func:`lmforge.train.finetune.finetune_model`); the result is written like every compression
verb's (:func:`lmforge.compress.output.publish`).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge.compress.data import TrainData, read_train_data
from lmforge.compress.importance import unit_importance
from lmforge.compress.magnitude import MagnitudePruner
from lmforge.compress.output import prepare_output, publish
from lmforge.compress.report import EvalData
from lmforge.compress.structured import check_prunable, select_units, shrink_heads, shrink_neurons
from lmforge.data import TaskDataConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models.io.checkpoint import LoadedModel, load
from lmforge.models.model import parameter_bytes
from lmforge.runtime import torch_threads
from lmforge.train.config import OptimConfig
from lmforge.train.finetune import FinetuneConfig, finetune_model

__all__ = ["PruneConfig", "prune", "prune_model", "recovery_finetune"]


@dataclass
class PruneConfig:
    """Settings of ``lmforge prune``.

    Attributes:
        heads: share of attention heads removed (structured).
        ffn: share of MLP neurons removed (structured).
        magnitude: share of block-linear weights set to zero (unstructured).
        scope: ``global`` (rank all layers together) or ``layer`` (the same share in each).
        schedule: magnitude: ``oneshot`` or ``cubic`` (gradual, during recovery; needs steps).
        data: training data of the model's task (importance scores and recovery).
        data_config: its columns and record limit.
        importance_batches: batches the importance is summed over.
        recovery_steps: fine-tuning steps after pruning (0: none).
        batch_size: examples per batch (importance and recovery).
        lr: recovery learning rate (linear decay, 6% warmup).
        seed: batch order and dropout.
        threads: torch CPU threads.
    """

    heads: float = 0.0
    ffn: float = 0.0
    magnitude: float = 0.0
    scope: str = "global"
    schedule: str = "oneshot"
    data: str | Path | None = None
    data_config: TaskDataConfig = field(default_factory=TaskDataConfig)
    importance_batches: int = 8
    recovery_steps: int = 0
    batch_size: int = 16
    lr: float = 5e-5
    seed: int = 0
    threads: int | None = None

    @property
    def structured(self) -> bool:
        return bool(self.heads or self.ffn)

    def validate(self) -> None:
        """Refuse bad settings before anything is read or written."""
        for option, value in (("--heads", self.heads), ("--ffn", self.ffn), ("--magnitude", self.magnitude)):
            if not 0 <= value < 1:
                raise ConfigError(f"{option} {value}: a share to remove, in [0, 1)")
        if self.structured and self.magnitude:
            raise ConfigError("--heads / --ffn (structured) and --magnitude are separate runs; give one kind")
        if not (self.structured or self.magnitude):
            raise ConfigError("nothing to prune: give --heads and/or --ffn, or --magnitude")
        if self.scope not in ("global", "layer"):
            raise ConfigError(f"--scope {self.scope!r}: global or layer")
        if self.schedule not in ("oneshot", "cubic"):
            raise ConfigError(f"--schedule {self.schedule!r}: oneshot or cubic")
        if self.schedule == "cubic" and (not self.magnitude or self.recovery_steps < 10):
            raise ConfigError(
                "--schedule cubic prunes gradually during recovery: needs --magnitude and --recovery-steps >= 10"
            )
        for option, number in (("--recovery-steps", self.recovery_steps), ("--importance-batches", self.importance_batches - 1), ("--batch-size", self.batch_size - 1)):  # fmt: skip
            if number < 0:
                raise ConfigError(f"{option}: must be {'>= 0' if option == '--recovery-steps' else '>= 1'}")
        if self.lr <= 0:
            raise ConfigError(f"--lr {self.lr}: must be > 0")
        if self.data is None and (self.structured or self.recovery_steps):
            need = "importance scores" if self.structured else "--recovery-steps"
            raise ConfigError(f"--data (the model's training data) is needed for {need}")


def prune_model(loaded: LoadedModel, config: PruneConfig, train: TrainData | None) -> dict[str, Any]:
    """Structured pruning of ``loaded.model`` in place; returns what was kept per layer."""
    model = loaded.model
    assert train is not None
    batches = train.batches(config.importance_batches, config.batch_size)
    importance = unit_importance(model, batches, train.loss(loaded))
    report: dict[str, Any] = {}
    if config.heads:
        keep = select_units(importance.heads, config.heads, config.scope)
        shrink_heads(model, keep)
        report["heads_kept"] = [len(k) for k in keep]
    if config.ffn:
        keep = select_units(importance.neurons, config.ffn, config.scope)
        shrink_neurons(model, keep)
        report["neurons_kept"] = [len(k) for k in keep]
    loaded.config = model.config
    return report


def recovery_finetune(
    loaded: LoadedModel,
    train: TrainData,
    steps: int,
    config: PruneConfig,
    pruner: MagnitudePruner | None = None,
) -> dict[str, Any]:
    """A short fine-tune of the (pruned) model in place through the training loop; with ``pruner``
    its masks hold (and its schedule runs) at every optimizer step."""
    settings = FinetuneConfig(
        task=train.task.name,  # type: ignore[arg-type]
        max_length=train.task.settings_for(loaded).max_length,
        batch_size=config.batch_size,
        max_steps=steps,
        optim=OptimConfig(lr=config.lr, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01),
        keep_last=0,
        seed=config.seed,
        progress=False,
    )
    assert loaded.tokenizer is not None
    with tempfile.TemporaryDirectory(prefix="lmforge-recovery-") as run:
        loaded.model.train()
        with pruner.training() if pruner is not None else contextlib.nullcontext():
            report = finetune_model(
                loaded.model, loaded.tokenizer, train.split, Path(run) / "run", settings, train.label_names
            )
    loaded.model.eval()
    return {k: report.get(k) for k in ("steps", "train_seconds", "examples_per_second")}


def prune(
    model: str | Path, out: str | Path, config: PruneConfig, eval_data: EvalData | None = None
) -> dict[str, Any]:
    """Prune the fine-tuned model at ``model`` into the checkpoint ``out``.

    Returns:
        The report written to ``out/compression.json``: settings, parameters and weight bytes before
        and after, kept units per layer or the measured sparsity, the recovery run (and, with
        ``eval_data``, the calibration report).
    """
    config.validate()
    prepare_output(out, eval_data)
    loaded = load(model)
    if config.structured:
        check_prunable(loaded.model, bool(config.heads), str(model))
    elif loaded.config.extra.get("quantization"):
        raise UnsupportedError(f"{model}: prune the float model, then quantize")
    torch.manual_seed(config.seed)
    with torch_threads(config.threads):
        train = (
            read_train_data(loaded, config.data, config.data_config, seed=config.seed)
            if config.data
            else None
        )
        before = copy.deepcopy(loaded) if eval_data is not None else None
        report: dict[str, Any] = {
            "kind": "prune",
            "model": str(model),
            "settings": {k: v for k, v in asdict(config).items() if k != "data_config"},
            "parameters_before": loaded.model.num_parameters(),
            "weight_bytes_before": parameter_bytes(loaded.model),
        }
        pruner = None
        if config.structured:
            report.update(prune_model(loaded, config, train))
        else:
            pruner = MagnitudePruner(
                loaded.model, config.magnitude, config.scope, config.schedule, config.recovery_steps
            )
            if not config.recovery_steps:
                pruner.prune_to(config.magnitude)
        if config.recovery_steps:
            assert train is not None
            report["recovery"] = recovery_finetune(loaded, train, config.recovery_steps, config, pruner)
        if pruner is not None:
            report["sparsity"] = pruner.sparsity()
        report["parameters_after"] = loaded.model.num_parameters()
        report["weight_bytes_after"] = parameter_bytes(loaded.model)
        publish(out, loaded.model, loaded.tokenizer, report, before, eval_data)
    return report
