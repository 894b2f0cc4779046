"""Tokens for the classic baselines: characters, regex words or jieba words, and a token vocabulary.

Chinese has no spaces, so ``auto`` tokenization picks characters when a sample of the texts is
mostly CJK, and lower-cased regex words (``\\w+`` runs and single punctuation marks) otherwise.

Example:
    >>> tokenize("Not bad, really!", "word")
    ['not', 'bad', ',', 'really', '!']
    >>> tokenize("很 好吃", "char")
    ['很', '好', '吃']
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from lmforge.errors import ConfigError

__all__ = ["TOKEN_MODES", "TokenMode", "Vocabulary", "is_mostly_cjk", "resolve_mode", "tokenize"]

TokenMode = Literal["auto", "char", "word", "jieba"]
TOKEN_MODES = ("auto", "char", "word", "jieba")
_WORD = re.compile(r"\w+|[^\w\s]")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_mostly_cjk(texts: Iterable[str], sample: int = 200) -> bool:
    """True when over a third of the non-space characters of the first ``sample`` texts are CJK."""
    cjk = total = 0
    for i, text in enumerate(texts):
        if i >= sample:
            break
        chars = [c for c in text if not c.isspace()]
        total += len(chars)
        cjk += sum(bool(_CJK.match(c)) for c in chars)
    return total > 0 and cjk / total > 1 / 3


def resolve_mode(mode: str, texts: Sequence[str]) -> str:
    """Turn ``auto`` into ``char`` (mostly CJK text) or ``word``; validate the others."""
    if mode not in TOKEN_MODES:
        raise ConfigError(f"--tokens {mode!r}: choose one of {', '.join(TOKEN_MODES)}")
    if mode == "auto":
        return "char" if is_mostly_cjk(texts) else "word"
    return mode


def tokenize(text: str, mode: str) -> list[str]:
    """Split one text into tokens.

    Args:
        text: the text.
        mode: ``char`` (every non-space character), ``word`` (lower-cased ``\\w+`` runs and single
            punctuation marks) or ``jieba`` (Chinese word segmentation, spaces dropped).
    """
    if mode == "char":
        return [c for c in text if not c.isspace()]
    if mode == "word":
        return _WORD.findall(text.lower())
    if mode == "jieba":
        import jieba

        return [w for w in jieba.lcut(text) if w.strip()]
    raise ConfigError(f"tokenize: unknown mode {mode!r} (char, word or jieba; resolve auto first)")


class Vocabulary:
    """Token <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1, built from training tokens.

    Args:
        tokens: the training token lists.
        min_count: rarer tokens map to ``<unk>``.
        max_size: keep at most this many (most frequent) tokens besides the two specials.
    """

    PAD, UNK = 0, 1

    def __init__(
        self, tokens: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None
    ) -> None:
        counts = Counter(t for sentence in tokens for t in sentence)
        # Ties broken by the token itself so the ids do not depend on the order of the data.
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        self.itos = ["<pad>", "<unk>", *kept[:max_size]]
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of the tokens; unknown tokens become ``<unk>``."""
        return [self.stoi.get(t, self.UNK) for t in tokens]
