"""Static word embeddings, word2vec (gensim) and GloVe (a small PyTorch version), and a classifier on
averaged vectors.

GloVe (Pennington et al., 2014): co-occurrence counts ``X_ij`` within a window, each pair weighted
``1 / distance``, both directions; then weighted least squares

    J = sum_ij f(X_ij) (w_i . c_j + b_i + b'_j - log X_ij)^2 / 2,   f(x) = min(1, (x / x_max)^0.75),

minimised by AdaGrad over the non-zero entries; the embedding of word ``i`` is ``w_i + c_i``.

Example:
    >>> cooc = cooccurrence([[2, 3, 4], [3, 4]], vocab_size=5, window=2)  # doctest: +SKIP
    >>> vectors, losses = train_glove(cooc, vocab_size=5, dim=8, epochs=20)  # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import ConfigError, UnsupportedError

__all__ = [
    "AveragedEmbeddingClassifier",
    "Cooccurrence",
    "GloVe",
    "cooccurrence",
    "train_glove",
    "train_word2vec",
]


@dataclass
class Cooccurrence:
    """Sparse symmetric co-occurrence matrix: ``values[k]`` is ``X[rows[k], cols[k]]`` (all > 0)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    vocab_size: int


def cooccurrence(
    sentences: Sequence[Sequence[int]], vocab_size: int, window: int = 5, min_id: int = 2
) -> Cooccurrence:
    """Count distance-weighted co-occurrences of token ids within each sentence.

    Args:
        sentences: token-id lists.
        vocab_size: V; ids must lie in ``[0, V)``.
        window: largest distance counted; a pair ``d`` apart adds ``1 / d`` to both ``X_ij`` and ``X_ji``.
        min_id: ids below this (``<pad>``, ``<unk>``) are left out.
    """
    if window < 1:
        raise ConfigError(f"window={window}: must be >= 1")
    lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
    ids = np.fromiter((t for s in sentences for t in s), dtype=np.int64, count=int(lengths.sum()))
    sentence_of = np.repeat(np.arange(len(sentences)), lengths)
    keys, weights = [], []
    # One vectorised pass per distance instead of a Python loop over every pair.
    for d in range(1, window + 1):
        keep = (sentence_of[:-d] == sentence_of[d:]) & (ids[:-d] >= min_id) & (ids[d:] >= min_id)
        left, right = ids[:-d][keep], ids[d:][keep]
        keys += [left * vocab_size + right, right * vocab_size + left]
        weights += [np.full(2 * len(left), 1.0 / d)]
    all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(all_keys, return_inverse=True)
    values = np.bincount(inverse, weights=np.concatenate(weights) if weights else None, minlength=len(unique))
    return Cooccurrence(unique // vocab_size, unique % vocab_size, values.astype(np.float64), vocab_size)


class GloVe(nn.Module):
    """Word vectors ``w``, context vectors ``c`` and their biases (sparse gradients for AdaGrad).

    Args:
        vocab_size: V.
        dim: embedding size.
    """

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, dim, sparse=True)
        self.contexts = nn.Embedding(vocab_size, dim, sparse=True)
        self.word_bias = nn.Embedding(vocab_size, 1, sparse=True)
        self.context_bias = nn.Embedding(vocab_size, 1, sparse=True)
        for table in (self.words, self.contexts):
            nn.init.uniform_(table.weight, -0.5 / dim, 0.5 / dim)  # the reference implementation's init
        for bias in (self.word_bias, self.context_bias):
            nn.init.zeros_(bias.weight)

    def loss(
        self, rows: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, x_max: float, alpha: float
    ) -> torch.Tensor:
        """Weighted squared error summed over a batch of non-zero entries (rows, cols, counts: ``[B]``)."""
        dot = (self.words(rows) * self.contexts(cols)).sum(-1)  # (B,)
        prediction = dot + self.word_bias(rows).squeeze(-1) + self.context_bias(cols).squeeze(-1)
        weight = (counts / x_max).pow(alpha).clamp(max=1.0)
        return 0.5 * (weight * (prediction - counts.log()).pow(2)).sum()

    def vectors(self) -> np.ndarray:
        """``w + c`` per word, ``[V, dim]`` (the sum the paper recommends)."""
        return (self.words.weight + self.contexts.weight).detach().cpu().numpy()


