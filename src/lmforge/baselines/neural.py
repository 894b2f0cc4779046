"""Small PyTorch baselines over token ids: TextCNN and BiLSTM classifiers, a BiLSTM tagger, and the
one short training loop they share.

``lmforge.train`` holds the loop for Transformer objectives (micro-batches, schedules, checkpoints,
resume); these models train in seconds to minutes from scratch, so a plain Adam loop over padded
mini-batches is all they need. Inputs are id lists from :class:`~lmforge.baselines.text.Vocabulary`
(``<pad>`` = 0); batches are padded to their own longest sequence.

Example:
    >>> model = TextCNN(vocab_size=100, num_classes=2)
    >>> fit_model(model, [[2, 3], [4, 5, 6]], [0, 1], TrainSettings(epochs=1))  # doctest: +ELLIPSIS
    [...]
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.errors import ConfigError

__all__ = [
    "BiLSTMClassifier",
    "BiLSTMTagger",
    "TextCNN",
    "TrainSettings",
    "fit_model",
    "pad_batch",
    "predict_logits",
]

IGNORE = -100  # target of padding positions in tagging (skipped by cross_entropy)


@dataclass
class TrainSettings:
    """The baselines' training loop.

    Attributes:
        epochs: passes over the training data.
        batch_size: sequences per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_length: sequences are cut to this many tokens.
        clip: gradient-norm clipping (0 = off).
        seed: parameter init and batch order.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_length: int = 256
    clip: float = 5.0
    seed: int = 0


class TextCNN(nn.Module):
    """Kim (2014): embeddings, parallel 1-D convolutions of several widths, max over time, linear.

    Args:
        vocab_size: V (id 0 is padding).
        num_classes: C.
        embed_dim: embedding size.
        kernel_sizes: convolution widths (in tokens).
        num_filters: feature maps per width.
        dropout: before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 128,
        kernel_sizes: tuple[int, ...] = (2, 3, 4),
        num_filters: int = 100,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.kernel_sizes = tuple(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, num_filters, k, padding=k - 1) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(num_filters * len(kernel_sizes), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[B, T]`` -> logits ``[B, C]``."""
        mask = (ids != 0).unsqueeze(1)  # (B, 1, T)
        x = self.embed(ids).transpose(1, 2)  # (B, E, T)
        pooled = []
        for width, conv in zip(self.kernel_sizes, self.convs):
            # padding=k-1 gives T+k-1 outputs; an output is real if any token in its window is.
            # ReLU outputs are >= 0, so zeroing the all-padding windows leaves the max of a real text
            # unchanged and gives an empty text zeros instead of -inf.
            h = F.relu(conv(x))  # (B, F, T+k-1)
            window_mask = F.max_pool1d(F.pad(mask.float(), (width - 1, width - 1)), width, 1)
            pooled.append(h.masked_fill(window_mask == 0, 0.0).amax(dim=2))  # (B, F)
        return self.out(self.dropout(torch.cat(pooled, dim=1)))


