"""Fine-tuning objectives: task examples as an :class:`ExampleSource`, and their losses.

Texts are tokenised once (no padding) and each batch is padded to its own longest sequence:
sentiment reviews are short, and padding every batch to ``max_length`` would cost several
times the compute. Batches follow the pretraining sources' rule (the batch of step ``s`` is a
pure function of ``(seed, s)``), so a fine-tuning run is reproducible from its seed.

Token classification aligns word-level tags to sub-word tokens the usual way: the first
sub-token of each word carries the word's tag, the other sub-tokens and the special tokens get
``-100`` (ignored by the loss and by the evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.errors import ConfigError
from lmforge.models import TransformerModel
from lmforge.tokenizers import Tokenizer
from lmforge.train.causal_lm import CAUSAL_TASKS, causal_lm_loss
from lmforge.train.collators import IGNORE_INDEX
from lmforge.train.objectives import ExampleSource

__all__ = ["TaskLoss", "TaskSource", "encode_classification", "encode_token_classification"]


def pad_id(tokenizer: Tokenizer) -> int:
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id
    if pad is None:
        raise ConfigError("the tokenizer has neither a pad nor an EOS token; fine-tuning needs one to pad")
    return pad


def encode_classification(
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_length: int,
    text_pairs: Sequence[str | None] | None = None,
) -> list[dict[str, list[int]]]:
    """Token ids (and segment ids) of each text or text pair, truncated to ``max_length``."""
    backend = tokenizer.backend
    backend.enable_truncation(max_length=max_length)
    try:
        if text_pairs is not None and any(p is not None for p in text_pairs):
            pairs = [(t, p or "") for t, p in zip(texts, text_pairs)]
            encodings = backend.encode_batch(pairs)
        else:
            encodings = backend.encode_batch(list(texts))
    finally:
        backend.no_truncation()
    return [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings]


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


class TaskSource(ExampleSource):
    """Numbered, pre-tokenised task examples; batches padded to their longest member.

    Args:
        encoded: per example ``input_ids`` (and optionally ``token_type_ids``, per-token
            ``labels``, ``word_index``), as from :func:`encode_classification` /
            :func:`encode_token_classification`.
        labels: per-example class indices [N] (sequence classification), else ``None``.
        pad_id: id used to pad ``input_ids``.
        seed: seeds the epoch order.
    """

    def __init__(
        self,
        encoded: list[dict[str, list[int]]],
        labels: Sequence[int] | None,
        pad_id: int,
        seed: int,
    ) -> None:
        # The pretraining constructor wants a corpus and masking settings; only the epoch order
        # and batch numbering of ExampleSource are shared.
        self.seed = seed
        self._order_cache = None
        self.encoded = encoded
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.pad_id = pad_id
        self.num_examples = len(encoded)
        self.with_types = bool(encoded) and "token_type_ids" in encoded[0]

    def collate(self, indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        rows = [self.encoded[int(i)] for i in indices]
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        batch: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self.with_types:
            batch["token_type_ids"] = np.zeros((len(rows), width), dtype=np.int64)
        if "labels" in rows[0]:
            batch["token_labels"] = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for row, item in enumerate(rows):
            n = len(item["input_ids"])
            ids[row, :n], mask[row, :n] = item["input_ids"], 1
            if self.with_types:
                batch["token_type_ids"][row, :n] = item["token_type_ids"]
            if "token_labels" in batch:
                batch["token_labels"][row, :n] = item["labels"]
        if self.labels is not None:
            batch["labels"] = self.labels[indices]
        return batch

    def ordered_batches(self, batch_size: int) -> list[np.ndarray]:
        """Index blocks covering every example once, in order (evaluation / prediction)."""
        return [
            np.arange(i, min(i + batch_size, self.num_examples))
            for i in range(0, self.num_examples, batch_size)
        ]


def to_tensors(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


class TaskLoss(nn.Module):
    """Cross-entropy of a classification head, with optional class weights and label smoothing.

    ``forward(batch)`` returns ``(loss, logits)``: the mean loss over the scored items and the
    logits ((B, C) for sequence classification, (B, T, C) for token classification).
    """

    def __init__(
        self,
        model: TransformerModel,
        task: str,
        class_weights: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.model, self.task = model, task
        self.label_smoothing = label_smoothing
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        inputs: dict[str, Any] = {"attention_mask": batch["attention_mask"]}
        if "token_type_ids" in batch and self.model.config.type_vocab_size:
            inputs["token_type_ids"] = batch["token_type_ids"]
        logits = self.model(batch["input_ids"], **inputs).logits
        assert logits is not None, "fine-tuning needs a classification head"
        if self.task in CAUSAL_TASKS:  # lm / chat: shifted next-token loss on the scored tokens
            return causal_lm_loss(logits, batch["token_labels"]), logits
        logits = logits.float()
        if self.task == "token-classification":
            flat, targets = logits.reshape(-1, logits.shape[-1]), batch["token_labels"].reshape(-1)
        else:
            flat, targets = logits, batch["labels"]
        loss = F.cross_entropy(
            flat,
            targets,
            weight=self.class_weights,
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.label_smoothing,
        )
        return loss, logits


def balanced_class_weights(labels: Sequence[int], num_classes: int) -> Tensor:
    """``n / (C * count_c)`` per class (scikit-learn's ``"balanced"``); unseen classes get 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)
