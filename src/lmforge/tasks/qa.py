"""Extractive question answering: SQuAD-style windows, the span loss, and answer post-processing.

**Features.** Each question is paired with its context and tokenised by the tokenizer's own pair
template (``[CLS] question [SEP] context [SEP]`` for BERT), the context cut into overlapping
windows of ``max_length`` tokens that share ``doc_stride`` tokens (the ``tokenizers`` backend's
``only_second`` truncation with overflow). The backend's character offsets place the gold answer
``[start, start + len(text))`` on its first and last context token; a window that does not hold
the whole answer, and every window of an unanswerable (SQuAD v2.0) question, points both ends at
position 0, the null (CLS) position.

**Loss.** The mean of the start and end cross-entropies over the window's positions.

**Prediction.** Over all windows of a question, the span with the highest ``start + end`` logit
among those that start and end on context tokens with ``start <= end`` and at most
``max_answer_length`` tokens, mapped back to the context through the offsets. For SQuAD v2.0 the
answer is empty when the null score (the smallest ``start[0] + end[0]`` over the windows, as in the
BERT reference code) beats the best span by more than ``null_threshold``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.data import QAData
from lmforge.data.qa import QAExample
from lmforge.errors import ConfigError
from lmforge.fileio import atomic_write_text
from lmforge.metrics.qa import squad_metrics
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.tasks.base import LabelNames, References, Scores, Task, TaskSettings, TaskSplit, register_task
from lmforge.tasks.sources import TaskSource, model_inputs, pad_id, to_tensors
from lmforge.tokenizers import Tokenizer

__all__ = [
    "QAConfig",
    "QALoss",
    "QASource",
    "QATask",
    "best_spans",
    "encode_qa",
    "make_qa_split",
    "predict_qa",
]

NULL_POSITION = 0  # where a window without the answer points both ends (the CLS token for BERT)


@dataclass
class QAConfig:
    """Windowing and answer-decoding settings of extractive QA.

    Attributes:
        doc_stride: tokens consecutive windows of one context share (an answer cut by one window's
            edge lies whole in the next when it is at most this long).
        max_query_length: questions are cut to this many tokens.
        max_answer_length: longest answer span predicted, in tokens.
        null_threshold: SQuAD v2.0: answer "" when ``null score - best span score`` exceeds this.
        version_2: allow "no answer" predictions; ``None``: when the training data has
            unanswerable questions.
    """

    doc_stride: int = 32
    max_query_length: int = 64
    max_answer_length: int = 30
    null_threshold: float = 0.0
    version_2: bool | None = None


# -- features ------------------------------------------------------------------------------------


def _cut_questions(tokenizer: Tokenizer, questions: Sequence[str], max_tokens: int) -> list[str]:
    """Questions cut at the end of their ``max_tokens``-th token (special tokens not counted)."""
    encodings = tokenizer.backend.encode_batch(list(questions), add_special_tokens=False)
    return [
        question if len(e.ids) <= max_tokens else question[: e.offsets[max_tokens - 1][1]]
        for question, e in zip(questions, encodings)
    ]


def _answer_tokens(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """First and last context token of the character span ``[start_char, end_char)``, or the null
    position twice when the window does not hold the whole span.

    Args:
        offsets: (T, 2) character offsets of the window's tokens in the context, -1 off the context.
    """
    context = np.flatnonzero(offsets[:, 0] >= 0)
    if not len(context) or offsets[context[0], 0] > start_char or offsets[context[-1], 1] < end_char:
        return NULL_POSITION, NULL_POSITION
    # The token that ends after the answer's first character starts it; the last one that begins
    # before the answer's end closes it (tokens may extend past the span, e.g. "1820s" for "1820").
    start = int(context[np.argmax(offsets[context, 1] > start_char)])
    end = int(context[len(context) - 1 - np.argmax(offsets[context[::-1], 0] < end_char)])
    return start, end


def encode_qa(
    tokenizer: Tokenizer, examples: Sequence[QAExample], max_length: int, config: QAConfig
) -> list[dict[str, Any]]:
    """Tokenise question + context pairs into windows over the context.

    Args:
        tokenizer: a tokenizer whose backend has a pair template (BERT, RoBERTa, ...).
        examples: the questions.
        max_length: tokens per window, special tokens included.
        config: stride and query length.

    Returns:
        One dict per window: ``input_ids`` and ``token_type_ids`` (T,), ``offsets`` (T, 2) int64
        character offsets into the context (-1 for question, special and padding tokens),
        ``example_index``, and ``start_position`` / ``end_position`` of the first gold answer
        (``0`` when the window does not contain it or the question has none).

    Raises:
        ConfigError: windows too short for the question, or a stride that leaves no room to move.
    """
    backend = tokenizer.backend
    questions = _cut_questions(tokenizer, [e.question for e in examples], config.max_query_length)
    # Room left for context: max_length minus the longest question and the template's specials.
    specials = backend.post_processor.num_special_tokens_to_add(True) if backend.post_processor else 0
    longest = max((len(q) for q in backend.encode_batch(questions, add_special_tokens=False)), default=0)
    room = max_length - specials - min(longest, config.max_query_length)
    if room <= config.doc_stride:
        raise ConfigError(
            f"max_length={max_length} leaves {room} context tokens per window after a question of "
            f"{longest} tokens, not more than doc_stride={config.doc_stride}: raise --max-length or "
            "lower --doc-stride / --max-query-length"
        )
    backend.enable_truncation(max_length=max_length, stride=config.doc_stride, strategy="only_second")
    try:
        encodings = backend.encode_batch([(q, e.context) for q, e in zip(questions, examples)])
    finally:
        backend.no_truncation()
    features: list[dict[str, Any]] = []
    for index, (example, encoding) in enumerate(zip(examples, encodings)):
        answer = example.answers[0] if example.answers and not example.is_impossible else None
        for window in [encoding, *encoding.overflowing]:
            offsets = np.asarray(window.offsets, dtype=np.int64).reshape(-1, 2)  # (T, 2)
            in_context = np.asarray([s == 1 for s in window.sequence_ids])
            offsets[~in_context] = -1
            start, end = NULL_POSITION, NULL_POSITION
            if answer is not None:
                start, end = _answer_tokens(offsets, answer.start, answer.start + len(answer.text))
            features.append(
                {
                    "input_ids": list(window.ids),
                    "token_type_ids": list(window.type_ids),
                    "offsets": offsets,
                    "example_index": index,
                    "start_position": start,
                    "end_position": end,
                }
            )
    return features


class QASource(TaskSource):
    """QA windows as an example source: batches carry ``start_positions`` / ``end_positions`` (B,).

    Args:
        features: windows from :func:`encode_qa`.
        examples: the questions the windows came from (for post-processing).
        pad_id: id used to pad ``input_ids``.
        seed: seeds the epoch order.
        config: answer decoding settings (``version_2`` resolved to a bool).
    """

    def __init__(
        self,
        features: list[dict[str, Any]],
        examples: Sequence[QAExample],
        pad_id: int,
        seed: int,
        config: QAConfig,
    ) -> None:
        super().__init__(features, None, pad_id, seed)
        self.examples = list(examples)
        self.config = config
        self.example_index = [int(f["example_index"]) for f in features]
        self.offsets: list[np.ndarray] = [f["offsets"] for f in features]
        self.starts = np.asarray([f["start_position"] for f in features], dtype=np.int64)
        self.ends = np.asarray([f["end_position"] for f in features], dtype=np.int64)

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        batch = super().collate(indices, rng)
        batch["start_positions"], batch["end_positions"] = self.starts[indices], self.ends[indices]
        return batch


class QALoss(nn.Module):
    """Mean of the start and end cross-entropies of a ``question_answering`` head.

    ``forward(batch)`` returns ``(loss, logits)`` with logits (B, T, 2): start and end columns.
    """

    def __init__(self, model: TransformerModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        logits = self.model(batch["input_ids"], **model_inputs(self.model, batch)).logits
        if logits is None or logits.shape[-1] != 2:
            raise ConfigError("QA fine-tuning needs a question_answering head (start / end logits)")
        logits = logits.float()  # (B, T, 2)
        start_loss = F.cross_entropy(logits[..., 0], batch["start_positions"])
        end_loss = F.cross_entropy(logits[..., 1], batch["end_positions"])
        return (start_loss + end_loss) / 2, logits


# -- post-processing -----------------------------------------------------------------------------


def _best_in_window(
    start: np.ndarray, end: np.ndarray, offsets: np.ndarray, max_answer_length: int
) -> tuple[float, int, int]:
    """Best valid span of one window: ``(score, start_token, end_token)``; ``-inf`` when none."""
    context = offsets[:, 0] >= 0
    scores = start[:, None] + end[None, :]  # (T, T): [i, j] scores the span from token i to token j
    length = np.arange(len(start))[None, :] - np.arange(len(start))[:, None]
    valid = context[:, None] & context[None, :] & (length >= 0) & (length < max_answer_length)
    if not valid.any():
        return -np.inf, -1, -1
    scores = np.where(valid, scores, -np.inf)
    flat = int(np.argmax(scores))
    i, j = divmod(flat, scores.shape[1])
    return float(scores[i, j]), i, j


def best_spans(
    examples: Sequence[QAExample],
    example_index: Sequence[int],
    offsets: Sequence[np.ndarray],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    max_answer_length: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> tuple[list[str], list[float]]:
    """The answer text of each question from its windows' logits.

    Args:
        examples: the questions.
        example_index: (W,) the question of each window.
        offsets: per window (T_w, 2) context character offsets, -1 off the context.
        start_logits: per window (T_w,) start logits.
        end_logits: per window (T_w,) end logits.
        max_answer_length: longest span in tokens.
        version_2: answer "" when the null score beats the best span by more than ``null_threshold``.
        null_threshold: see ``version_2``.

    Returns:
        ``(answers, null_margins)``: one answer per question (``""`` for no answer, or when no
        window has a valid span) and ``null score - best span score`` (``inf`` without a span),
        the quantity a v2.0 threshold is tuned on.
    """
    best: list[tuple[float, int, int, int]] = [(-np.inf, -1, -1, -1)] * len(examples)
    null = [np.inf] * len(examples)
    for window, question in enumerate(example_index):
        start, end = np.asarray(start_logits[window]), np.asarray(end_logits[window])
        null[question] = min(null[question], float(start[NULL_POSITION] + end[NULL_POSITION]))
        score, i, j = _best_in_window(start, end, np.asarray(offsets[window]), max_answer_length)
        if score > best[question][0]:
            best[question] = (score, window, i, j)
    answers, margins = [], []
    for question, (score, window, i, j) in enumerate(best):
        margin = null[question] - score if window >= 0 else np.inf
        margins.append(float(margin))
        if window < 0 or (version_2 and margin > null_threshold):
            answers.append("")
            continue
        spans = np.asarray(offsets[window])
        answers.append(examples[question].context[int(spans[i, 0]) : int(spans[j, 1])])
    return answers, margins


@torch.no_grad()
def predict_qa(
    model: TransformerModel, source: QASource, batch_size: int = 64
) -> tuple[list[str], float, list[float]]:
    """Answer every question of ``source`` with its ``config``'s decoding settings.

    Returns:
        ``(answers, loss, null_margins)``: one answer per question in ``source.examples`` order,
        the mean span loss over windows, and :func:`best_spans`'s margins.
    """
    device = next(model.parameters()).device
    loss_module = QALoss(model)
    was_training = model.training
    model.eval()
    starts: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    total = 0.0
    try:
        for indices in source.ordered_batches(batch_size):
            batch = source.collate(indices, np.random.default_rng(0))
            loss, logits = loss_module(to_tensors(batch, device))
            total += float(loss) * len(indices)
            logits_np = logits.cpu().numpy()  # (B, T, 2)
            for row, index in enumerate(indices):
                n = len(source.encoded[int(index)]["input_ids"])
                starts.append(logits_np[row, :n, 0])
                ends.append(logits_np[row, :n, 1])
    finally:
        model.train(was_training)
    answers, margins = best_spans(
        source.examples,
        source.example_index,
        source.offsets,
        starts,
        ends,
        source.config.max_answer_length,
        bool(source.config.version_2),
        source.config.null_threshold,
    )
    return answers, total / max(source.num_examples, 1), margins


def make_qa_split(
    data: QAData, tokenizer: Tokenizer, max_length: int, config: QAConfig, seed: int
) -> TaskSplit:
    """Windows of a QA split; the references are each question's gold answer texts ([] if none)."""
    features = encode_qa(tokenizer, data.examples, max_length, config)
    source = QASource(features, data.examples, pad_id(tokenizer), seed, config)
    return TaskSplit(source, [[a.text for a in e.answers] for e in data.examples])


