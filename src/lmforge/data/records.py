"""Structured records for the task loaders: CSV / TSV / JSONL files (each optionally ``.gz``).

:func:`iter_records` yields ``(line_number, record)`` with ``record`` a dict (CSV/TSV: header ->
cell text; JSONL: the parsed object), so that every loader can name ``file:line`` in its errors.
A TSV has no quoting (a ``"`` is an ordinary character), as in GLUE-style files; a CSV follows
RFC 4180 and may hold quoted newlines (the line number is the record's first line).

Example:
    >>> errors = ErrorLog("skip")  # doctest: +SKIP
    >>> for line, record in iter_records("train.csv", errors): ...  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmforge.data.readers import ErrorLog, decoded_lines, json_objects
from lmforge.errors import DataError

__all__ = ["RECORD_FORMATS", "iter_records", "record_format"]

RECORD_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".ndjson": "jsonl",
}


def record_format(path: str | Path) -> tuple[str, bool]:
    """``(format, gzip-compressed)`` of a records file from its suffixes (``train.tsv.gz`` -> tsv, True).

    Raises:
        DataError: the suffix is none of ``.csv``, ``.tsv``, ``.jsonl`` (``.json``, ``.ndjson``).
    """
    suffixes = [s.lower() for s in Path(path).suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    if compressed:
        suffixes = suffixes[:-1]
    ext = suffixes[-1] if suffixes else ""
    if ext not in RECORD_FORMATS:
        raise DataError(
            f"{path}: unknown data format {ext or '(no suffix)'!r}; use .csv, .tsv or .jsonl (optionally .gz)"
        )
    return RECORD_FORMATS[ext], compressed


def _table(
    lines: Iterator[tuple[int, str]], path: Path, errors: ErrorLog, delimiter: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    consumed = [0]

    def tracked() -> Iterator[str]:
        for number, line in lines:
            consumed[0] = number
            yield line

    if delimiter == "\t":
        reader = csv.reader(tracked(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(tracked())
    try:
        header = next(reader, None)
        if header is None:
            return
        if len(set(header)) != len(header):
            raise DataError(f"{path}:{consumed[0]}: the header {header} repeats a column name")
        while True:
            start = consumed[0] + 1
            row = next(reader, None)
            if row is None:
                return
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                errors.bad(path, start, f"{len(row)} fields, but the header has {len(header)} ({header})")
                continue
            yield start, dict(zip(header, row))
    except csv.Error as error:
        raise DataError(f"{path}:{consumed[0]}: malformed CSV ({error})") from error


def iter_records(
    path: str | Path, errors: ErrorLog, *, limit: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every record of a CSV / TSV / JSONL file.

    Args:
        path: the file; its suffix decides the format (see :func:`record_format`).
        errors: what to do with undecodable or malformed records (raise or count and skip).
        limit: stop after this many records (``None``: all).

    Raises:
        DataError: missing or unreadable file, unknown format, malformed record (with ``raise``).
    """
    path = Path(path)
    fmt, compressed = record_format(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener: Callable[..., Any] = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            lines = decoded_lines(stream, path, errors, keep_ends=True)
            if fmt == "jsonl":
                records = json_objects(lines, path, errors)
            else:
                records = _table(lines, path, errors, "\t" if fmt == "tsv" else ",")
            for count, item in enumerate(records, start=1):
                yield item
                if limit is not None and count >= limit:
                    return
    except (OSError, EOFError) as error:  # gzip raises BadGzipFile (an OSError) / EOFError when truncated
        raise DataError(f"{path}: cannot read ({error})") from error
