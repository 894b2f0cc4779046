"""Fine-tuning end to end: data files or named datasets in, a run directory out; k-fold CV; prediction.

``run_finetune`` is the Python face of ``lmforge finetune``: it reads the task data
(:func:`lmforge.data.load_task_data`), loads the model with a fresh task head sized to the labels,
tokenises, and runs :func:`~lmforge.train.finetune.finetune_model`. ``run_cross_validation``
(``--cv K``) trains K times on stratified folds and reports mean ± std of each metric.
``predict_dataset`` runs a fine-tuned model on a split for ``lmforge evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data import (
    TASK_DATASETS,
    ClassificationData,
    TaskDataConfig,
    TokenClassificationData,
    load_task_data,
)
from lmforge.data.augment import TextAugmenter
from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.models.checkpoint import LoadedModel, load
from lmforge.tokenizers import Tokenizer
from lmforge.train.augmentation import augment_training
from lmforge.train.causal_lm import CAUSAL_TASKS
from lmforge.train.causal_run import predict_causal_dataset, run_causal_finetune
from lmforge.train.finetune import (
    EvalCallback,
    Evaluator,
    FinetuneConfig,
    TaskSplit,
    default_evaluator,
    finetune_model,
    predict,
    prepare_model,
    require_tokenizer,
    seed_everything,
    write_run_report,
)
from lmforge.train.resample import resample_indices
from lmforge.train.task_sources import (
    TaskSource,
    encode_classification,
    encode_token_classification,
    pad_id,
)

__all__ = [
    "load_finetuned",
    "load_split",
    "make_split",
    "predict_dataset",
    "run_cross_validation",
    "run_finetune",
    "stratified_folds",
]

TaskExamples = ClassificationData | TokenClassificationData
_HEADS = {
    "classification": "sequence_classification",
    "token-classification": "token_classification",
    "seq2seq": "seq2seq_lm",
    "qa": "question_answering",
    "lm": "causal_lm",
    "chat": "causal_lm",
}


def _load(task: str, source: str | Path, split: str, config: TaskDataConfig) -> TaskExamples:
    data = load_task_data(task, source, split=split, config=config)
    if not isinstance(data, (ClassificationData, TokenClassificationData)):
        raise ConfigError(
            f"fine-tuning task {task!r} is not supported yet; use classification or token-classification"
        )
    if isinstance(data, ClassificationData) and data.multi_label:
        raise ConfigError(f"{source}: multi-label fine-tuning is not supported yet (drop --label-separator)")
    return data


def make_split(task: str, data: TaskExamples, tokenizer: Tokenizer, max_length: int, seed: int) -> TaskSplit:
    """Tokenise a split into a :class:`TaskSplit` (references are class or word-tag indices)."""
    pad = pad_id(tokenizer)
    if isinstance(data, ClassificationData):
        encoded = encode_classification(
            tokenizer, data.texts, max_length, [e.text_pair for e in data.examples]
        )
        labels = [int(label) for label in data.labels]
        return TaskSplit(TaskSource(encoded, labels, pad, seed), labels)
    index = {name: i for i, name in enumerate(data.label_names)}
    tags = [[index[t] for t in e.tags] for e in data.examples]
    encoded = encode_token_classification(tokenizer, [e.tokens for e in data.examples], tags, max_length)
    return TaskSplit(TaskSource(encoded, None, pad, seed), tags, [len(e.tokens) for e in data.examples])


def _load_model(model: str | Path, task: str, num_labels: int) -> LoadedModel:
    loaded = load(model, head=_HEADS[task], num_labels=num_labels)  # type: ignore[arg-type]
    require_tokenizer(loaded, model)
    return loaded


def _validation_source(data: str | Path, validation: str | Path | None) -> tuple[str | Path | None, str]:
    """The validation source and split: the given file, else a named dataset's validation split."""
    if validation is not None:
        return validation, "validation"
    if not Path(data).exists() and str(data) in TASK_DATASETS:
        return data, "validation"
    return None, "validation"


