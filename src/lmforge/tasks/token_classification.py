"""Token classification (``--task token-classification``): a tag per word (NER with BIO / BIOES).

Word-level tags are aligned to sub-word tokens the usual way: the first sub-token of each word
carries the word's tag, the other sub-tokens and the special tokens get ``-100`` (ignored by the
loss and by the evaluation). A sentence longer than ``max_length`` sub-tokens is cut at word
boundaries into several items, so every word is trained on and predicted. Predictions are
word-level tag ids per sentence; metrics are entity-level (:func:`lmforge.metrics.sequence.entity_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.data import TokenClassificationData
from lmforge.errors import ConfigError, EvaluationError
from lmforge.metrics.calibration import as_numpy
from lmforge.metrics.sequence import entity_metrics
from lmforge.models import TransformerModel
from lmforge.tasks.base import LabelNames, References, Scores, Task, TaskSettings, TaskSplit, register_task
from lmforge.tasks.sources import IGNORE_INDEX, ClassifierLoss, TaskSource, pad_id, to_tensors
from lmforge.tokenizers import Tokenizer

__all__ = ["TokenClassificationTask", "encode_token_classification", "token_classification_scores"]


def _word_chunks(tokens_per_word: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Cut words into consecutive ``[start, end)`` runs of at most ``budget`` sub-tokens each
    (a single longer word is a run of its own and gets truncated)."""
    chunks, start, used = [], 0, 0
    for word, count in enumerate(tokens_per_word):
        if used + count > budget and word > start:
            chunks.append((start, word))
            start, used = word, 0
        used += count
    chunks.append((start, len(tokens_per_word)))
    return chunks


def encode_token_classification(
    tokenizer: Tokenizer,
    words: Sequence[Sequence[str]],
    tags: Sequence[Sequence[int]] | None,
    max_length: int,
) -> list[dict[str, list[int]]]:
    """Sub-word ids of pre-split words with aligned tag ids (first sub-token only, rest -100).

    A sentence longer than ``max_length`` sub-tokens is cut at word boundaries into several
    items, so every word is trained on and predicted (People's Daily has 21% of its entities
    past 128 characters); each item's ``example`` says which sentence it belongs to.

    Returns per item ``input_ids``, ``labels`` (-100 where not scored), ``word_index`` (the
    sentence-level index of the word each first sub-token starts, -1 elsewhere) and
    ``example`` (one-element list: the sentence's index).
    """
    backend = tokenizer.backend
    sentences = [list(w) for w in words]
    plain = backend.encode_batch(sentences, is_pretokenized=True, add_special_tokens=False)
    specials = len(backend.encode(["x"], is_pretokenized=True).ids) - len(
        backend.encode(["x"], is_pretokenized=True, add_special_tokens=False).ids
    )
    budget = max(1, max_length - specials)
    pieces: list[tuple[int, int, int]] = []  # (sentence, first word, end word)
    for row, encoding in enumerate(plain):
        counts = np.bincount([w for w in encoding.word_ids if w is not None], minlength=len(sentences[row]))
        pieces += [(row, a, b) for a, b in _word_chunks(counts.tolist(), budget)]
    backend.enable_truncation(max_length=max_length)
    try:
        encodings = backend.encode_batch([sentences[r][a:b] for r, a, b in pieces], is_pretokenized=True)
    finally:
        backend.no_truncation()
    out = []
    for (row, offset, _), encoding in zip(pieces, encodings):
        labels: list[int] = []
        word_index: list[int] = []
        previous = None
        for word in encoding.word_ids:
            first = word is not None and word != previous
            word_index.append(word + offset if first and word is not None else -1)
            scored = first and word is not None and tags is not None
            labels.append(int(tags[row][word + offset]) if scored else IGNORE_INDEX)  # type: ignore[index,operator]
            previous = word
        out.append({"input_ids": encoding.ids, "labels": labels, "word_index": word_index, "example": [row]})
    return out


def _tags(sequences: Sequence[Any], label_names: Sequence[str] | None, what: str) -> list[list[Any]]:
    rows = [list(as_numpy(s, np.int64)) if hasattr(s, "detach") else list(s) for s in sequences]
    if rows and rows[0] and not isinstance(rows[0][0], str) and label_names is None:
        raise EvaluationError(f"{what} are tag ids: pass label_names (the tag of each id)")
    return rows


