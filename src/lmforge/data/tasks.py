"""One entry point for fine-tuning data: a task, a file or named dataset, a split.

Tasks and what they read:

========================  ==============================================  ==========================
task                      files                                           named datasets
========================  ==============================================  ==========================
``classification``        CSV / TSV / JSONL: text (+ pair) and label      ``zh-sentiment``
``token-classification``  JSONL tokens/tags, CoNLL ``TOKEN TAG`` lines    ``peoples-daily-ner``
``qa``                    SQuAD v1.1 / v2.0 JSON                          (none bundled)
``seq2seq``               CSV / TSV / JSONL source/target or              ``bible-en-ja``
                          document/summary
``lm``                    ``.txt`` (a text per line) or a text column     (none bundled)
``chat``                  JSONL ``messages`` (or prompt/response)         (none bundled)
========================  ==============================================  ==========================

The named datasets are derived from the corpus assets of :mod:`lmforge.assets` (``zh-sentiment``,
``peoples-daily``, ``web-bible`` + ``kougo-bible``); they are not assets themselves (no package of
their own) but names known here, in :data:`TASK_DATASETS`. Their splits (train / validation /
test, by text hash) are built once and cached with the asset versions and hashes, see
:mod:`lmforge.data.cache`. For files, ``split`` is ignored: pass each split's file.

Example:
    >>> config = TaskDataConfig(text_column="review", label_column="stars")  # doctest: +SKIP
    >>> train = load_task_data("classification", "train.csv", config=config)  # doctest: +SKIP
    >>> test = load_task_data("classification", "zh-sentiment", split="test")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lmforge.data.chat import ChatData, load_chat
from lmforge.data.classification import (
    ClassificationData,
    load_classification,
    load_zh_sentiment,
    require_classes,
)
from lmforge.data.clean import SPLIT_NAMES
from lmforge.data.lm import LMData, load_lm_texts
from lmforge.data.ner import (
    Scheme,
    TokenClassificationData,
    load_peoples_daily_ner,
    load_token_classification,
)
from lmforge.data.qa import QAData, load_squad
from lmforge.data.readers import OnError
from lmforge.data.seq2seq import Seq2SeqData, load_bible_en_ja, load_pairs
from lmforge.errors import DataError

__all__ = ["TASKS", "TASK_DATASETS", "Task", "TaskData", "TaskDataConfig", "load_task_data"]

Task = Literal["classification", "token-classification", "qa", "seq2seq", "lm", "chat"]
TASKS: tuple[str, ...] = ("classification", "token-classification", "qa", "seq2seq", "lm", "chat")
TaskData = ClassificationData | TokenClassificationData | QAData | Seq2SeqData | ChatData | LMData

# Named datasets derived from the corpus assets, and the task each one serves.
TASK_DATASETS: dict[str, str] = {
    "zh-sentiment": "classification",
    "peoples-daily-ner": "token-classification",
    "bible-en-ja": "seq2seq",
}


@dataclass(frozen=True)
class TaskDataConfig:
    """How to read task files (the ``--text-column`` ... options of the CLI).

    Attributes:
        text_column: classification text.
        text_pair_column: second text of a sentence pair, or ``None``.
        label_column: classification label (string or integer).
        label_separator: multi-label separator (e.g. ``"|"``); ``None``: single-label.
        label_names: fixed class or tag names (a trained model's); ``None``: from the data.
        tokens_column: token-classification tokens (JSONL).
        tags_column: token-classification tags (JSONL).
        scheme: tag scheme, ``"BIO"`` or ``"BIOES"``.
        source_column: seq2seq input; ``None``: ``source`` or ``document``.
        target_column: seq2seq output; ``None``: ``target`` or ``summary``.
        messages_column: chat conversations.
        on_error: ``"raise"`` at the first bad record (naming file:line) or ``"skip"`` and count.
        limit: read at most this many records (a quick look or a test).
        validation_fraction: named datasets: share of the validation split.
        test_fraction: named datasets: share of the test split.
    """

    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_separator: str | None = None
    label_names: tuple[str, ...] | None = None
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    scheme: Scheme = "BIO"
    source_column: str | None = None
    target_column: str | None = None
    messages_column: str = "messages"
    on_error: OnError = "raise"
    limit: int | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise DataError(f"--on-error {self.on_error!r}: use raise or skip")
        if self.limit is not None and self.limit < 1:
            raise DataError(f"--limit {self.limit}: read at least one record (or leave it unset)")
        for name in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise DataError(f"{name}={getattr(self, name)}: must be in [0, 1)")


def _named(task: str, name: str, split: str, config: TaskDataConfig) -> TaskData:
    if TASK_DATASETS[name] != task:  # the dataset's kind of data, not a branch on the task
        raise DataError(
            f"{name} is a {TASK_DATASETS[name]} dataset, not {task}; pass --task {TASK_DATASETS[name]}"
        )
    if split not in SPLIT_NAMES:
        raise DataError(f"{name}: unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    fractions: dict[str, Any] = {
        "validation_fraction": config.validation_fraction,
        "test_fraction": config.test_fraction,
    }
    if name == "zh-sentiment":
        return load_zh_sentiment(split, **fractions)
    if name == "peoples-daily-ner":
        return load_peoples_daily_ner(split, scheme=config.scheme, on_error=config.on_error, **fractions)
    return load_bible_en_ja(split, on_error=config.on_error, **fractions)


def load_task_data(
    task: str, source: str | Path, *, split: str = "train", config: TaskDataConfig | None = None
) -> TaskData:
    """Load the examples of one task from a file or a named dataset.

    Args:
        task: one of :data:`TASKS`.
        source: a file path, or a name in :data:`TASK_DATASETS` (when no such file exists).
        split: for named datasets, ``train``, ``validation`` or ``test``.
        config: column names and error handling (defaults: :class:`TaskDataConfig`).

    Returns:
        :class:`ClassificationData`, :class:`TokenClassificationData`, :class:`QAData`,
        :class:`Seq2SeqData`, :class:`LMData` (``lm``) or :class:`ChatData` (``chat``).

    Raises:
        DataError: unknown task, missing file, a dataset of another task, or bad records.
        AssetMissingError: a named dataset's asset is not installed.
    """
    config = config or TaskDataConfig()
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
    path = Path(source)
    if not path.exists() and str(source) in TASK_DATASETS:
        return _named(task, str(source), split, config)
    if not path.is_file():
        named = ", ".join(f"{n} ({t})" for n, t in TASK_DATASETS.items())
        raise DataError(f"{source}: no such file, and not a named dataset ({named})")
    data = _READERS[task](path, config)
    if split == "train" and config.label_names is None and isinstance(data, ClassificationData):
        require_classes(data, source, config.label_column)
    return data


def _options(config: TaskDataConfig) -> dict[str, Any]:
    return {"on_error": config.on_error, "limit": config.limit}


def _names(config: TaskDataConfig) -> list[str] | None:
    return list(config.label_names) if config.label_names is not None else None


# The file reader of each kind of task data (the tasks themselves live in lmforge.tasks).
_READERS: dict[str, Callable[[Path, TaskDataConfig], TaskData]] = {
    "classification": lambda path, config: load_classification(
        path,
        text_column=config.text_column,
        label_column=config.label_column,
        text_pair_column=config.text_pair_column,
        label_names=_names(config),
        label_separator=config.label_separator,
        **_options(config),
    ),
    "token-classification": lambda path, config: load_token_classification(
        path,
        tokens_column=config.tokens_column,
        tags_column=config.tags_column,
        scheme=config.scheme,
        label_names=_names(config),
        **_options(config),
    ),
    "qa": lambda path, config: load_squad(path, **_options(config)),
    "seq2seq": lambda path, config: load_pairs(
        path, source_column=config.source_column, target_column=config.target_column, **_options(config)
    ),
    "lm": lambda path, config: load_lm_texts(path, text_column=config.text_column, **_options(config)),
    "chat": lambda path, config: load_chat(path, messages_column=config.messages_column, **_options(config)),
}