def train_glove(
    cooc: Cooccurrence,
    dim: int = 50,
    epochs: int = 25,
    lr: float = 0.05,
    x_max: float = 100.0,
    alpha: float = 0.75,
    batch_size: int = 4096,
    seed: int = 0,
) -> tuple[np.ndarray, list[float]]:
    """Fit GloVe with AdaGrad on shuffled batches of the non-zero co-occurrences.

    Returns:
        vectors ``[V, dim]`` and the mean weighted loss per non-zero entry of each epoch.
    """
    if len(cooc.values) == 0:
        raise ConfigError("GloVe: no co-occurrences (texts too short, or every token unknown)")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = GloVe(cooc.vocab_size, dim)
    optimizer = torch.optim.Adagrad(model.parameters(), lr=lr)
    rows = torch.from_numpy(cooc.rows)
    cols = torch.from_numpy(cooc.cols)
    counts = torch.from_numpy(cooc.values).float()
    losses = []
    # Saying so explicitly skips torch's per-step warning; AdaGrad builds well-formed sparse tensors.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        for _ in range(epochs):
            losses.append(
                _glove_epoch(model, optimizer, rows, cols, counts, x_max, alpha, batch_size, generator)
            )
    return model.vectors(), losses


def _glove_epoch(
    model: GloVe,
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    cols: torch.Tensor,
    counts: torch.Tensor,
    x_max: float,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
) -> float:
    """One shuffled pass; returns the mean weighted loss per non-zero entry."""
    order = torch.randperm(len(counts), generator=generator)
    total = 0.0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        loss = model.loss(rows[batch], cols[batch], counts[batch], x_max, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(counts)


def _stable_hash(text: str) -> int:
    # gensim seeds each word vector with hash(word + seed); Python's str hash changes per process.
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(
    sentences: Sequence[Sequence[str]],
    dim: int = 100,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 5,
    skip_gram: bool = True,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Train word2vec with gensim (one worker, so the vectors repeat run to run).

    Returns:
        token -> vector ``[dim]``.

    Raises:
        UnsupportedError: gensim (or its smart_open dependency) is not installed.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as error:
        raise UnsupportedError(
            f"word2vec needs gensim ({error}); install it with: pip install 'lmforge[baselines]'"
        ) from error
    model = Word2Vec(
        sentences=[list(s) for s in sentences],
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=int(skip_gram),
        epochs=epochs,
        seed=seed,
        workers=1,
        hashfxn=_stable_hash,
    )
    return {word: model.wv.vectors[i] for i, word in enumerate(model.wv.index_to_key)}


class AveragedEmbeddingClassifier:
    """Mean of a text's token vectors (unknown tokens skipped), standardised, then logistic regression.

    Args:
        vectors: token -> vector, all of one size.
        c: inverse regularisation strength.
        seed: solver seed.
    """

    def __init__(self, vectors: dict[str, np.ndarray], c: float = 1.0, seed: int = 0) -> None:
        if not vectors:
            raise ConfigError("averaged-vector classifier: the embedding table is empty")
        self.vectors = vectors
        self.dim = len(next(iter(vectors.values())))
        self.c = c
        self.seed = seed
        self.pipeline: Any = None
        self.num_classes = 0

    def features(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """``[N, dim]`` mean vectors; a text with no known token gets zeros."""
        out = np.zeros((len(token_lists), self.dim), dtype=np.float64)
        for i, tokens in enumerate(token_lists):
            known = [self.vectors[t] for t in tokens if t in self.vectors]
            if known:
                out[i] = np.mean(known, axis=0)
        return out

    def fit(self, token_lists: Sequence[Sequence[str]], labels: Sequence[int]) -> AveragedEmbeddingClassifier:
        """Fit on N token lists with labels ``0..C-1``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.num_classes = int(max(labels)) + 1
        self.pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        )
        self.pipeline.fit(self.features(token_lists), np.asarray(labels))
        return self

    def scores(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Log-probabilities ``[N, C]``."""
        if self.pipeline is None:
            raise ConfigError("AveragedEmbeddingClassifier: call fit() first")
        raw = self.pipeline.predict_log_proba(self.features(token_lists))
        out = np.full((len(token_lists), self.num_classes), raw.min() - 1e3 if raw.size else 0.0)
        out[:, np.asarray(self.pipeline.classes_, dtype=np.int64)] = raw
        return out

    def predict(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Predicted labels ``[N]``."""
        return self.scores(token_lists).argmax(axis=1)
