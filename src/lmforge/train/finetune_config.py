"""The settings of a fine-tuning run (``lmforge finetune``'s options), apart from the loop that uses them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from lmforge.tasks import TaskSettings, get_task
from lmforge.tasks.qa import QAConfig
from lmforge.train.config import OptimConfig

__all__ = ["FinetuneConfig", "FinetuneTask"]

FinetuneTask = Literal["classification", "token-classification", "seq2seq", "lm", "chat", "qa"]


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (the options of ``lmforge finetune``).

    Attributes:
        task: a name of :func:`lmforge.tasks.task_names` (``classification``,
            ``token-classification``, ``qa``, ``seq2seq``, ``lm``, ``chat``).
        max_length: tokens per example, special tokens included (longer inputs are cut); for
            ``seq2seq`` the source tokens.
        max_target_length: ``seq2seq``: target tokens kept for training and generated at most.
        eval_limit: ``seq2seq``: decode only the first N validation pairs per evaluation.
        batch_size: examples per optimizer step.
        epochs: passes over the training data (fractions allowed); ``max_steps`` overrides.
        max_steps: optimizer steps; ``None``: from ``epochs``.
        optim: optimizer and schedule (``lr`` is the peak learning rate of the top layer).
        warmup_ratio: share of the steps spent warming up (when ``optim.warmup_steps`` is 0).
        freeze: ``none``, ``embeddings`` or ``body`` (everything but the task head).
        freeze_layers: also freeze the first ``k`` Transformer layers.
        layer_decay: layer-wise LR decay: layer ``i`` of ``L`` trains at ``lr * decay**(L - i)``,
            embeddings at ``lr * decay**(L + 1)``, the head at ``lr``; 1.0 disables.
        class_weights: ``none`` or ``balanced`` (``n / (C * count_c)``) cross-entropy weights.
        resample: ``none``, ``oversample`` or ``undersample``: randomly repeat / drop training
            examples (seeded) until every class has the largest / smallest class's count
            (classification; see :mod:`lmforge.train.resample`).
        label_smoothing: cross-entropy label smoothing.
        lora_rank: > 0 trains LoRA adapters of this rank (plus the head) instead of all weights.
        lora_alpha: LoRA scale numerator.
        lora_dropout: dropout on the adapter inputs.
        lora_targets: module names to adapt.
        eval_every: validate every this many steps; ``None``: once per epoch.
        checkpoint_every: write a resumable checkpoint (``RUN/checkpoints/``) every this many
            steps and after the last one; ``None``: at every validation step (``eval_every``).
        keep_last: complete checkpoints kept (the newest is what ``--resume`` continues from,
            the one before it the fallback when the newest is torn); 0: none, the run cannot be
            resumed.
        metric: validation metric for early stopping and the best checkpoint (``macro_f1``,
            ``accuracy``, ``entity_f1``, ``loss`` ...; lower is better only for losses); empty:
            the task's own (:attr:`lmforge.tasks.Task.default_metric`: ``macro_f1`` for
            classification, ``entity_f1`` for NER, ``f1`` for QA, ``chrf`` for seq2seq, ``loss``
            for lm / chat), as ``lmforge finetune`` chooses.
        patience: stop after this many validations without improvement; ``None``: never.
        dropout: override the model's dropout (``None``: keep the checkpoint's).
        seed: seeds initialisation of the head, batch order, dropout and augmentation.
        augment: text augmentations of the training split (``deletion``, ``swap``,
            ``backtranslation``; see :mod:`lmforge.data.augment`); empty: none.
        augment_prob: word deletion probability / share of words swapped.
        augment_copies: augmented copies added per training example.
        qa: ``qa``: windowing (doc stride, query length) and answer decoding (max answer length,
            SQuAD v2.0 null threshold), see :class:`lmforge.tasks.qa.QAConfig`.
        length_groups: train each batch as up to this many length-sorted micro-batches, each
            padded to its own longest, accumulating gradients: the same update with less padding
            (classification and token classification; see :mod:`lmforge.train.length_groups`);
            1 disables.
        precision: ``fp32``, ``bf16`` (autocast; about 2x faster on CUDA and on CPUs with
            AVX512-BF16 / AMX), ``fp16`` (CUDA, loss scaling) or ``auto`` (bf16/fp16 on CUDA, fp32
            on CPU); see :mod:`lmforge.train.precision`. Training steps only: validation and
            prediction run in fp32, so saved logits (and calibration) do not depend on it.
        threads: torch CPU threads (``None``: torch's default).
        progress: show progress.
    """

    task: FinetuneTask = "classification"
    max_length: int = 128
    max_target_length: int = 128
    eval_limit: int | None = None
    batch_size: int = 16
    epochs: float = 3.0
    max_steps: int | None = None
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=5e-5, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01)
    )
    warmup_ratio: float = 0.06
    freeze: Literal["none", "embeddings", "body"] = "none"
    freeze_layers: int = 0
    layer_decay: float = 1.0
    class_weights: Literal["none", "balanced"] = "none"
    resample: Literal["none", "oversample", "undersample"] = "none"
    label_smoothing: float = 0.0
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    eval_every: int | None = None
    checkpoint_every: int | None = None
    keep_last: int = 2
    metric: str = ""
    patience: int | None = None
    dropout: float | None = None
    seed: int = 0
    augment: tuple[str, ...] = ()
    augment_prob: float = 0.1
    augment_copies: int = 1
    length_groups: int = 4
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = None
    progress: bool = True
    qa: QAConfig = field(default_factory=QAConfig)

    def __post_init__(self) -> None:
        if not self.metric:  # a classification default would be wrong for every other task
            self.metric = get_task(self.task).default_metric

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def task_settings(self) -> TaskSettings:
        """What the task reads of these settings."""
        return TaskSettings(
            max_length=self.max_length,
            max_target_length=self.max_target_length,
            eval_limit=self.eval_limit,
            label_smoothing=self.label_smoothing,
            class_weights=self.class_weights,
            options=self.qa,
        )

    def resolved(self, settings: TaskSettings) -> FinetuneConfig:
        """These settings with what the task resolved against the model and data
        (:meth:`lmforge.tasks.Task.configure`): the token budget and the task options (QA)."""
        qa = settings.options if isinstance(settings.options, QAConfig) else self.qa
        return dataclasses.replace(self, max_length=settings.max_length, qa=qa)
