"""Causal-LM fine-tuning end to end (``lmforge finetune --task lm|chat``), and its evaluation.

The model keeps (or gets) a ``causal_lm`` head; the loop is :func:`~lmforge.train.finetune.finetune_model`
with the shifted next-token loss of :mod:`lmforge.train.causal_lm` (assistant turns only for
``chat``). Validation reports ``loss`` (mean NLL per scored token, nats) and ``perplexity``;
the default early-stopping metric is ``loss``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.data import TaskDataConfig, load_task_data
from lmforge.data.augment import TextAugmenter
from lmforge.data.chat import ChatData
from lmforge.data.lm import LMData
from lmforge.errors import ConfigError
from lmforge.models.checkpoint import LoadedModel, load
from lmforge.tokenizers import Tokenizer
from lmforge.train.augmentation import augment_training
from lmforge.train.causal_lm import encode_chat, encode_lm, predict_causal, scored_counts
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
from lmforge.train.task_sources import TaskSource, pad_id

__all__ = ["load_causal_data", "make_causal_split", "predict_causal_dataset", "run_causal_finetune"]


def load_causal_data(task: str, source: str | Path, split: str, config: TaskDataConfig) -> LMData | ChatData:
    """Texts (``lm``) or conversations (``chat``) of a file."""
    data = load_task_data(task, source, split=split, config=config)
    if not isinstance(data, (LMData, ChatData)):
        raise ConfigError(f"{source}: not {task} data")
    return data


def make_causal_split(
    task: str, data: LMData | ChatData, tokenizer: Tokenizer, max_length: int, seed: int
) -> tuple[TaskSplit, dict[str, Any]]:
    """Tokenise a split; references are each example's number of scored tokens.

    Returns:
        ``(split, info)``; ``info`` counts chat conversations dropped / truncated at ``max_length``.
    """
    if isinstance(data, ChatData):
        encoded, info = encode_chat(tokenizer, [e.as_dicts() for e in data.examples], max_length)
    else:
        encoded, info = encode_lm(tokenizer, data.texts, max_length), {}
    info["examples"] = len(encoded)
    info["scored_tokens"] = sum(scored_counts(encoded))
    return TaskSplit(TaskSource(encoded, None, pad_id(tokenizer), seed), scored_counts(encoded)), info


def _load_causal_model(model: str | Path) -> LoadedModel:
    loaded = load(model, head="causal_lm")
    require_tokenizer(loaded, model)
    return loaded


def run_causal_finetune(
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
    """Fine-tune a causal LM on text (``lm``) or conversations (``chat``) into ``out_dir``.

    Args:
        model: lmforge checkpoint, transformers dir, GGUF file or asset (``smollm2-135m-instruct``).
        data: training file (``.txt`` / CSV / JSONL for ``lm``; JSONL conversations for ``chat``).
        out_dir: run directory; ``lmforge.load(out_dir)`` reads the fine-tuned model (LoRA merged).
        config: settings (``config.task`` is ``lm`` or ``chat``).
        validation: validation file (early stopping and the best checkpoint on ``config.metric``).
        data_config: text column, messages column, error handling, record limit.
        evaluator: validation metrics; default :func:`~lmforge.train.causal_lm.causal_metrics`.
        on_evaluate: called after each validation.
        augmenters: extra augmenters for the training split (see :func:`augment_training`).

    Returns:
        The report (also ``out_dir/report.json``), with ``encoding`` (examples, scored tokens,
        dropped / truncated conversations).
    """
    data_config = data_config or TaskDataConfig()
    seed_everything(config.seed)
    train = augment_training(load_causal_data(config.task, data, "train", data_config), config, augmenters)
    val = None if validation is None else load_causal_data(config.task, validation, "validation", data_config)
    loaded = _load_causal_model(model)
    assert loaded.tokenizer is not None
    max_length = min(config.max_length, loaded.config.max_positions)
    prepare_model(loaded.model, config)
    train_split, train_info = make_causal_split(config.task, train, loaded.tokenizer, max_length, config.seed)
    val_split, val_info = (None, None)
    if val is not None:
        val_split, val_info = make_causal_split(config.task, val, loaded.tokenizer, max_length, config.seed)
    report = finetune_model(
        loaded.model, loaded.tokenizer, train_split, out_dir, config, [],
        validation=val_split, evaluator=evaluator, on_evaluate=on_evaluate,
    )  # fmt: skip
    return write_run_report(
        out_dir, report, model, train.source, None if val is None else val.source,
        encoding={"train": train_info, "validation": val_info}, augmented=train.info.get("augmented", 0),
    )  # fmt: skip


def predict_causal_dataset(
    loaded: LoadedModel,
    task: str,
    data: str | Path,
    split: str = "test",
    data_config: TaskDataConfig | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score a fine-tuned causal LM on a split (``lmforge evaluate``).

    Returns:
        ``task``, ``label_names`` (empty), ``outputs`` (summed NLL per example, nats),
        ``references`` (scored tokens per example), ``loss`` (token-weighted) and ``source``.
    """
    assert loaded.tokenizer is not None
    examples = load_causal_data(task, data, split, data_config or TaskDataConfig())
    length = min(max_length or int(loaded.config.extra.get("max_length", 512)), loaded.config.max_positions)
    split_data, _ = make_causal_split(task, examples, loaded.tokenizer, length, 0)
    # (B, T, vocab) float32 logits: 8 x 512 x 49152 is already 800 MB
    outputs, loss = predict_causal(loaded.model, split_data.source, min(batch_size, 8))
    return {
        "task": task,
        "label_names": [],
        "outputs": outputs,
        "references": split_data.references,
        "loss": loss,
        "source": examples.source,
    }
