"""Inputs of the baselines, through the task loaders of :mod:`lmforge.data`: labelled texts (CSV /
TSV / JSONL files or the ``zh-sentiment`` asset), tagged sentences (CoNLL ``token tag`` / JSONL files
or ``peoples-daily-ner``) and plain text for language models.

A dataset asset is named alone (``zh-sentiment``: its ``train`` split for ``--data``, its ``test``
split for ``--test``) or with a split (``zh-sentiment:validation``). A file without ``--test`` is
split by a hash of each text (:func:`lmforge.data.clean.assign_split`), the same on every machine.
Labels may be strings or integers; test labels must occur in training (a new one is a bad record
naming its file and line).

Example:
    >>> train, test = load_classification_split("train.csv", "test.csv")  # doctest: +SKIP
    >>> train.label_names, len(test)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from lmforge.data import iter_texts
from lmforge.data.classification import ClassificationData, load_classification, load_zh_sentiment
from lmforge.data.clean import SPLIT_NAMES, assign_split
from lmforge.data.ner import TokenClassificationData, load_peoples_daily_ner, load_token_classification
from lmforge.data.readers import OnError
from lmforge.errors import DataError

__all__ = [
    "CLASSIFICATION_ASSETS",
    "TAGGING_ASSETS",
    "load_classification_split",
    "load_tagging_split",
    "load_text_lines",
    "parse_asset",
]

CLASSIFICATION_ASSETS = {"zh-sentiment": load_zh_sentiment}
TAGGING_ASSETS = {"peoples-daily-ner": load_peoples_daily_ner}


def parse_asset(spec: str, known: dict, default_split: str) -> tuple[str, str] | None:
    """``(asset, split)`` when ``spec`` names a dataset asset (``name`` or ``name:split``) rather than
    an existing file, else ``None``."""
    if Path(spec).exists():
        return None
    name, _, split = spec.partition(":")
    if name not in known:
        return None
    split = split or default_split
    if split not in SPLIT_NAMES:
        raise DataError(f"{spec}: unknown split {split!r}; use {name}:{'|'.join(SPLIT_NAMES)}")
    return name, split


def _subset(data: ClassificationData, keep: list[bool], split: str) -> ClassificationData:
    examples = [e for e, k in zip(data.examples, keep) if k]
    info = {**data.info, "split": f"{split}: hash of text (test_fraction)"}
    return ClassificationData(examples, data.label_names, data.multi_label, f"{data.source}:{split}", info)


def load_classification_split(
    data: str,
    test: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    test_fraction: float = 0.1,
    on_error: OnError = "raise",
) -> tuple[ClassificationData, ClassificationData]:
    """Training and test sets: two files, one file split by text hash, or an asset's splits.

    Args:
        data: training file (CSV / TSV / JSONL) or asset (``zh-sentiment[:split]``, default train).
        test: test file or asset split; ``None``: the asset's test split, or ``test_fraction`` of
            the ``data`` file chosen by text hash.
        text_column, label_column: column (CSV / TSV) or field (JSONL) names.
        test_fraction: share of the ``data`` file used for testing when ``test`` is ``None``.
        on_error: ``raise`` on a bad row, or ``skip`` it (counted in ``info["skipped"]``).

    Raises:
        DataError: unreadable input, a single training class, multi-label data, or a test label
            that never occurs in training.
    """
    asset = parse_asset(data, CLASSIFICATION_ASSETS, "train")
    if asset is not None:
        train = CLASSIFICATION_ASSETS[asset[0]](asset[1])
        if test is None:
            test = f"{asset[0]}:test"
    else:
        train = load_classification(
            data, text_column=text_column, label_column=label_column, on_error=on_error
        )
        if test is None:
            keep = [assign_split(e.text, 0.0, test_fraction) == "test" for e in train.examples]
            train, test_set = _subset(train, [not k for k in keep], "train"), _subset(train, keep, "test")
            _check(train, test_set, data)
            return train, test_set
    test_asset = parse_asset(test, CLASSIFICATION_ASSETS, "test")
    if test_asset is not None:
        test_set = CLASSIFICATION_ASSETS[test_asset[0]](test_asset[1])
        if test_set.label_names != train.label_names:
            raise DataError(
                f"{test}: classes {test_set.label_names} differ from the training classes {train.label_names}"
            )
    else:
        test_set = load_classification(
            test,
            text_column=text_column,
            label_column=label_column,
            label_names=train.label_names,
            on_error=on_error,
        )
    _check(train, test_set, data)
    return train, test_set


def _check(train: ClassificationData, test: ClassificationData, source: str) -> None:
    if train.multi_label:
        raise DataError(f"{source}: multi-label data; the baselines are single-label classifiers")
    if len(set(train.labels)) < 2:
        raise DataError(f"{source}: the training labels have a single value; a classifier needs two or more")
    if len(test) == 0 or len(train) == 0:
        raise DataError(f"{source}: empty training or test split; pass --test or raise --test-fraction")


def load_tagging_split(
    data: str, test: str | None = None, test_fraction: float = 0.1, on_error: OnError = "raise"
) -> tuple[TokenClassificationData, TokenClassificationData]:
    """Tagged training and test sentences: CoNLL / JSONL files or ``peoples-daily-ner[:split]`` (BIO).

    Without ``test``, an asset uses its test split and a file is split by sentence-text hash.
    """
    asset = parse_asset(data, TAGGING_ASSETS, "train")
    if asset is not None:
        train = TAGGING_ASSETS[asset[0]](asset[1])
        test = test or f"{asset[0]}:test"
    else:
        train = load_token_classification(data, on_error=on_error)
        if test is None:
            keep = [assign_split("".join(e.tokens), 0.0, test_fraction) == "test" for e in train.examples]
            parts = [
                TokenClassificationData(
                    [e for e, k in zip(train.examples, keep) if k == wanted],
                    train.label_names,
                    train.scheme,
                    f"{data}:{name}",
                    {**train.info, "split": f"{name}: hash of text"},
                )
                for name, wanted in (("train", False), ("test", True))
            ]
            if not parts[0].examples or not parts[1].examples:
                raise DataError(f"{data}: empty training or test split; pass --test or raise --test-fraction")
            return parts[0], parts[1]
    test_asset = parse_asset(test, TAGGING_ASSETS, "test")
    test_set = (
        TAGGING_ASSETS[test_asset[0]](test_asset[1])
        if test_asset is not None
        else load_token_classification(test, scheme=train.scheme, on_error=on_error)
    )
    return train, test_set


def load_text_lines(source: str, text_column: str | None = None, on_error: OnError = "raise") -> list[str]:
    """Non-empty texts of a .txt / .jsonl / .csv file or corpus asset (``web-bible``, ``peoples-daily``...)."""
    texts = [t.strip() for t in iter_texts([source], text_column, on_error) if t.strip()]
    if not texts:
        raise DataError(f"{source}: no text")
    return texts