def token_classification_scores(
    predictions: Any, references: Any, label_names: Sequence[str] | None
) -> dict[str, Any]:
    """Entity-level precision / recall / F1 (seqeval's definition) of tag sequences (names, or ids
    with ``label_names``); ``-100`` references (sub-word / special positions) are not scored."""
    refs, preds = _tags(references, label_names, "references"), _tags(predictions, label_names, "predictions")
    if len(refs) != len(preds):
        raise EvaluationError(f"{len(refs)} reference sentences but {len(preds)} predicted")
    names = list(label_names or [])

    def tag(value: Any) -> str:
        if isinstance(value, str):
            return value
        if not 0 <= int(value) < len(names):
            raise EvaluationError(f"tag id {value} has no name among the {len(names)} label_names")
        return names[int(value)]

    true_tags, predicted_tags = [], []
    for s, (ref, pred) in enumerate(zip(refs, preds)):
        if len(ref) != len(pred):
            raise EvaluationError(f"sentence {s}: {len(ref)} reference tags but {len(pred)} predicted")
        kept = [(r, p) for r, p in zip(ref, pred) if r != IGNORE_INDEX]  # sub-word / special positions
        true_tags.append([tag(r) for r, _ in kept])
        predicted_tags.append([tag(p) for _, p in kept])
    return entity_metrics(true_tags, predicted_tags)


@torch.no_grad()
def predict_word_tags(model: nn.Module, split: TaskSplit, batch_size: int) -> tuple[list[list[int]], float]:
    """Word-level predicted tag ids of every sentence (a word longer than ``max_length`` gets
    tag 0) and the mean loss over the scored tokens."""
    source = split.source
    assert isinstance(source, TaskSource)
    device = next(model.parameters()).device
    loss_module = ClassifierLoss(model, per_token=True)
    was_training = model.training
    model.eval()
    sentence_tags: dict[int, np.ndarray] = {}
    total, count = 0.0, 0
    try:
        for indices in source.ordered_batches(batch_size):
            batch = source.collate(indices, np.random.default_rng(0))
            loss, logits = loss_module(to_tensors(batch, device))
            scored = int((batch["token_labels"] != IGNORE_INDEX).sum())
            if scored:
                total, count = total + float(loss) * scored, count + scored
            ids = logits.argmax(-1).cpu().numpy()  # (B, T)
            for row, index in enumerate(indices):
                item = source.encoded[int(index)]
                sentence = item.get("example", [int(index)])[0]  # long sentences span several items
                if sentence not in sentence_tags:
                    sentence_tags[sentence] = np.zeros(
                        split.num_words[sentence] if split.num_words else 0, int
                    )
                for position, word in enumerate(item["word_index"]):
                    if word >= 0:
                        sentence_tags[sentence][word] = ids[row, position]
    finally:
        model.train(was_training)
    return [sentence_tags[i].tolist() for i in sorted(sentence_tags)], total / max(count, 1)


class TokenClassificationTask(Task):
    """A tag per word: a ``token_classification`` head."""

    name = "token-classification"
    head = "token_classification"
    data_kind = "token-classification"
    default_metric = "entity_f1"
    length_groups = True
    target_key = "token_labels"
    validation_metrics = (
        "loss", "entity_f1", "entity_precision", "entity_recall", "token_accuracy", "macro_f1",
        "macro_precision", "macro_recall", "weighted_f1", "weighted_precision", "weighted_recall",
    )  # fmt: skip

    def label_names(self, data: TokenClassificationData) -> list[str]:
        return list(data.label_names)

    def cv_strata(self, data: TokenClassificationData) -> list[int]:
        # sentences stratified by whether they hold an entity at all
        return [int(any(t != "O" for t in e.tags)) for e in data.examples]

    def encode(
        self,
        data: TokenClassificationData,
        tokenizer: Tokenizer,
        settings: TaskSettings,
        seed: int,
        training: bool = False,
    ) -> TaskSplit:
        index = {name: i for i, name in enumerate(data.label_names)}
        tags = [[index[t] for t in e.tags] for e in data.examples]
        encoded = encode_token_classification(
            tokenizer, [e.tokens for e in data.examples], tags, settings.max_length
        )
        source = TaskSource(encoded, None, pad_id(tokenizer), seed)
        return TaskSplit(source, tags, [len(e.tokens) for e in data.examples])

    def loss(
        self, model: TransformerModel, settings: TaskSettings, train: TaskSplit, num_labels: int
    ) -> nn.Module:
        if settings.class_weights == "balanced":
            raise ConfigError("--class-weights balanced applies to classification, not token-classification")
        return ClassifierLoss(model, True, None, settings.label_smoothing)

    def predict(self, model: TransformerModel, split: TaskSplit, batch_size: int = 64) -> tuple[Any, float]:
        return predict_word_tags(model, split, batch_size)

    def score(
        self, outputs: Any, references: References, names: LabelNames, *, validation: bool, **options: Any
    ) -> Scores:
        return token_classification_scores(outputs, references, names), {}


register_task(TokenClassificationTask())
