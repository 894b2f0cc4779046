"""Text augmentation for fine-tuning: EDA-style random deletion and random swap (Wei & Zou, 2019).

Pure text functions, seeded by a ``numpy`` generator, so an augmented training set is a function
of ``(data, augmenters, copies, seed)``. A text is split into words by whitespace, or, when it
holds CJK characters, by jieba (characters when jieba is not installed) and joined back without
spaces.

* ``deletion``: each word is dropped with probability ``p``; at least one word always stays (a
  text is never emptied).
* ``swap``: ``max(1, round(p * n))`` times, two random positions are swapped (the multiset of
  words is kept).

:func:`augment_task_data` appends ``copies`` augmented copies of every example of a training set.
Each copy of each example gets one augmenter drawn at random from those given; augmenters are any
callables ``augmenter(texts, rng) -> texts`` with a ``name`` (back-translation, which needs a
seq2seq model and the generate stage, lives in :mod:`lmforge.generate.backtranslate`). Which
fields change: classification text (and pair), ``lm`` text, ``chat`` user turns (the assistant's
answers stay clean: they are the targets), ``seq2seq`` source (the target stays clean).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from lmforge.data.chat import ChatData, ChatExample, ChatMessage
from lmforge.data.classification import ClassificationData
from lmforge.data.lm import LMData
from lmforge.data.seq2seq import Seq2SeqData
from lmforge.errors import ConfigError

__all__ = [
    "AUGMENTATIONS",
    "RandomDeletion",
    "RandomSwap",
    "TextAugmenter",
    "augment_task_data",
    "build_text_augmenters",
    "random_deletion",
    "random_swap",
    "split_words",
]

AUGMENTATIONS = ("deletion", "swap", "backtranslation")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class TextAugmenter(Protocol):
    """``augmenter(texts, rng) -> texts``: one augmented text per input, in order."""

    @property
    def name(self) -> str: ...

    def __call__(self, texts: Sequence[str], rng: np.random.Generator) -> list[str]: ...


def _jieba_cut(text: str) -> list[str] | None:
    try:
        import jieba
    except ImportError:  # characters are a fine unit for EDA on Chinese when jieba is missing
        return None
    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.lcut(text) if w]


def split_words(text: str) -> tuple[list[str], str]:
    """``(words, joiner)``: whitespace words joined by a space, or CJK words (jieba) joined by nothing."""
    if _CJK.search(text):
        words = _jieba_cut(text)
        return (words if words is not None else list(text)), ""
    return text.split(), " "


def random_deletion(words: Sequence[str], prob: float, rng: np.random.Generator) -> list[str]:
    """Drop each word with probability ``prob``; a random word is kept if all would go."""
    if len(words) <= 1:
        return list(words)
    keep = rng.random(len(words)) >= prob
    if not keep.any():
        return [words[int(rng.integers(len(words)))]]
    return [w for w, k in zip(words, keep) if k]


def random_swap(words: Sequence[str], prob: float, rng: np.random.Generator) -> list[str]:
    """Swap two random positions ``max(1, round(prob * n))`` times."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(max(1, round(prob * len(out)))):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


@dataclasses.dataclass(frozen=True)
class _WordAugmenter:
    name: str
    prob: float
    operation: Callable[[Sequence[str], float, np.random.Generator], list[str]]

    def __call__(self, texts: Sequence[str], rng: np.random.Generator) -> list[str]:
        out = []
        for text in texts:
            words, joiner = split_words(text)
            out.append(joiner.join(self.operation(words, self.prob, rng)) if words else text)
        return out


def RandomDeletion(prob: float = 0.1) -> TextAugmenter:  # noqa: N802 (reads as a class)
    """EDA random deletion of words with probability ``prob``."""
    return _WordAugmenter("deletion", prob, random_deletion)


def RandomSwap(prob: float = 0.1) -> TextAugmenter:  # noqa: N802 (reads as a class)
    """EDA random swap: ``max(1, round(prob * n))`` swaps of two words."""
    return _WordAugmenter("swap", prob, random_swap)


def build_text_augmenters(names: Sequence[str], prob: float) -> list[TextAugmenter]:
    """The text-level augmenters named (``deletion``, ``swap``); ``backtranslation`` is skipped here.

    Raises:
        ConfigError: an unknown name, or ``prob`` outside [0, 1].
    """
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"--augment-prob must be within [0, 1], got {prob}")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; use {', '.join(AUGMENTATIONS)}")
    makers = {"deletion": RandomDeletion, "swap": RandomSwap}
    return [makers[n](prob) for n in names if n in makers]


# -- whole training sets -------------------------------------------------------------------------

AugmentableData = ClassificationData | LMData | ChatData | Seq2SeqData


def _texts_of(example: Any) -> list[str]:
    """The fields of one example that augmentation changes."""
    if isinstance(example, ChatExample):
        return [m.content for m in example.messages if m.role == "user"]
    if hasattr(example, "text_pair"):  # classification
        return [example.text] + ([example.text_pair] if example.text_pair is not None else [])
    if hasattr(example, "target"):  # seq2seq: only the source
        return [example.source]
    return [example.text]


def _with_texts(example: Any, texts: list[str]) -> Any:
    if isinstance(example, ChatExample):
        fresh = iter(texts)
        messages = tuple(
            ChatMessage(m.role, next(fresh)) if m.role == "user" else m for m in example.messages
        )
        return dataclasses.replace(example, messages=messages)
    if hasattr(example, "text_pair"):
        pair = texts[1] if example.text_pair is not None else None
        return dataclasses.replace(example, text=texts[0], text_pair=pair)
    if hasattr(example, "target"):
        return dataclasses.replace(example, source=texts[0])
    return dataclasses.replace(example, text=texts[0])


def augment_task_data(
    data: AugmentableData, augmenters: Sequence[TextAugmenter], copies: int, seed: int
) -> AugmentableData:
    """The training set plus ``copies`` augmented copies of every example (originals first).

    Args:
        data: classification, lm, chat or seq2seq examples.
        augmenters: one is drawn at random for each copy of each example.
        copies: augmented copies per example (0: ``data`` unchanged).
        seed: the same seed gives the same copies.

    Returns:
        A new data object of the same type; ``info["augmented"]`` counts the added examples.

    Raises:
        ConfigError: data of another task (token classification, QA), or no augmenter.
    """
    if copies <= 0:
        return data
    if not isinstance(data, (ClassificationData, LMData, ChatData, Seq2SeqData)):
        raise ConfigError(
            f"--augment applies to classification, seq2seq, lm and chat data, not {type(data).__name__}"
        )
    if not augmenters:
        raise ConfigError("--augment-copies > 0 but no augmentation named (use --augment deletion,swap)")
    originals = list(data.examples)
    added: list[Any] = []
    for copy in range(1, copies + 1):
        rng = np.random.default_rng([seed, copy])
        choice = rng.integers(len(augmenters), size=len(originals))
        fresh: list[Any] = list(originals)
        for a, augmenter in enumerate(augmenters):
            members = np.flatnonzero(choice == a)
            fields = [_texts_of(originals[i]) for i in members]
            flat = augmenter([t for f in fields for t in f], rng)
            offset = 0
            for i, f in zip(members, fields):
                fresh[i] = _with_texts(originals[i], flat[offset : offset + len(f)])
                offset += len(f)
        added.extend(fresh)
    info = {**data.info, "augmented": len(added), "augmentations": [a.name for a in augmenters]}
    return dataclasses.replace(data, examples=originals + added, info=info)  # type: ignore[arg-type]