def run_finetune(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig,
    validation: str | Path | None = None,
    data_config: TaskDataConfig | None = None,
    evaluator: Evaluator | None = None,
    on_evaluate: EvalCallback | None = None,
    augmenters: Sequence[TextAugmenter] = (),
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``data`` (a file or named dataset's train split) into ``out_dir``.

    Args:
        model: lmforge checkpoint dir, transformers dir or model asset (``minilm-l6``).
        data: training file or named dataset (``zh-sentiment``, ``peoples-daily-ner``).
        out_dir: run directory; ``lmforge.load(out_dir)`` reads the result.
        config: fine-tuning settings.
        validation: validation file; named datasets default to their validation split.
        data_config: column names, error handling, record limit.
        evaluator: validation metrics (the CLI passes ``lmforge.evaluate``'s).
        on_evaluate: called after each validation (see :func:`finetune_model`).
        augmenters: text augmenters built above the train stage (back-translation), used with
            those named in ``config.augment`` on the training split only.

    Returns:
        The training report (also ``out_dir/report.json``).
    """
    if (config.augment or augmenters) and config.task == "qa":
        raise ConfigError(f"--augment is not supported for --task {config.task} yet")
    if config.task in CAUSAL_TASKS:
        return run_causal_finetune(
            model, data, out_dir, config, validation, data_config, evaluator, on_evaluate, augmenters
        )
    if config.task == "seq2seq":
        from lmforge.train.seq2seq_run import run_seq2seq_finetune

        return run_seq2seq_finetune(
            model, data, out_dir, config, validation, data_config, evaluator, on_evaluate, augmenters
        )
    if config.task == "qa":
        from lmforge.train.qa_run import run_finetune_qa

        return run_finetune_qa(model, data, out_dir, config, validation, data_config, evaluator, on_evaluate)
    data_config = data_config or TaskDataConfig()
    seed_everything(config.seed)
    train = _load(config.task, data, "train", data_config)
    label_names = list(train.label_names)
    train = _resampled(train, config)
    train = augment_training(train, config, augmenters)
    val_source, val_split = _validation_source(data, validation)
    val = None
    if val_source is not None:
        val = _load(
            config.task,
            val_source,
            val_split,
            dataclasses.replace(data_config, label_names=tuple(label_names)),
        )
    loaded = _load_model(model, config.task, len(label_names))
    assert loaded.tokenizer is not None
    prepare_model(loaded.model, config)
    train_split = make_split(config.task, train, loaded.tokenizer, config.max_length, config.seed)
    val_split_data = (
        None
        if val is None
        else make_split(config.task, val, loaded.tokenizer, config.max_length, config.seed)
    )
    report = finetune_model(
        loaded.model, loaded.tokenizer, train_split, out_dir, config, label_names,
        validation=val_split_data, evaluator=evaluator, on_evaluate=on_evaluate,
        train_labels=train_split.references if config.task == "classification" else None,
    )  # fmt: skip
    return write_run_report(out_dir, report, model, train.source, None if val is None else val.source)


def stratified_folds(labels: Sequence[int], k: int, seed: int = 0) -> list[np.ndarray]:
    """Split example indices into ``k`` disjoint folds with (near) equal class proportions.

    Each class's examples are shuffled and dealt round-robin over the folds, continuing where the
    previous class stopped, so fold sizes differ by at most one and each class's count per fold
    by at most one.

    Returns:
        ``k`` sorted int64 index arrays whose union is ``range(len(labels))``.
    """
    values = np.asarray(labels)
    if k < 2:
        raise ConfigError(f"--cv needs at least 2 folds, got {k}")
    if len(values) < k:
        raise ConfigError(f"--cv {k}: only {len(values)} examples")
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(values), dtype=np.int64)
    offset = 0
    for value in np.unique(values):
        members = rng.permutation(np.flatnonzero(values == value))
        assignment[members] = (offset + np.arange(len(members))) % k
        offset = (offset + len(members)) % k
    return [np.flatnonzero(assignment == fold) for fold in range(k)]


def _subset(data: TaskExamples, indices: np.ndarray) -> TaskExamples:
    return dataclasses.replace(data, examples=[data.examples[int(i)] for i in indices])  # type: ignore[arg-type]


def _resampled(data: TaskExamples, config: FinetuneConfig) -> TaskExamples:
    """The training examples over/under-sampled to balanced classes (``config.resample``)."""
    if config.resample == "none":
        return data
    if not isinstance(data, ClassificationData):
        raise ConfigError(f"--resample {config.resample} applies to classification only, not {config.task}")
    return _subset(data, resample_indices([int(v) for v in data.labels], config.resample, config.seed))


def run_cross_validation(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig,
    folds: int,
    data_config: TaskDataConfig | None = None,
    evaluator: Evaluator | None = None,
) -> dict[str, Any]:
    """Stratified ``folds``-fold cross-validation: train on K-1 folds, score the held-out one.

    Each fold's run is ``out_dir/fold-<i>``; the held-out fold's metrics are those of the final
    weights (early stopping on the held-out fold would leak it, so ``patience`` is ignored).
    Writes ``out_dir/cv.json`` with per-fold metrics and ``mean`` / ``std`` (population) of each.
    """
    data_config = data_config or TaskDataConfig()
    evaluator = evaluator or default_evaluator
    examples = _load(config.task, data, "train", data_config)
    label_names = list(examples.label_names)
    if isinstance(examples, ClassificationData):
        strata = [int(label) for label in examples.labels]
    else:  # sentences stratified by whether they hold an entity at all
        strata = [int(any(t != "O" for t in e.tags)) for e in examples.examples]
    fold_config = dataclasses.replace(config, patience=None, eval_every=10**12)
    results = []
    for fold, held_out in enumerate(stratified_folds(strata, folds, config.seed)):
        seed_everything(config.seed + fold)
        train_idx = np.setdiff1d(np.arange(len(strata)), held_out)
        loaded = _load_model(model, config.task, len(label_names))
        assert loaded.tokenizer is not None
        prepare_model(loaded.model, fold_config)
        train_split = make_split(
            config.task, _resampled(_subset(examples, train_idx), config), loaded.tokenizer,
            config.max_length, config.seed,
        )  # fmt: skip
        test_split = make_split(
            config.task, _subset(examples, held_out), loaded.tokenizer, config.max_length, config.seed
        )
        finetune_model(
            loaded.model, loaded.tokenizer, train_split, Path(out_dir) / f"fold-{fold}", fold_config, label_names,
            train_labels=train_split.references if config.task == "classification" else None,
        )  # fmt: skip
        outputs, loss = predict(loaded.model, test_split, config.task)
        metrics = {"loss": loss, **evaluator(config.task, outputs, test_split.references, label_names)}
        results.append(
            {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        )
    keys = [k for k in results[0] if all(k in r for r in results)]
    summary = {
        "folds": folds,
        "per_fold": results,
        "mean": {k: float(np.mean([r[k] for r in results])) for k in keys},
        "std": {k: float(np.std([r[k] for r in results])) for k in keys},
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out_dir) / "cv.json", json.dumps(summary, indent=2) + "\n")
    return summary


def load_finetuned(model: str | Path) -> tuple[LoadedModel, str, list[str]]:
    """A fine-tuned model with its task and label names (``config.extra``)."""
    loaded = load(model)
    head = loaded.config.head
    task = {v: k for k, v in _HEADS.items()}.get(head)
    if head == "causal_lm":  # lm and chat share the head; the run recorded which
        task = str(loaded.config.extra.get("task", "lm"))
    if task is None:
        raise ConfigError(f"{model}: head {head!r} is not a fine-tuned classification or tagging head")
    names = loaded.config.extra.get("id2label")
    if not names:
        names = [str(i) for i in range(loaded.config.num_labels)]
    if loaded.tokenizer is None:
        raise ConfigError(f"{model}: no tokenizer saved with the model")
    return loaded, task, [str(n) for n in names]


def predict_dataset(
    model: str | Path,
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    max_length: int | None = None,
    batch_size: int = 64,
    null_threshold: float | None = None,
) -> dict[str, Any]:
    """Run a fine-tuned model on a split.

    ``null_threshold`` overrides a QA run's SQuAD v2.0 no-answer threshold.

    Returns:
        ``task``, ``label_names``, ``outputs`` (logits [N, C] or word-level tag-id lists; QA:
        answer strings, with ``ids``), ``references`` (class indices or tag-id lists; QA: gold
        answer lists), ``loss`` and ``source``.
    """
    loaded, task, names = load_finetuned(model)
    if task == "seq2seq":
        from lmforge.train.seq2seq_run import predict_seq2seq_dataset

        return predict_seq2seq_dataset(loaded, data, split, data_config, max_length, batch_size)
    if task == "qa":
        from lmforge.train.qa_run import predict_qa_dataset

        return predict_qa_dataset(loaded, data, split, data_config, max_length, batch_size, null_threshold)
    if task in CAUSAL_TASKS:
        return predict_causal_dataset(loaded, task, data, split, data_config, max_length, batch_size)
    split_data, source = load_split(loaded, task, names, data, split, data_config, max_length)
    outputs, loss = predict(loaded.model, split_data, task, batch_size)
    return {
        "task": task,
        "label_names": names,
        "outputs": outputs,
        "references": split_data.references,
        "loss": loss,
        "source": source,
    }


def load_split(
    loaded: LoadedModel,
    task: str,
    names: Sequence[str],
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    max_length: int | None = None,
) -> tuple[TaskSplit, str]:
    """A classification / tagging split tokenised for a fine-tuned model, and the data's source name.

    Labels map to ``names`` (the model's ``id2label``); ``max_length`` defaults to the one the
    model was fine-tuned with.
    """
    config = dataclasses.replace(data_config or TaskDataConfig(), label_names=tuple(names))
    examples = _load(task, data, split, config)
    assert loaded.tokenizer is not None
    length = max_length or int(loaded.config.extra.get("max_length", 512))
    length = min(length, loaded.config.max_positions)
    return make_split(task, examples, loaded.tokenizer, length, 0), examples.source
