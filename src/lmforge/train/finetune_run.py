"""Fine-tuning end to end: data files or named datasets in, a run directory out; k-fold CV; prediction.

``run_finetune`` is the Python face of ``lmforge finetune`` for every task of
:mod:`lmforge.tasks`: the task reads the data, names the head the model is loaded with, tokenises
the splits and resolves its settings against the model; :func:`~lmforge.train.finetune.finetune_model`
runs the loop. ``run_cross_validation`` (``--cv K``) trains K times on stratified folds and
reports mean ± std of each metric. ``predict_dataset`` runs a fine-tuned model on a split for
``lmforge evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data import TASK_DATASETS, ClassificationData, TaskDataConfig
from lmforge.data.augment import TextAugmenter
from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.models.io.checkpoint import LoadedModel, load
from lmforge.tasks import Task, TaskSettings, TaskSplit, get_task, task_for_model
from lmforge.train.augmentation import augment_training
from lmforge.train.finetune import (
    EvalCallback,
    Evaluator,
    FinetuneConfig,
    default_evaluator,
    finetune_model,
    predict,
    prepare_model,
    require_tokenizer,
    run_steps,
    seed_everything,
    write_run_report,
)
from lmforge.train.resample import resample_indices
from lmforge.train.resume import finished_report
from lmforge.train.resume_rules import finetune_settings, plan_finetune_resume
from lmforge.train.validation import validate_cross_validation, validate_finetune_config

__all__ = [
    "load_finetuned",
    "load_split",
    "make_split",
    "predict_dataset",
    "run_cross_validation",
    "run_finetune",
    "stratified_folds",
]


def make_split(task: str, data: Any, tokenizer: Any, max_length: int, seed: int) -> TaskSplit:
    """Tokenise a split of ``task`` with ``max_length`` tokens per example."""
    return get_task(task).encode(data, tokenizer, TaskSettings(max_length=max_length), seed)


def _load_model(model: str | Path, task: Task, num_labels: int) -> LoadedModel:
    loaded = load(model, head=task.head, num_labels=num_labels)
    require_tokenizer(loaded, model)
    task.check_model(loaded, model)
    return loaded


def _validation_source(data: str | Path, validation: str | Path | None) -> str | Path | None:
    """The validation source: the given file, else a named dataset's validation split."""
    if validation is not None:
        return validation
    if not Path(data).exists() and str(data) in TASK_DATASETS:
        return data
    return None


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
    resume: bool = False,
    allow_config_change: bool = False,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``data`` (a file or named dataset's train split) into ``out_dir``.

    Args:
        model: lmforge checkpoint dir, transformers dir, GGUF file or model asset (``minilm-l6``).
        data: training file or named dataset (``zh-sentiment``, ``peoples-daily-ner``, ``bible-en-ja``).
        out_dir: run directory; ``lmforge.load(out_dir)`` reads the result.
        config: fine-tuning settings (``config.task`` picks the :class:`~lmforge.tasks.Task`).
        validation: validation file; named datasets default to their validation split.
        data_config: column names, error handling, record limit.
        evaluator: validation metrics; default the task's own.
        on_evaluate: called after each validation (see :func:`finetune_model`).
        augmenters: text augmenters built above the train stage (back-translation), used with
            those named in ``config.augment`` on the training split only.
        resume: continue from the newest complete checkpoint in ``out_dir`` (start fresh if
            none; a torn newer one is set aside with a message), repeating the uninterrupted
            run exactly. A run that already ended (its last step, or an early stop) is left
            untouched and its report returned. Settings may differ from the run's only as
            ``lmforge.train.resume_rules.FINETUNE_RULES`` allow (cadence, limits, max steps,
            patience); each accepted change goes to ``out_dir/history.jsonl``.
        allow_config_change: on resume, also accept changed optimiser settings (``optim.*``,
            ``warmup_ratio``, ``layer_decay``), ``precision`` and ``length_groups``.

    Returns:
        The training report (also ``out_dir/report.json``).

    Raises:
        ConfigError: on resume, a setting differs that may not (every such field named, old → new).
        CheckpointError: on resume, checkpoints exist but none is complete.
    """
    task = get_task(config.task)
    validate_finetune_config(config)  # before any file is written
    if (config.augment or augmenters) and not task.augmentable:
        raise ConfigError(f"--augment is not supported for --task {config.task} yet")
    data_config = data_config or TaskDataConfig()
    seed_everything(config.seed)
    train = task.read(data, "train", data_config)
    label_names = task.label_names(train)
    val_source = _validation_source(data, validation)
    val = None
    if val_source is not None:
        val_config = dataclasses.replace(data_config, label_names=tuple(label_names) or None, limit=None)
        val = task.read_validation(val_source, val_config, config.task_settings())
    fingerprint = {
        "model.source": str(model), "data.source": train.source, "data.examples": len(train),
        "data.label_names": label_names, "data.validation": None if val is None else val.source,
        "data.validation_examples": None if val is None else len(val),
    }  # fmt: skip
    run_settings = finetune_settings(config, fingerprint)  # what a resumed run is compared on
    train = augment_training(_resampled(train, config), config, augmenters)
    loaded = _load_model(model, task, len(label_names))
    assert loaded.tokenizer is not None
    prepare_model(loaded.model, config)
    settings = task.configure(loaded.model, train, config.task_settings())
    config = config.resolved(settings)
    train_split = task.encode(train, loaded.tokenizer, settings, config.seed, training=True)
    val_split = None if val is None else task.encode(val, loaded.tokenizer, settings, config.seed)
    plan = None
    if resume:  # once the run's length is known; nothing is written before a refusal
        max_steps, _ = run_steps(config, train_split.source.num_examples)
        plan = plan_finetune_resume(config, run_settings, out_dir, max_steps, allow_config_change)
        if plan.complete:
            return finished_report(Path(out_dir), plan)
    report = finetune_model(
        loaded.model, loaded.tokenizer, train_split, out_dir, config, label_names,
        validation=val_split, evaluator=evaluator, on_evaluate=on_evaluate, resume=resume,
        run_settings=run_settings, plan=plan,
    )  # fmt: skip
    return write_run_report(
        out_dir, report, model, train.source, None if val is None else val.source,
        augmented=getattr(train, "info", {}).get("augmented", 0),
        **task.report_fields(train, train_split, val, val_split),
    )  # fmt: skip


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


def _subset(data: Any, indices: np.ndarray) -> Any:
    return dataclasses.replace(data, examples=[data.examples[int(i)] for i in indices])


def _resampled(data: Any, config: FinetuneConfig) -> Any:
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
    validate_cross_validation(folds)
    task = get_task(config.task)
    validate_finetune_config(config)  # before any file is written
    data_config = data_config or TaskDataConfig()
    evaluator = evaluator or default_evaluator
    examples = task.read(data, "train", data_config)
    label_names = task.label_names(examples)
    strata = task.cv_strata(examples)
    # A fold run is never resumed (--cv refuses --resume): no resumable checkpoints, as tune's trials.
    fold_config = dataclasses.replace(config, patience=None, eval_every=10**12, keep_last=0)
    results = []
    for fold, held_out in enumerate(stratified_folds(strata, folds, config.seed)):
        seed_everything(config.seed + fold)
        train_idx = np.setdiff1d(np.arange(len(strata)), held_out)
        loaded = _load_model(model, task, len(label_names))
        assert loaded.tokenizer is not None
        prepare_model(loaded.model, fold_config)
        settings = task.configure(loaded.model, examples, fold_config.task_settings())
        resolved = fold_config.resolved(settings)
        train_split = task.encode(
            _resampled(_subset(examples, train_idx), config),
            loaded.tokenizer,
            settings,
            config.seed,
            training=True,
        )
        test_split = task.encode(_subset(examples, held_out), loaded.tokenizer, settings, config.seed)
        finetune_model(
            loaded.model,
            loaded.tokenizer,
            train_split,
            Path(out_dir) / f"fold-{fold}",
            resolved,
            label_names,
        )
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
    """A fine-tuned model with its task name and label names (``config.extra``)."""
    loaded = load(model)
    task = task_for_model(loaded, model)
    names = loaded.config.extra.get("id2label")
    if not names:
        names = (
            [str(i) for i in range(loaded.config.num_labels)]
            if task.label_names is not Task.label_names
            else []
        )
    if loaded.tokenizer is None:
        raise ConfigError(f"{model}: no tokenizer saved with the model")
    return loaded, task.name, [str(n) for n in names]


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
        answer strings; seq2seq: generated strings; lm: summed NLL per example), ``references``,
        ``loss``, ``source`` and the task's own fields (QA: ``ids``, ``null_margins``; seq2seq:
        ``sources``, ``ids``, languages).
    """
    loaded, name, names = load_finetuned(model)
    task = get_task(name)
    split_data, examples = load_split(
        loaded, name, names, data, split, data_config, max_length, null_threshold
    )
    outputs, loss = task.predict(loaded.model, split_data, batch_size)
    return {
        "task": name,
        "label_names": names,
        "outputs": outputs,
        "references": split_data.references,
        "loss": loss,
        "source": examples.source,
        **task.prediction_fields(examples, split_data, loaded),
    }


def load_split(
    loaded: LoadedModel,
    task: str,
    names: Sequence[str],
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    max_length: int | None = None,
    null_threshold: float | None = None,
) -> tuple[TaskSplit, Any]:
    """A split tokenised for a fine-tuned model the way it was fine-tuned, and its examples.

    Labels map to ``names`` (the model's ``id2label``); ``max_length`` defaults to the one the
    model was fine-tuned with.
    """
    config = dataclasses.replace(data_config or TaskDataConfig(), label_names=tuple(names) or None)
    chosen = get_task(task)
    examples = chosen.read(data, split, config)
    assert loaded.tokenizer is not None
    settings = chosen.settings_for(loaded, max_length, null_threshold=null_threshold)
    return chosen.encode(examples, loaded.tokenizer, settings, 0), examples
