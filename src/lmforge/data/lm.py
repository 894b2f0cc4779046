"""Plain-text data for causal language-model fine-tuning (``--task lm``).

A ``.txt`` file (optionally ``.gz``) holds one text per line (blank lines are skipped); a CSV /
TSV / JSONL file holds one text per record in ``text_column``. Every token of a text is scored.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lmforge.data.readers import ErrorLog, OnError, decoded_lines
from lmforge.data.records import iter_records
from lmforge.errors import DataError

__all__ = ["LMData", "LMExample", "load_lm_texts"]


@dataclass(frozen=True)
class LMExample:
    """One text (``line``: where it is in the file)."""

    text: str
    line: int | None = None


@dataclass
class LMData:
    """Texts of one file."""

    examples: list[LMExample]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    def __len__(self) -> int:
        return len(self.examples)


def _is_text_file(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] == ".txt"


def load_lm_texts(
    path: str | Path,
    *,
    text_column: str = "text",
    on_error: OnError = "raise",
    limit: int | None = None,
) -> LMData:
    """Load texts from a ``.txt`` file (a text per line) or a CSV / TSV / JSONL file (``text_column``).

    Raises:
        DataError: missing file, a record without a text ``text_column`` (naming file:line, with
            ``on_error="raise"``), or no text at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    errors = ErrorLog(on_error)
    examples: list[LMExample] = []
    if _is_text_file(path):
        opener: Any = gzip.open if path.suffix.lower() == ".gz" else open
        try:
            with opener(path, "rb") as stream:
                handle: IO[bytes] = stream
                for number, line in decoded_lines(handle, path, errors):
                    if line.strip():
                        examples.append(LMExample(line, number))
                    if limit is not None and len(examples) >= limit:
                        break
        except (OSError, EOFError) as error:
            raise DataError(f"{path}: cannot read ({error})") from error
    else:
        for number, record in iter_records(path, errors, limit=limit):
            text = record.get(text_column)
            if not isinstance(text, str):
                errors.bad(
                    path,
                    number,
                    f"no text column {text_column!r} (found {sorted(record)}); pass --text-column",
                )
                continue
            if text.strip():
                examples.append(LMExample(text, number))
    errors.require(path, examples, "texts")
    return LMData(examples, str(path), errors.info(path))
