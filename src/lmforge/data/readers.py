"""Read raw text records from files (.txt / .jsonl / .csv, optionally .gz) and bundled corpora.

Every reader yields ``(line_number, text)`` so that errors and skips can name the file and line.
Bad input raises :class:`~lmforge.errors.DataError` naming the file and line, or, with
``on_error="skip"``, is counted in an :class:`ErrorLog` and left out.

Example:
    >>> sources = resolve_inputs(["web-bible", "notes.txt"])  # doctest: +SKIP
    >>> for line, text in read_source(sources[0], ErrorLog("raise")): ...  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from lmforge.assets import asset_path, get_asset
from lmforge.errors import DataError

__all__ = [
    "ASSET_CORPORA",
    "ErrorLog",
    "OnError",
    "Source",
    "iter_texts",
    "read_source",
    "resolve_inputs",
    "strip_bible_footnotes",
    "strip_pos_tags",
]

OnError = Literal["raise", "skip"]
_MAX_LOGGED = 20

# `[中国/ns  政府/n]nt`: a bracketed compound (one named entity) whose inner words carry their own tags.
_COMPOUND_CLOSE = re.compile(r"\][a-zA-Z]+$")
_FOOTNOTE = re.compile(r"\{[^{}]*\}")
_KOUGO_PREFIX = re.compile(r"^\S+ \d+:\d+ \S+ \d+:\d+ ")


def strip_pos_tags(line: str) -> list[str]:
    """Words of a People's Daily line ``迈向/v  充满/v  [中国/ns 政府/n]nt``, tags and brackets removed."""
    words = []
    for item in line.split():
        item = _COMPOUND_CLOSE.sub("", item).lstrip("[")
        word = item.rsplit("/", 1)[0] if "/" in item else item
        if word:
            words.append(word)
    return words


def strip_bible_footnotes(text: str) -> str:
    """Remove the World English Bible's ``{...}`` translator footnotes (and the space they leave)."""
    return re.sub(r" {2,}", " ", _FOOTNOTE.sub("", text)).strip()


@dataclass
class ErrorLog:
    """What to do with bad records, and how many were skipped (with the first few messages)."""

    on_error: OnError = "raise"
    skipped: int = 0
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise DataError(f"on_error={self.on_error!r}: use 'raise' or 'skip'")

    def bad(self, path: str | Path, line: int | None, problem: str) -> None:
        """Raise for a bad record, or count it when skipping."""
        where = f"{path}:{line}" if line is not None else str(path)
        message = f"{where}: {problem}"
        if self.on_error == "raise":
            raise DataError(f"{message}. Fix the input, or pass --on-error skip to leave such records out.")
        self.skipped += 1
        if len(self.messages) < _MAX_LOGGED:
            self.messages.append(message)

    def require(self, path: str | Path, found: Sized, what: str) -> None:
        """Refuse a file that gave nothing to use: ``no {what}`` (e.g. ``"texts"``), and how many
        bad records were skipped."""
        if not found:
            raise DataError(f"{path}: no {what} ({self.skipped} bad records skipped)")

    def info(self, path: str | Path, **counts: Any) -> dict[str, Any]:
        """The ``info`` of a loaded file: its path, the loader's ``counts``, the records skipped and
        (when there are some) the first messages."""
        info: dict[str, Any] = {"file": str(path), **counts, "skipped": self.skipped}
        if self.messages:
            info["skipped_examples"] = self.messages
        return info


@dataclass(frozen=True)
class Source:
    """One input file: where it is, how to read it and which asset (if any) it belongs to.

    Attributes:
        input: what the user passed (a path or an asset name).
        path: the file read.
        format: ``"txt"``, ``"jsonl"`` or ``"csv"`` (after any ``.gz``).
        compressed: gzip-compressed.
        text_column: field (JSONL) or column (CSV) holding the text; a CSV column may be an index.
        corpus: name of the built-in corpus cleaner (``"peoples-daily"``, ...), or ``None``.
        asset: ``{"name", "package", "version"}`` of a bundled asset, else ``None``.
    """

    input: str
    path: Path
    format: str
    compressed: bool = False
    text_column: str | None = None
    corpus: str | None = None
    asset: dict[str, str] | None = None


def _format_of(path: Path) -> tuple[str, bool]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}.get(
        ext, "txt"
    ), compressed


# Built-in corpora: which files of the asset to read, their format and text column.
ASSET_CORPORA: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "peoples-daily": (("", "txt", None),),
    "zh-sentiment": (("pos.txt", "txt", None), ("neg.txt", "txt", None)),
    "web-bible": (("", "csv", "4"),),
    "kougo-bible": (("", "txt", None),),
}


