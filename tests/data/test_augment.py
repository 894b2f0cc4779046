"""EDA-style text augmentation: seeded, never empties a text, swap keeps the words, which fields change."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lmforge.data.augment import (
    RandomDeletion,
    RandomSwap,
    augment_task_data,
    build_text_augmenters,
    random_deletion,
    random_swap,
    split_words,
)
from lmforge.data.chat import ChatData, ChatExample, ChatMessage
from lmforge.data.classification import ClassificationData, ClassificationExample
from lmforge.data.lm import LMData, LMExample
from lmforge.data.seq2seq import Seq2SeqData, Seq2SeqExample
from lmforge.errors import ConfigError

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a single",
    "word",
    "这部电影非常好看，我很喜欢",
    "lmforge fine tunes small language models offline on an ordinary machine",
]


def test_deletion_never_empties_and_keeps_order() -> None:
    rng = np.random.default_rng(0)
    for text in TEXTS:
        words, _ = split_words(text)
        for _ in range(50):
            kept = random_deletion(words, 0.9, rng)
            assert kept, text
            positions = iter(words)  # kept words are a subsequence of the original
            assert all(any(w == p for p in positions) for w in kept)
    assert RandomDeletion(1.0)(["one two three"], rng)[0] in {"one", "two", "three"}


def test_swap_keeps_the_multiset_of_words() -> None:
    rng = np.random.default_rng(1)
    for text in TEXTS:
        words, joiner = split_words(text)
        swapped = random_swap(words, 0.3, rng)
        assert Counter(swapped) == Counter(words)
        out = RandomSwap(0.3)([text], rng)[0]
        assert Counter(split_words(out)[0] if joiner else out) == Counter(words if joiner else text)
    long = TEXTS[0].split()
    assert random_swap(long, 0.5, np.random.default_rng(2)) != long


def test_chinese_is_split_into_words_and_joined_without_spaces() -> None:
    words, joiner = split_words("这部电影非常好看")
    assert joiner == "" and "".join(words) == "这部电影非常好看" and 1 < len(words) < 8
    out = RandomDeletion(0.5)(["这部电影非常好看"], np.random.default_rng(0))[0]
    assert " " not in out and len(out) < len("这部电影非常好看")


def test_augmented_sets_are_seeded_and_append_copies() -> None:
    data = ClassificationData(
        [ClassificationExample(t, i % 2, text_pair="pair text here", line=i) for i, t in enumerate(TEXTS)],
        ["neg", "pos"],
    )
    augmenters = build_text_augmenters(["deletion", "swap"], 0.3)
    first = augment_task_data(data, augmenters, copies=3, seed=7)
    again = augment_task_data(data, augmenters, copies=3, seed=7)
    other = augment_task_data(data, augmenters, copies=3, seed=8)
    assert len(first.examples) == 4 * len(TEXTS) and first.info["augmented"] == 3 * len(TEXTS)
    assert first.examples[: len(TEXTS)] == data.examples  # originals first, unchanged
    assert first.examples == again.examples and first.examples != other.examples
    assert [e.label for e in first.examples] == [e.label for e in data.examples] * 4
    assert all(e.text for e in first.examples) and len(data.examples) == len(TEXTS)


def test_only_inputs_are_augmented() -> None:
    chat = ChatData(
        [
            ChatExample(
                (
                    ChatMessage("system", "be brief and kind to everyone"),
                    ChatMessage("user", "please tell me what two plus two is"),
                    ChatMessage("assistant", "it is four of course my friend"),
                )
            )
        ]
    )
    out = augment_task_data(chat, [RandomSwap(0.5)], copies=2, seed=0)
    for example in out.examples[1:]:
        system, user, assistant = example.messages
        assert system == chat.examples[0].messages[0] and assistant == chat.examples[0].messages[2]
        assert Counter(user.content.split()) == Counter(chat.examples[0].messages[1].content.split())
    pairs = Seq2SeqData([Seq2SeqExample("the source sentence is long enough", "target stays")])
    out_pairs = augment_task_data(pairs, [RandomDeletion(0.5)], copies=2, seed=0)
    assert [e.target for e in out_pairs.examples] == ["target stays"] * 3
    texts = augment_task_data(LMData([LMExample(TEXTS[0])]), [RandomDeletion(0.3)], copies=1, seed=0)
    assert len(texts.examples) == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation"):
        build_text_augmenters(["synonyms"], 0.1)
    with pytest.raises(ConfigError, match="augment-prob"):
        build_text_augmenters(["swap"], 1.5)
    assert build_text_augmenters(["deletion", "backtranslation"], 0.1)[0].name == "deletion"