class BiLSTMClassifier(nn.Module):
    """Embeddings, a bidirectional LSTM, max-pooling over the real time steps, linear.

    Args:
        vocab_size, num_classes, embed_dim: as in :class:`TextCNN`.
        hidden_size: LSTM units per direction.
        num_layers: stacked LSTM layers.
        dropout: on embeddings and before the output layer.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.lstm = nn.LSTM(embed_dim, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, num_classes)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[B, T]`` -> hidden states ``[B, T, 2H]`` (zeros at padding)."""
        lengths = (ids != 0).sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.dropout(self.embed(ids)), lengths, batch_first=True, enforce_sorted=False
        )
        hidden, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(hidden, batch_first=True, total_length=ids.shape[1])
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids ``[B, T]`` -> logits ``[B, C]``."""
        hidden = self.encode(ids)  # (B, T, 2H)
        mask = (ids != 0).unsqueeze(-1)
        mask[:, 0] = True  # an empty text still pools its first (padding) step
        pooled = hidden.masked_fill(~mask, float("-inf")).amax(dim=1)  # (B, 2H)
        return self.out(self.dropout(pooled))


class BiLSTMTagger(BiLSTMClassifier):
    """One label per token: a BiLSTM's state at each step through a linear layer (no CRF).

    forward: ids ``[B, T]`` -> logits ``[B, T, num_tags]``.
    """

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(self.encode(ids)))


def pad_batch(sequences: Sequence[Sequence[int]], max_length: int, value: int = 0) -> torch.Tensor:
    """``[B, T]`` long tensor, T = the longest sequence (cut to ``max_length``, at least 1)."""
    length = max(1, min(max_length, max((len(s) for s in sequences), default=1)))
    out = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        if seq:
            out[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def _targets(
    labels: Sequence[int] | Sequence[Sequence[int]], index: list[int], max_length: int
) -> torch.Tensor:
    chosen = [labels[i] for i in index]
    if chosen and isinstance(chosen[0], Sequence):
        return pad_batch(chosen, max_length, IGNORE)  # type: ignore[arg-type]
    return torch.tensor(chosen, dtype=torch.long)


def length_bucketed_batches(
    order: list[int], lengths: Sequence[int], batch_size: int, rng: random.Random, pool: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort pools of ``pool`` batches by length, cut
    them into batches, shuffle the batches. Padding to a batch's longest sequence then wastes little
    compute (reviews range from a few to hundreds of characters)."""
    rng.shuffle(order)
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = sorted(order[start : start + batch_size * pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def fit_model(
    model: nn.Module,
    inputs: Sequence[Sequence[int]],
    labels: Sequence[int] | Sequence[Sequence[int]],
    settings: TrainSettings,
    class_weights: torch.Tensor | None = None,
) -> list[float]:
    """Train with Adam and cross-entropy; per-token targets (tagging) ignore padding.

    Args:
        model: maps ids ``[B, T]`` to logits ``[B, C]`` or ``[B, T, C]``.
        inputs: N id lists.
        labels: N class ids, or N tag-id lists as long as their inputs.
        settings: see :class:`TrainSettings`.
        class_weights: optional ``[C]`` loss weights.

    Returns:
        mean training loss of each epoch.
    """
    if len(inputs) != len(labels) or not inputs:
        raise ConfigError(f"fit_model: {len(inputs)} inputs and {len(labels)} labels; need the same, > 0")
    torch.manual_seed(settings.seed)
    order = list(range(len(inputs)))
    rng = random.Random(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    losses = []
    model.train()
    for _ in range(settings.epochs):
        total, steps = 0.0, 0
        for index in length_bucketed_batches(order, [len(x) for x in inputs], settings.batch_size, rng):
            ids = pad_batch([inputs[i] for i in index], settings.max_length)
            targets = _targets(labels, index, ids.shape[1])
            logits = model(ids)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                targets.reshape(-1),
                weight=class_weights,
                ignore_index=IGNORE,
            )
            optimizer.zero_grad()
            loss.backward()
            if settings.clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.clip)
            optimizer.step()
            total += loss.item()
            steps += 1
        losses.append(total / steps)
    model.eval()
    return losses


@torch.inference_mode()
def predict_logits(
    model: nn.Module, inputs: Sequence[Sequence[int]], batch_size: int = 256, max_length: int = 256
) -> list[torch.Tensor]:
    """Logits per example in input order: ``[C]`` for classifiers, ``[T_i, C]`` for taggers
    (T_i = the example's length, cut to ``max_length``)."""
    model.eval()
    out: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
    # Batches of similar length (the models ignore padding, so this changes speed, not results).
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        logits = model(pad_batch([inputs[i] for i in index], max_length))
        for row, i in enumerate(index):
            out[i] = logits[row, : min(len(inputs[i]), max_length)] if logits.dim() == 3 else logits[row]
    return out
