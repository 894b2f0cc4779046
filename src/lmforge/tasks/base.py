"""The :class:`Task` protocol every fine-tuning task implements, and the registry that finds them.

A task is everything that differs between classification, tagging, QA, seq2seq and causal LM
fine-tuning: which data it reads, which head it puts on the model, how it tokenises a split into
an :class:`~lmforge.tasks.sources.ExampleSource`, its loss, how it predicts, its metrics and the
files it adds to an evaluation folder. The training loop (:mod:`lmforge.train`), the evaluation
stage and the CLI only call these methods: no code outside :mod:`lmforge.tasks` branches on a
task name. A new task is a subclass registered with :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn

from lmforge.config import Head
from lmforge.data import TaskDataConfig, load_task_data
from lmforge.errors import ConfigError, EvaluationError
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.tasks.sources import ExampleSource
from lmforge.tokenizers import Tokenizer

__all__ = [
    "Task",
    "TaskSettings",
    "TaskSplit",
    "get_task",
    "register_task",
    "task_for_model",
    "task_names",
]

#: The references of a split (:attr:`TaskSplit.references`) and its class or tag names.
References = Sequence[Any]
LabelNames = Sequence[str] | None
#: ``(metrics, arrays)``: what :meth:`Task.metrics` reports and what an evaluation folder saves.
Scores = tuple[dict[str, Any], dict[str, Any]]
#: Metrics for which a smaller value is better (early stopping, best checkpoint).
LOWER_IS_BETTER = ("loss", "log_loss", "val_loss", "perplexity", "nll_per_token", "bits_per_token")


@dataclass
class TaskSplit:
    """One split ready for the model: its example source, references and (tagging) word counts.

    Attributes:
        source: the examples, batched by the loop (training) or in order (prediction).
        references: the gold value per example, in the shape :meth:`Task.metrics` reads.
        num_words: token classification: words per sentence (predictions are word-level).
        info: what tokenising found (dropped / truncated examples, windows), for the report.
    """

    source: ExampleSource
    references: list[Any]
    num_words: list[int] | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskSettings:
    """The fine-tuning settings a task reads (a view of :class:`lmforge.train.FinetuneConfig`).

    Attributes:
        max_length: tokens per example (seq2seq: source tokens; QA: window length).
        max_target_length: seq2seq: target tokens trained on and generated at most.
        eval_limit: seq2seq: decode only the first N validation pairs per evaluation.
        label_smoothing: cross-entropy label smoothing.
        class_weights: ``none`` or ``balanced`` (classification).
        options: task-specific settings (QA: a :class:`~lmforge.tasks.qa.QAConfig`).
    """

    max_length: int = 128
    max_target_length: int = 128
    eval_limit: int | None = None
    label_smoothing: float = 0.0
    class_weights: str = "none"
    options: Any = None


class Task:
    """Base of every task; subclasses set the class attributes and override what differs.

    Class attributes:
        name: the ``--task`` value.
        head: the model head fine-tuning puts on the body (``lmforge.load(head=...)``).
        data_kind: what :func:`lmforge.data.load_task_data` reads for it.
        default_metric: the validation metric early stopping watches by default.
        augmentable: text augmentation (``--augment``) applies to its training data.
        length_groups: batches may train as length-sorted micro-batches
            (:mod:`lmforge.train.length_groups`); ``target_key`` names the batch's targets then.
        predict_batch_size: the most examples one prediction batch holds (``None``: the caller's).
        validation_metrics: the numeric metrics its validation reports (``loss`` included), which
            early stopping and ``lmforge tune`` can watch; a test checks them against :meth:`metrics`.
    """

    name: ClassVar[str]
    head: ClassVar[Head]
    data_kind: ClassVar[str]
    default_metric: ClassVar[str] = "loss"
    augmentable: ClassVar[bool] = True
    length_groups: ClassVar[bool] = False
    target_key: ClassVar[str] = "labels"
    predict_batch_size: ClassVar[int | None] = None
    validation_metrics: ClassVar[tuple[str, ...]] = ()

    # -- data ------------------------------------------------------------------------------------

    def read(self, source: str | Path, split: str, config: TaskDataConfig) -> Any:
        """The examples of ``source`` (a file or named dataset) for ``split``."""
        data = load_task_data(self.data_kind, source, split=split, config=config)
        if config.limit is not None and hasattr(data, "examples"):
            # files stop reading at the limit; named datasets are cut here
            data = dataclasses.replace(data, examples=data.examples[: config.limit])  # type: ignore[arg-type]
        return data

    def read_validation(self, source: str | Path, config: TaskDataConfig, settings: TaskSettings) -> Any:
        """The validation examples (``--eval-limit`` applies where the task decodes)."""
        return self.read(source, "validation", config)

    def label_names(self, data: Any) -> list[str]:
        """Class or tag names of training data, in index order (``[]`` for tasks without)."""
        return []

    def cv_strata(self, data: Any) -> list[int]:
        """What cross-validation folds are stratified on, one value per example."""
        raise ConfigError(f"--cv is not supported for --task {self.name}")

    # -- model -----------------------------------------------------------------------------------

    def check_model(self, loaded: LoadedModel, name: str | Path) -> None:
        """Refuse a model the task cannot fine-tune (naming ``name`` and what to do)."""

    def configure(self, model: TransformerModel, train: Any, settings: TaskSettings) -> TaskSettings:
        """Settings resolved against the model and the training data, recorded in
        ``model.config.extra`` so that evaluation reads them back (default: unchanged)."""
        return settings

    def settings_for(
        self, loaded: LoadedModel, max_length: int | None = None, **overrides: Any
    ) -> TaskSettings:
        """Evaluation: the settings a fine-tuned model recorded (see :meth:`configure`);
        ``max_length`` overrides the recorded one (both capped at the model's positions);
        ``overrides``: task-specific ones (QA: ``null_threshold``), ignored by tasks without them."""
        length = max_length or int(loaded.config.extra.get("max_length", 512))
        return TaskSettings(max_length=min(length, loaded.config.max_positions))

    # -- training --------------------------------------------------------------------------------

    def encode(
        self, data: Any, tokenizer: Tokenizer, settings: TaskSettings, seed: int, training: bool = False
    ) -> TaskSplit:
        """Tokenise a split (``training``: the split the loop samples from)."""
        raise NotImplementedError

    def loss(
        self, model: TransformerModel, settings: TaskSettings, train: TaskSplit, num_labels: int
    ) -> nn.Module:
        """The module whose ``forward(batch)`` returns ``(mean loss, logits)``."""
        raise NotImplementedError

    def class_weights(self, train: TaskSplit, num_labels: int) -> Tensor | None:
        """Balanced cross-entropy weights [C] of the training split (``--class-weights balanced``),
        for tasks that support them; :meth:`loss` computes them once and its module keeps them as
        ``class_weights`` (the loop weighs length groups with the same)."""
        return None

    # -- prediction and metrics ------------------------------------------------------------------

    def predict(self, model: TransformerModel, split: TaskSplit, batch_size: int = 64) -> tuple[Any, float]:
        """``(outputs, mean loss)`` of the model on a split, outputs in :meth:`metrics`'s shape."""
        raise NotImplementedError

    def prediction_fields(self, data: Any, split: TaskSplit, loaded: LoadedModel) -> dict[str, Any]:
        """Evaluation: more entries of a prediction result (ids, sources, languages ...)."""
        return {}

    def metrics(
        self, outputs: Any, references: References, label_names: LabelNames = None, *, validation: bool = False,
        **options: Any,
    ) -> Scores:  # fmt: skip
        """``(metrics, arrays)`` of outputs against references; ``validation``: the cheaper set run
        during training; ``arrays``: what the evaluation folder saves (logits, labels); ``options``
        are the evaluation stage's metric settings, each task reading those that concern it."""
        if outputs is None:
            raise EvaluationError(f"{self.name}: predictions are required")
        return self.score(outputs, references, label_names, validation=validation, **options)

    def score(
        self, outputs: Any, references: References, names: LabelNames, *, validation: bool, **options: Any
    ) -> Scores:
        """:meth:`metrics` once ``outputs`` are known to be there."""
        raise NotImplementedError

    def write_outputs(self, out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
        """Files besides ``metrics.json`` an evaluation folder gets from a prediction result."""
        return {}

    def report_fields(
        self, train: Any, train_split: TaskSplit, val: Any, val_split: TaskSplit | None
    ) -> dict[str, Any]:
        """Entries a fine-tuning run adds to its ``report.json``."""
        return {}


_REGISTRY: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def register_task(task: Task, aliases: Sequence[str] = ()) -> Task:
    """Make ``task`` known by its name (and ``aliases``, e.g. ``translation`` for seq2seq)."""
    _REGISTRY[task.name] = task
    for alias in aliases:
        _ALIASES[alias] = task.name
    return task


def task_names(aliases: bool = False) -> tuple[str, ...]:
    """The registered task names (with ``aliases``: their other names too)."""
    return tuple(_REGISTRY) + (tuple(_ALIASES) if aliases else ())


def get_task(name: str) -> Task:
    """The task called ``name`` (or an alias of it).

    Raises:
        ConfigError: no such task, listing the known ones.
    """
    task = _REGISTRY.get(_ALIASES.get(name, name))
    if task is None:
        raise ConfigError(f"unknown task {name!r}; use one of {', '.join(task_names())}")
    return task


def task_for_model(loaded: LoadedModel, name: str | Path) -> Task:
    """The task a fine-tuned model was trained for: the one its run recorded, else its head's."""
    recorded = loaded.config.extra.get("task")
    if recorded:
        return get_task(str(recorded))
    by_head = [task for task in _REGISTRY.values() if task.head == loaded.config.head]
    if not by_head:
        raise ConfigError(f"{name}: head {loaded.config.head!r} is not a fine-tuned task head")
    return by_head[0]
