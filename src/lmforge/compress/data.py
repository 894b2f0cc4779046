"""The training data the compression methods read, through the task a model was fine-tuned for.

Importance scores (structured pruning), recovery fine-tuning and distillation all need the
model's own task: its data reader, tokenisation (the ``max_length`` it was trained with), and
loss. They come from :mod:`lmforge.tasks` (``config.extra["task"]``, else the head's task), so
every task the fine-tuning stage knows can be compressed the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lmforge.data import TaskDataConfig
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.tasks import Task, TaskSplit, task_for_model
from lmforge.tasks.sources import to_tensors

__all__ = ["TrainData", "read_train_data"]


@dataclasses.dataclass
class TrainData:
    """A model's task with its tokenised training split and label names."""

    task: Task
    split: TaskSplit
    label_names: list[str]

    def batches(self, count: int, batch_size: int, device: Any = "cpu") -> list[dict[str, Tensor]]:
        """The first ``count`` training batches (the split's seeded order), as tensors."""
        return [to_tensors(self.split.source.train_batch(step, batch_size), device) for step in range(count)]

    def loss_with_logits(self, loaded: LoadedModel) -> nn.Module:
        """The task's loss module for ``loaded.model``: ``batch -> (loss, logits)``."""
        return self.task.loss(loaded.model, self.task.settings_for(loaded), self.split, len(self.label_names))

    def loss(self, loaded: LoadedModel) -> Callable[[dict[str, Tensor]], Tensor]:
        """``batch -> loss`` of the task for ``loaded.model``."""
        module = self.loss_with_logits(loaded)
        return lambda batch: module(batch)[0]


def read_train_data(
    loaded: LoadedModel,
    data: str | Path,
    config: TaskDataConfig | None = None,
    max_length: int | None = None,
    seed: int = 0,
) -> TrainData:
    """The training split of ``data`` for the fine-tuned model ``loaded``, tokenised as it was trained.

    Labels map to the model's ``id2label`` so that class indices agree with its head.
    """
    task = task_for_model(loaded, loaded.source)
    names = [str(n) for n in loaded.config.extra.get("id2label", [])]
    config = dataclasses.replace(config or TaskDataConfig(), label_names=tuple(names) or None)
    examples = task.read(data, "train", config)
    names = names or task.label_names(examples)
    assert loaded.tokenizer is not None, "compression needs the model's tokenizer"
    settings = task.settings_for(loaded, max_length)
    split = task.encode(examples, loaded.tokenizer, settings, seed, training=True)
    return TrainData(task, split, names)
