"""Tokenize a chunk of documents (runs in worker processes) and mark whole-word starts.

Whole-word masking needs to know which tokens begin a word. ``"whitespace"`` takes the words of the
tokenizer's own pre-tokenizer (``Encoding.word_ids``): for BERT WordPiece that is exactly "the
token does not start with ``##``"; for byte-level BPE a word is a space-prefixed piece.
``"jieba"`` segments Chinese text into words (BERT WordPiece splits every CJK character, so the
pre-tokenizer alone would make every character a word).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tokenizers import Tokenizer as Backend

__all__ = ["WordSegmentation", "init_worker", "jieba_word_starts", "tokenize_chunk", "warm_up"]

WordSegmentation = Literal["none", "whitespace", "jieba"]

# One tokenizer backend per worker process, loaded on first use from the data directory's copy
# (always a tokenizer.json: the data stage sits below lmforge.tokenizers and reads only that file).
_BACKENDS: dict[str, Backend] = {}


def _backend(directory: Path) -> Backend:
    key = str(directory)
    if key not in _BACKENDS:
        _BACKENDS[key] = Backend.from_file(str(directory / "tokenizer.json"))
    return _BACKENDS[key]


def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it logs the dictionary build at INFO on first use
    return jieba


def init_worker() -> None:
    """Pool initializer: one thread per worker, since the pool already uses every core it is given."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def warm_up(segmentation: str) -> None:
    """Load jieba's dictionary once in the parent, so that forked workers inherit it (~1 s each)."""
    if segmentation == "jieba":
        _jieba().initialize()


def jieba_word_starts(text: str, token_starts: list[int]) -> np.ndarray:
    """Which tokens begin a jieba word.

    Args:
        text: the text that was tokenized.
        token_starts: character offset in ``text`` where each token starts, shape ``(T,)``.

    Returns:
        Bool ``(T,)``: True where the token's word differs from the previous token's word.
    """
    word_of_char = np.zeros(len(text) + 1, dtype=np.int64)
    for index, (_, start, end) in enumerate(_jieba().tokenize(text)):
        word_of_char[start:end] = index
    word_of_char[len(text)] = -1
    words = word_of_char[np.minimum(np.asarray(token_starts, dtype=np.int64), len(text))]
    starts = np.ones(len(words), dtype=bool)
    starts[1:] = words[1:] != words[:-1]
    return starts


def _pretokenizer_word_starts(word_ids: list[int | None]) -> np.ndarray:
    starts = np.ones(len(word_ids), dtype=bool)
    for i in range(1, len(word_ids)):
        starts[i] = word_ids[i] is None or word_ids[i] != word_ids[i - 1]
    return starts


def tokenize_chunk(
    texts: list[str], tokenizer_dir: Path, segmentation: str, dtype: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Tokenize documents without special tokens.

    Args:
        texts: cleaned documents.
        tokenizer_dir: directory of the tokenizer (loaded once per process).
        segmentation: ``"none"``, ``"whitespace"`` or ``"jieba"``.
        dtype: ``"uint16"`` or ``"uint32"``.

    Returns:
        ``(ids, lengths, word_starts)``: ids of all documents concatenated ``(N,)``, tokens per
        document ``(len(texts),)`` int64, and uint8 ``(N,)`` word starts (``None`` for ``"none"``).
    """
    backend = _backend(tokenizer_dir)
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=dtype, count=int(lengths.sum()))
    if segmentation == "none":
        return ids, lengths, None
    if segmentation == "jieba":
        parts = [jieba_word_starts(t, [s for s, _ in e.offsets]) for t, e in zip(texts, encodings)]
    else:
        parts = [_pretokenizer_word_starts(e.word_ids) for e in encodings]
    words = np.concatenate(parts).astype(np.uint8) if parts else np.zeros(0, np.uint8)
    return ids, lengths, words