def resolve_inputs(inputs: list[str], text_column: str | None = None) -> list[Source]:
    """Turn file paths and asset names into :class:`Source` objects, one per file.

    Args:
        inputs: paths (``.txt``, ``.jsonl``, ``.csv``, any of them ``.gz``) or corpus asset names
            (``peoples-daily``, ``zh-sentiment``, ``web-bible``, ``kougo-bible``).
        text_column: field / column of structured files; default ``"text"``.

    Raises:
        DataError: a path does not exist and is no corpus asset.
        AssetMissingError: an asset is not installed (the message has the install command).
    """
    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            fmt, compressed = _format_of(path)
            sources.append(Source(item, path, fmt, compressed, text_column))
        elif item in ASSET_CORPORA and not path.exists():
            asset = get_asset(item)
            main = asset_path(item)
            info = {"name": asset.name, "package": asset.package, "version": asset.version}
            for relative, fmt, column in ASSET_CORPORA[item]:
                file = main / relative if relative else main
                sources.append(Source(item, file, fmt, file.suffix == ".gz", column, item, info))
        elif path.is_dir():
            raise DataError(f"{item}: is a directory; pass the files in it (e.g. {item}/*.txt)")
        else:
            raise DataError(
                f"{item}: no such file, and not a corpus asset ({', '.join(sorted(ASSET_CORPORA))})"
            )
    return sources


def decoded_lines(
    stream: IO[bytes], path: Path, errors: ErrorLog, keep_ends: bool = False
) -> Iterator[tuple[int, str]]:
    """Lines decoded one at a time so that an undecodable byte names its line (BOM dropped).

    ``keep_ends`` keeps the line ending, for CSV where a quoted field may span lines.
    """
    for number, raw in enumerate(stream, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            errors.bad(
                path, number, f"not valid UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1})"
            )
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text if keep_ends else text.rstrip("\r\n")


def json_objects(
    lines: Iterator[tuple[int, str]], path: Path, errors: ErrorLog
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each JSON Lines record; a bad line goes to ``errors``."""
    for number, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            errors.bad(
                path, number, f"not valid JSON ({error.msg}); a .jsonl file holds one JSON object per line"
            )
            continue
        if not isinstance(record, dict):
            errors.bad(path, number, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield number, record


def _read_jsonl(
    lines: Iterator[tuple[int, str]], source: Source, errors: ErrorLog
) -> Iterator[tuple[int, str]]:
    column = source.text_column or "text"
    for number, record in json_objects(lines, source.path, errors):
        if column not in record:
            errors.bad(
                source.path,
                number,
                f"no field {column!r} (found {sorted(record)}); choose one with --text-column",
            )
            continue
        value = record[column]
        if not isinstance(value, str):
            errors.bad(source.path, number, f"field {column!r} is {type(value).__name__}, not text")
            continue
        yield number, value


def _read_csv(
    lines: Iterator[tuple[int, str]], source: Source, errors: ErrorLog
) -> Iterator[tuple[int, str]]:
    column = source.text_column or "text"
    current = [0]

    def tracked() -> Iterator[str]:
        for number, line in lines:
            current[0] = number
            yield line

    reader = csv.reader(tracked())
    header = next(reader, None)
    if header is None:
        return
    if column in header:
        index = header.index(column)
    elif column.isdigit() and int(column) < len(header):
        index = int(column)
    else:
        raise DataError(
            f"{source.path}:1: no column {column!r} in the header {header}; choose one with --text-column "
            "(a name or a 0-based index)"
        )
    try:
        for row in reader:
            if not row:
                continue
            if index >= len(row):
                errors.bad(source.path, current[0], f"{len(row)} fields, no column {column!r}")
                continue
            yield current[0], row[index]
    except csv.Error as error:
        raise DataError(f"{source.path}:{current[0]}: malformed CSV ({error})") from error


_CORPUS_CLEANERS: dict[str, Callable[[str], str]] = {
    "peoples-daily": lambda line: "".join(strip_pos_tags(line)),
    "web-bible": strip_bible_footnotes,
    "kougo-bible": lambda line: _KOUGO_PREFIX.sub("", line) if _KOUGO_PREFIX.match(line) else "",
}


def read_source(source: Source, errors: ErrorLog) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every record of one source (raw, before cleaning).

    Raises:
        DataError: unreadable file, bad record (with ``on_error="raise"``), or missing column.
    """
    opener: Callable[..., Any] = gzip.open if source.compressed else open
    try:
        with opener(source.path, "rb") as stream:
            lines = decoded_lines(stream, source.path, errors)
            if source.format == "jsonl":
                records = _read_jsonl(lines, source, errors)
            elif source.format == "csv":
                records = _read_csv(lines, source, errors)
            else:
                records = lines
            cleaner = _CORPUS_CLEANERS.get(source.corpus or "")
            for number, text in records:
                yield number, cleaner(text) if cleaner else text
    except (OSError, EOFError) as error:  # gzip raises BadGzipFile (an OSError) / EOFError when truncated
        raise DataError(f"{source.path}: cannot read ({error})") from error


def iter_texts(
    inputs: list[str], text_column: str | None = None, on_error: OnError = "raise"
) -> Iterator[str]:
    """Every non-empty raw text of the inputs, in order (for tokenizer training)."""
    errors = ErrorLog(on_error)
    for source in resolve_inputs(inputs, text_column):
        for _, text in read_source(source, errors):
            if text.strip():
                yield text
