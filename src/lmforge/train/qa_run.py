"""Extractive QA fine-tuning end to end: SQuAD JSON in, a run directory out; prediction on a split.

``run_finetune_qa`` is what ``lmforge finetune --task qa`` runs (through
:func:`lmforge.train.finetune_run.run_finetune`): it loads the model with a fresh
``question_answering`` head, cuts the contexts into windows (:func:`lmforge.train.qa.encode_qa`)
and runs the shared loop, validating on answer-level EM / F1 from the caller's evaluator. The
windowing and decoding settings are stored in the checkpoint's ``config.extra["qa"]`` so that
``predict_qa_dataset`` (``lmforge evaluate``) windows and decodes the same way.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmforge.data import QAData, TaskDataConfig, load_task_data
from lmforge.errors import ConfigError
from lmforge.models.checkpoint import LoadedModel, load
from lmforge.tokenizers import Tokenizer
from lmforge.train.finetune import (
    EvalCallback,
    Evaluator,
    FinetuneConfig,
    TaskSplit,
    finetune_model,
    prepare_model,
    require_tokenizer,
    seed_everything,
    write_run_report,
)
from lmforge.train.qa import QAConfig, QASource, encode_qa, predict_qa
from lmforge.train.task_sources import pad_id

__all__ = ["load_qa_data", "make_qa_split", "predict_qa_dataset", "run_finetune_qa"]


def load_qa_data(source: str | Path, split: str = "train", config: TaskDataConfig | None = None) -> QAData:
    """A SQuAD v1.1 / v2.0 JSON file as :class:`~lmforge.data.QAData`."""
    data = load_task_data("qa", source, split=split, config=config)
    assert isinstance(data, QAData)
    return data


def make_qa_split(
    data: QAData, tokenizer: Tokenizer, max_length: int, config: QAConfig, seed: int
) -> TaskSplit:
    """Windows of a QA split; the references are each question's gold answer texts ([] if none)."""
    features = encode_qa(tokenizer, data.examples, max_length, config)
    source = QASource(features, data.examples, pad_id(tokenizer), seed, config)
    return TaskSplit(source, [[a.text for a in e.answers] for e in data.examples])


def _window_length(requested: int, loaded: LoadedModel) -> int:
    """``requested``, checked against the model's learned positions (the same error as the other tasks)."""
    limit = loaded.config.max_positions
    if loaded.config.positions == "learned" and limit and requested > limit:
        raise ConfigError(
            f"max_length {requested} is longer than the model's {limit} learned positions; "
            f"use --max-length {limit} or less"
        )
    return requested


def run_finetune_qa(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig,
    validation: str | Path | None = None,
    data_config: TaskDataConfig | None = None,
    evaluator: Evaluator | None = None,
    on_evaluate: EvalCallback | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` for extractive QA on a SQuAD JSON file into ``out_dir``.

    Args:
        model: lmforge checkpoint dir, transformers dir or model asset (``minilm-l6``).
        data: training SQuAD v1.1 / v2.0 JSON.
        out_dir: run directory; ``lmforge.load(out_dir)`` reads the result.
        config: fine-tuning settings; ``config.qa`` holds the windowing and decoding ones and
            ``config.metric`` should be ``f1`` or ``exact_match``.
        validation: validation SQuAD JSON (answer-level metrics, best checkpoint, early stopping).
        data_config: error handling and record limit.
        evaluator: validation metrics from ``(task, answers, gold answer lists, [])``; the CLI
            passes :func:`lmforge.evaluate.evaluate_predictions`. Needed with ``validation``.
        on_evaluate: called after each validation (see :func:`~lmforge.train.finetune.finetune_model`).

    Returns:
        The training report (also ``out_dir/report.json``), with ``train_windows`` and
        ``validation_windows``.
    """
    data_config = data_config or TaskDataConfig()
    if validation is not None and evaluator is None:
        raise ConfigError(
            "QA validation needs an evaluator for EM / F1 (the train stage does not import "
            "lmforge.evaluate): pass evaluator=lambda task, out, ref, names: "
            "evaluate_predictions(task, out, ref)"
        )
    seed_everything(config.seed)
    train = load_qa_data(data, "train", data_config)
    val = None if validation is None else load_qa_data(validation, "validation", data_config)
    qa = config.qa
    if qa.version_2 is None:
        qa = dataclasses.replace(qa, version_2=train.has_impossible)
    config = dataclasses.replace(config, qa=qa)
    loaded = load(model, head="question_answering")
    tokenizer = require_tokenizer(loaded, model)
    length = _window_length(config.max_length, loaded)
    config = dataclasses.replace(config, max_length=length)
    prepare_model(loaded.model, config)
    loaded.model.config.extra["qa"] = dataclasses.asdict(qa)
    train_split = make_qa_split(train, tokenizer, length, qa, config.seed)
    val_split = None if val is None else make_qa_split(val, tokenizer, length, qa, config.seed)
    report = finetune_model(
        loaded.model, loaded.tokenizer, train_split, out_dir, config, [],
        validation=val_split, evaluator=evaluator, on_evaluate=on_evaluate,
    )  # fmt: skip
    return write_run_report(
        out_dir, report, model, train.source, None if val is None else val.source,
        train_questions=len(train), train_windows=train_split.source.num_examples,
        validation_windows=None if val_split is None else val_split.source.num_examples, version_2=qa.version_2,
    )  # fmt: skip


def predict_qa_dataset(
    loaded: LoadedModel,
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
    null_threshold: float | None = None,
) -> dict[str, Any]:
    """Answer the questions of a SQuAD file with a fine-tuned QA model.

    The windows and decoding follow the run's stored ``config.extra["qa"]``; "no answer" is
    allowed when the model was trained on v2.0 data or ``data`` has unanswerable questions.

    Returns:
        ``task`` (``"qa"``), ``ids``, ``outputs`` (answer strings, ``""`` for none),
        ``references`` (gold answer lists), ``null_margins``, ``loss``, ``version_2``,
        ``label_names`` (empty) and ``source``.
    """
    if loaded.tokenizer is None:
        raise ConfigError(f"{loaded.source}: no tokenizer saved with the model")
    stored = dict(loaded.config.extra.get("qa") or {})
    known = {f.name for f in dataclasses.fields(QAConfig)}
    qa = QAConfig(**{k: v for k, v in stored.items() if k in known})
    examples = load_qa_data(data, split, data_config)
    qa.version_2 = bool(qa.version_2) or examples.has_impossible
    if null_threshold is not None:
        qa.null_threshold = null_threshold
    length = _window_length(max_length or int(loaded.config.extra.get("max_length", 384)), loaded)
    split_data = make_qa_split(examples, loaded.tokenizer, length, qa, 0)
    assert isinstance(split_data.source, QASource)
    answers, loss, margins = predict_qa(loaded.model, split_data.source, batch_size)
    return {
        "task": "qa",
        "ids": [e.id for e in examples.examples],
        "outputs": answers,
        "references": split_data.references,
        "null_margins": margins,
        "loss": loss,
        "version_2": qa.version_2,
        "label_names": [],
        "source": examples.source,
    }