def _window_length(requested: int, config: Any) -> int:
    """``requested``, checked against the model's learned positions (the same error as the other tasks)."""
    limit = config.max_positions
    if config.positions == "learned" and limit and requested > limit:
        raise ConfigError(
            f"max_length {requested} is longer than the model's {limit} learned positions; "
            f"use --max-length {limit} or less"
        )
    return requested


class QATask(Task):
    """Extractive QA on SQuAD v1.1 / v2.0 JSON: a ``question_answering`` head (start / end logits).

    ``TaskSettings.options`` is the :class:`QAConfig`; the resolved one (``version_2`` from the
    training data) is stored in ``config.extra["qa"]`` so evaluation windows and decodes the same way.
    """

    name = "qa"
    head = "question_answering"
    data_kind = "qa"
    default_metric = "f1"
    augmentable = False
    validation_metrics = (
        "loss", "exact_match", "f1", "has_answer_exact", "has_answer_f1", "no_answer_exact", "no_answer_f1",
        "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
    )  # fmt: skip

    def read(self, source: Any, split: str, config: Any) -> QAData:
        data = super().read(source, split, config)
        assert isinstance(data, QAData)
        return data

    def check_model(self, loaded: LoadedModel, name: str | Path) -> None:
        _window_length(loaded.config.max_positions, loaded.config)

    def configure(self, model: TransformerModel, train: QAData, settings: TaskSettings) -> TaskSettings:
        qa = settings.options if isinstance(settings.options, QAConfig) else QAConfig()
        if qa.version_2 is None:
            qa = dataclasses.replace(qa, version_2=train.has_impossible)
        _window_length(settings.max_length, model.config)
        model.config.extra["qa"] = dataclasses.asdict(qa)
        return dataclasses.replace(settings, options=qa)

    def settings_for(
        self, loaded: LoadedModel, max_length: int | None = None, **overrides: Any
    ) -> TaskSettings:
        """``null_threshold=`` overrides the run's SQuAD v2.0 no-answer threshold."""
        stored = dict(loaded.config.extra.get("qa") or {})
        known = {f.name for f in dataclasses.fields(QAConfig)}
        qa = QAConfig(**{k: v for k, v in stored.items() if k in known})
        if overrides.get("null_threshold") is not None:
            qa.null_threshold = float(overrides["null_threshold"])
        length = _window_length(max_length or int(loaded.config.extra.get("max_length", 384)), loaded.config)
        return TaskSettings(max_length=length, options=qa)

    def encode(
        self, data: QAData, tokenizer: Tokenizer, settings: TaskSettings, seed: int, training: bool = False
    ) -> TaskSplit:
        qa = settings.options if isinstance(settings.options, QAConfig) else QAConfig()
        if not training and data.has_impossible and not qa.version_2:  # "no answer" allowed on v2.0 data
            qa = dataclasses.replace(qa, version_2=True)
        return make_qa_split(data, tokenizer, settings.max_length, qa, seed)

    def loss(
        self, model: TransformerModel, settings: TaskSettings, train: TaskSplit, num_labels: int
    ) -> nn.Module:
        return QALoss(model)

    def predict(self, model: TransformerModel, split: TaskSplit, batch_size: int = 64) -> tuple[Any, float]:
        """Outputs: one answer string per question (``""`` for no answer)."""
        assert isinstance(split.source, QASource), "qa splits come from QATask.encode"
        answers, loss, margins = predict_qa(model, split.source, batch_size)
        split.info["null_margins"] = margins
        return answers, loss

    def prediction_fields(self, data: QAData, split: TaskSplit, loaded: LoadedModel) -> dict[str, Any]:
        assert isinstance(split.source, QASource)
        return {
            "ids": [e.id for e in data.examples],
            "null_margins": split.info.get("null_margins"),
            "version_2": split.source.config.version_2,
        }

    def score(
        self, outputs: Any, references: References, names: LabelNames, *, validation: bool, **options: Any
    ) -> Scores:
        return squad_metrics(list(outputs), list(references)), {}

    def write_outputs(self, out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
        """``predictions.json``: ``{id: answer}``, the official SQuAD evaluation script's input."""
        answers = dict(zip(result["ids"], result["outputs"]))
        path = Path(out_dir) / "predictions.json"
        atomic_write_text(path, json.dumps(answers, indent=2, ensure_ascii=False) + "\n")
        return {"predictions": str(path)}

    def report_fields(
        self, train: Any, train_split: TaskSplit, val: Any, val_split: TaskSplit | None
    ) -> dict[str, Any]:
        assert isinstance(train_split.source, QASource)
        return {
            "train_questions": len(train),
            "train_windows": train_split.source.num_examples,
            "validation_windows": None if val_split is None else val_split.source.num_examples,
            "version_2": train_split.source.config.version_2,
        }


register_task(QATask())
