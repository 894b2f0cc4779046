"""Text cleaning, deduplication keys and the deterministic train / validation split.

Example:
    >>> clean_text("Caf\\u00e9&amp;<b>bar</b>\\x07  baz ")
    'Café&bar baz'
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

from lmforge.errors import DataError

__all__ = ["SPLIT_NAMES", "Deduplicator", "assign_split", "clean_text", "normalized_key", "validation_bucket"]

SPLIT_NAMES = ("train", "validation", "test")

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>|<!--.*?-->", re.DOTALL)
_ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{1,7}|#[xX][0-9A-Fa-f]{1,6});")
# Zero-width and soft-hyphen characters survive NFKC but change tokenization invisibly.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F; tab-like ones become spaces.
_SPACE_CONTROLS = dict.fromkeys(map(ord, "\t\r\v\f"), " ")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[^\S\n]+")
_NOT_WORD = re.compile(r"[\W_]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def clean_text(text: str) -> str:
    """Normalize one document: HTML remnants, NFKC, control characters, whitespace.

    Tags (``<br>``, ``<p class=...>``, comments) are removed and entities (``&amp;``) decoded; NFKC
    folds full-width forms (``１２`` -> ``12``); control characters other than newlines go;
    runs of spaces and tabs become one space and blank lines collapse to a single newline.
    """
    if "<" in text:
        text = _TAG.sub(" ", text)
    if "&" in text and _ENTITY.search(text):
        text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    text = _CONTROL.sub("", text.translate(_SPACE_CONTROLS))
    text = _SPACES.sub(" ", text)
    return _NEWLINES.sub("\n", text).strip()


def normalized_key(text: str) -> str:
    """What near-duplicates share: case-folded letters and digits only (punctuation and spaces dropped)."""
    return _NOT_WORD.sub("", text.casefold())


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class Deduplicator:
    """Remembers 16-byte hashes of the texts seen, exact and normalized, and counts the repeats.

    Attributes:
        exact: documents dropped because the same cleaned text came before.
        normalized: documents dropped because a text equal up to case, spaces and punctuation came before.
    """

    def __init__(self) -> None:
        self._exact: set[bytes] = set()
        self._normalized: set[bytes] = set()
        self.exact = 0
        self.normalized = 0

    def is_new(self, text: str) -> bool:
        """True the first time a text (up to normalization) is seen; counts the repeat otherwise."""
        exact = _digest(text)
        if exact in self._exact:
            self.exact += 1
            return False
        self._exact.add(exact)
        normalized = _digest(normalized_key(text))
        if normalized in self._normalized:
            self.normalized += 1
            return False
        self._normalized.add(normalized)
        return True


def validation_bucket(text: str) -> float:
    """A number in ``[0, 1)`` fixed by the text alone: the document goes to validation below the fraction.

    Hashing the text (not its position) keeps the split stable when inputs are reordered or extended.
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(text: str, validation_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """``"test"``, ``"validation"`` or ``"train"`` for a text, by :func:`validation_bucket`.

    Test takes the lowest buckets ``[0, test_fraction)``, validation the next ones. Because
    :func:`lmforge.data.prepare` sends ``bucket < validation_fraction`` to its validation split, a
    pretraining run on the same corpus with ``validation_fraction >= test_fraction`` never trains on
    a fine-tuning test text (callers hash the same :func:`clean_text` form).

    Raises:
        DataError: fractions outside ``[0, 1)`` or summing to 1 or more.
    """
    if not (0.0 <= validation_fraction < 1.0 and 0.0 <= test_fraction < 1.0) or (
        validation_fraction + test_fraction >= 1.0
    ):
        raise DataError(
            f"validation_fraction={validation_fraction}, test_fraction={test_fraction}: "
            "each must be in [0, 1) and their sum below 1"
        )
    bucket = validation_bucket(text)
    if bucket < test_fraction:
        return "test"
    if bucket < test_fraction + validation_fraction:
        return "validation"
    return "train"
