"""Read token data written by :func:`lmforge.data.prepare`: memmapped documents of one split.

Layout of a prepared directory (one split shown; ``validation`` is the same)::

    manifest.json          vocab size, dtype, special-token ids, counts, sources, settings
    tokenizer/             copy of the tokenizer the ids come from (load it with
                           lmforge.tokenizers.Tokenizer.from_dir(dataset.tokenizer_dir))
    train.tokens.bin       all documents concatenated, raw uint16 / uint32, no separators
    train.offsets.npy      int64 (num_documents + 1,): document i = tokens[offsets[i]:offsets[i+1]]
    train.sources.npy      int32 (num_documents,): index into manifest["sources"]
    train.words.bin        uint8 (num_tokens,), 1 where a whole word begins (only with word segmentation)

Example:
    >>> dataset = TokenDataset("data/bible", split="train")  # doctest: +SKIP
    >>> first = dataset.document(0)  # np.ndarray of token ids
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.errors import LmforgeError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "SPLITS", "TokenDataset", "split_files", "token_dtype"]

FORMAT_NAME = "lmforge-token-data"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")


def token_dtype(vocab_size: int) -> str:
    """``"uint16"`` when every id fits in 16 bits (half the disk and page cache), else ``"uint32"``."""
    return "uint16" if vocab_size <= 2**16 else "uint32"


def split_files(split: str) -> dict[str, str]:
    """File names of one split inside a prepared directory."""
    return {
        "tokens": f"{split}.tokens.bin",
        "offsets": f"{split}.offsets.npy",
        "sources": f"{split}.sources.npy",
        "words": f"{split}.words.bin",
    }


def _memmap(path: Path, dtype: np.dtype, length: int) -> np.ndarray:
    if length == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    expected = length * dtype.itemsize
    if not path.is_file() or path.stat().st_size != expected:
        size = path.stat().st_size if path.is_file() else "missing"
        raise LmforgeError(
            f"{path}: expected {expected} bytes ({length} x {dtype}), found {size}; "
            "the token data is incomplete: re-run `lmforge data prepare`"
        )
    return np.memmap(path, dtype=dtype, mode="r", shape=(length,))


class TokenDataset:
    """One split of a prepared token-data directory, memory-mapped (nothing is read eagerly).

    Args:
        directory: the ``--out`` directory of ``lmforge data prepare``.
        split: ``"train"`` or ``"validation"``.

    Attributes:
        manifest: the parsed ``manifest.json`` (``vocab_size``, ``dtype``, ``special_tokens``
            as ``{role: id}``, ``tokenizer_dir`` relative to ``directory``, ``splits`` with counts).
        offsets: int64 ``(num_documents + 1,)``; document ``i`` is ``tokens[offsets[i]:offsets[i+1]]``.
        tokens: ``(num_tokens,)`` memmap of every document of the split, concatenated.
        source_ids: int32 ``(num_documents,)``: which input (index into ``manifest["sources"]``)
            each document came from; consecutive documents of one source are consecutive records.

    Raises:
        LmforgeError: the directory has no manifest, another format, an unknown split, or
            truncated files.
    """

    def __init__(self, directory: str | Path, split: str = "train") -> None:
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        if not manifest_path.is_file():
            raise LmforgeError(
                f"{self.directory}: no manifest.json; create token data with `lmforge data prepare "
                f"--input ... --tokenizer ... --out {self.directory}`"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise LmforgeError(f"{manifest_path}: not valid JSON ({error}); re-run prepare") from error
        if self.manifest.get("format") != FORMAT_NAME:
            raise LmforgeError(
                f"{manifest_path}: not lmforge token data (format={self.manifest.get('format')!r})"
            )
        if split not in self.manifest.get("splits", {}):
            raise LmforgeError(
                f"{self.directory}: no split {split!r}; available: {sorted(self.manifest['splits'])}"
            )
        self.split = split
        info = self.manifest["splits"][split]
        files = split_files(split)
        self.num_documents: int = int(info["num_documents"])
        self.num_tokens: int = int(info["num_tokens"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.tokens: np.ndarray = _memmap(self.directory / files["tokens"], self.dtype, self.num_tokens)
        self.offsets: np.ndarray = np.load(self.directory / files["offsets"])
        self.source_ids: np.ndarray = np.load(self.directory / files["sources"])
        if len(self.offsets) != self.num_documents + 1 or len(self.source_ids) != self.num_documents:
            raise LmforgeError(
                f"{self.directory}: {split} offsets/sources do not match the manifest; re-run prepare"
            )
        self._words: np.ndarray | None = None
        if info.get("has_word_starts"):
            self._words = _memmap(self.directory / files["words"], np.dtype(np.uint8), self.num_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (embedding rows)."""
        return int(self.manifest["vocab_size"])

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special-token role -> id, e.g. ``{"pad_token": 0, "mask_token": 4}``."""
        return dict(self.manifest["special_tokens"])

    @property
    def tokenizer_dir(self) -> Path:
        """The copy of the tokenizer saved next to the data."""
        return self.directory / self.manifest["tokenizer_dir"]

    @property
    def word_flags(self) -> np.ndarray | None:
        """uint8 ``(num_tokens,)`` memmap, 1 where a whole word begins (all documents, as ``tokens``),
        or ``None`` without word segmentation."""
        return self._words

    def __len__(self) -> int:
        return self.num_documents

    def __repr__(self) -> str:
        return (
            f"TokenDataset({str(self.directory)!r}, split={self.split!r}, "
            f"documents={self.num_documents}, tokens={self.num_tokens})"
        )

    def _check_index(self, index: int) -> int:
        if not -self.num_documents <= index < self.num_documents:
            raise IndexError(f"document {index} out of range for {self.num_documents} documents")
        return index % self.num_documents

    def document(self, index: int) -> np.ndarray:
        """Token ids of document ``index``, shape ``(length,)`` (a view into the memmap)."""
        index = self._check_index(index)
        return self.tokens[self.offsets[index] : self.offsets[index + 1]]

    def word_starts(self, index: int) -> np.ndarray | None:
        """Bool ``(length,)``: True where a whole word begins, or ``None`` without word segmentation."""
        if self._words is None:
            return None
        index = self._check_index(index)
        return self._words[self.offsets[index] : self.offsets[index + 1]].astype(bool)
