"""The copy (identity) baseline for seq2seq: the output is the source, unchanged.

It is the floor a translation or summarization model must clear. Copying an English verse as its
"Japanese translation" still earns some chrF and BLEU (numbers, names and punctuation shared by
both sides); copying a document as its summary earns high ROUGE recall but is long. The scores
come from the same :func:`lmforge.metrics.seq2seq.seq2seq_metrics` as ``lmforge evaluate`` (the
same sacreBLEU tokenizer for the same target language), so the rows compare.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lmforge.baselines.config import SEQ2SEQ_KINDS, BaselineConfig, Progress
from lmforge.data import TASK_DATASETS, TaskDataConfig, load_task_data
from lmforge.data.seq2seq import Seq2SeqData
from lmforge.errors import ConfigError
from lmforge.metrics.seq2seq import seq2seq_metrics
from lmforge.tasks.seq2seq import write_predictions

__all__ = ["SEQ2SEQ_KINDS", "run_copy"]


def _pairs(config: BaselineConfig) -> tuple[Seq2SeqData, str]:
    """The pairs scored: ``--test``, else a named dataset's test split, else the whole ``--data`` file."""
    # ``--text-column`` / ``--label-column`` name the source and target fields when changed from
    # their classification defaults; otherwise the seq2seq loaders' defaults apply.
    data_config = TaskDataConfig(
        source_column=config.text_column if config.text_column != "text" else None,
        target_column=config.label_column if config.label_column != "label" else None,
        on_error=config.on_error,  # type: ignore[arg-type]
    )
    source = config.test or config.data
    named = not Path(source).exists() and source in TASK_DATASETS
    data = load_task_data("seq2seq", source, split="test", config=data_config)
    if not isinstance(data, Seq2SeqData):
        raise ConfigError(f"{source}: not source/target pairs; the copy baseline is for seq2seq data")
    return data, f"{source} (test split)" if named else source


def run_copy(config: BaselineConfig, say: Progress) -> dict[str, Any]:
    """Score the sources as predictions of the targets; writes ``predictions.jsonl`` to ``config.out``.

    Returns:
        :func:`~lmforge.metrics.seq2seq.seq2seq_metrics` of the test pairs with ``num_train`` (0),
        ``num_test``, ``train_seconds`` (0), ``eval_seconds`` and ``data``.
    """
    data, name = _pairs(config)
    sources = [e.source for e in data.examples]
    references = [e.target for e in data.examples]
    say(f"copy: {len(sources)} pairs of {name}, prediction = source")
    start = time.perf_counter()
    metrics = seq2seq_metrics(sources, references, target_language=data.target_language)
    write_predictions(config.out, sources, references, sources=sources, ids=[e.id for e in data.examples])
    return {
        **metrics,
        "num_train": 0,
        "num_test": len(sources),
        "train_seconds": 0.0,
        "eval_seconds": time.perf_counter() - start,
        "data": {"test": name},
    }
