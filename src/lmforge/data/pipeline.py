"""Corpus -> token data: read, clean, filter, deduplicate, split, tokenize in parallel, write memmaps.

The result is read by :class:`lmforge.data.TokenDataset`; its layout is described there. Running
again on the same inputs, tokenizer and settings finds the manifest up to date and writes nothing.
A failure at any point leaves the previous data (or nothing): files are written into a staging
folder, the old manifest is removed, the files renamed into place and the manifest written last.

Example:
    >>> tokenizer = Tokenizer.from_dir("runs/tok")  # doctest: +SKIP
    >>> report = prepare(["web-bible"], tokenizer, "data/bible", workers=2)  # doctest: +SKIP
    >>> report["splits"]["train"]["num_tokens"]  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from lmforge.data.cache import file_sha256
from lmforge.data.clean import Deduplicator, clean_text, validation_bucket
from lmforge.data.dataset import FORMAT_NAME, FORMAT_VERSION, SPLITS, split_files, token_dtype
from lmforge.data.readers import ErrorLog, OnError, Source, read_source, resolve_inputs
from lmforge.data.segment import WordSegmentation, init_worker, tokenize_chunk, warm_up
from lmforge.errors import DataError
from lmforge.fileio import atomic_write_text, check_output_dir

__all__ = ["PrepareSettings", "prepare"]

_TOKENIZER_DIR = "tokenizer"
# Documents per task sent to a worker: large enough to amortise pickling, small enough to stream.
_CHUNK_DOCUMENTS = 512


@dataclass(frozen=True)
class PrepareSettings:
    """Everything besides inputs and tokenizer that decides the output (part of the manifest check).

    Attributes:
        text_column: field (JSONL) or column (CSV) holding the text; ``None`` means ``"text"``.
        validation_fraction: share of documents (by text hash) in the validation split.
        word_segmentation: ``"none"``; ``"whitespace"`` (words as the tokenizer's pre-tokenizer
            splits them: WordPiece ``##`` pieces continue a word); ``"jieba"`` (Chinese words).
        on_error: ``"raise"`` on the first bad record, or ``"skip"`` and count it.
        min_chars: documents shorter than this (after cleaning) are dropped.
        max_chars: documents longer than this are dropped; ``None`` keeps all.
    """

    text_column: str | None = None
    validation_fraction: float = 0.01
    word_segmentation: WordSegmentation = "none"
    on_error: OnError = "raise"
    min_chars: int = 1
    max_chars: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise DataError(f"validation_fraction={self.validation_fraction}: must be in [0, 1)")
        if self.word_segmentation not in ("none", "whitespace", "jieba"):
            raise DataError(f"word_segmentation={self.word_segmentation!r}: use none, whitespace or jieba")
        if self.min_chars < 0 or (self.max_chars is not None and self.max_chars < max(self.min_chars, 1)):
            raise DataError(f"min_chars={self.min_chars}, max_chars={self.max_chars}: need 0 <= min <= max")


def _dir_sha256(directory: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(file.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


class TokenizerLike(Protocol):
    """What :func:`prepare` needs of a tokenizer; :class:`lmforge.tokenizers.Tokenizer` has it.

    The data stage comes before ``lmforge.tokenizers`` in the one-way flow, so it takes the
    tokenizer object from its caller instead of importing the class.
    """

    backend: Any  # a ``tokenizers.Tokenizer``
    special_tokens: dict[str, str]

    @property
    def vocab_size(self) -> int: ...

    def save(self, directory: str | Path) -> Any: ...


def _special_token_ids(tokenizer: TokenizerLike) -> dict[str, Any]:
    roles = {role: tokenizer.backend.token_to_id(token) for role, token in tokenizer.special_tokens.items()}
    added = {
        token.content: int(index)
        for index, token in sorted(tokenizer.backend.get_added_tokens_decoder().items())
        if token.special
    }
    sentinels: list[int] = []
    while f"<extra_id_{len(sentinels)}>" in added:
        sentinels.append(added[f"<extra_id_{len(sentinels)}>"])
    return {
        "special_tokens": {role: index for role, index in roles.items() if index is not None},
        "special_token_strings": dict(tokenizer.special_tokens),
        "added_special_tokens": added,
        "sentinel_token_ids": sentinels,
    }


def _intact(out: Path, manifest: dict[str, Any]) -> bool:
    """Every file the manifest names exists with the size it says."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    for split, info in manifest["splits"].items():
        files = split_files(split)
        sizes = {"tokens": info["num_tokens"] * itemsize}
        if info.get("has_word_starts"):
            sizes["words"] = info["num_tokens"]
        for kind, size in sizes.items():
            path = out / files[kind]
            if size and (not path.is_file() or path.stat().st_size != size):
                return False
        if not all((out / files[kind]).is_file() for kind in ("offsets", "sources")):
            return False
    return (out / manifest["tokenizer_dir"]).is_dir()


def _documents(
    sources: list[Source], settings: PrepareSettings, errors: ErrorLog, counts: collections.Counter[str]
) -> Iterator[tuple[str, int, int]]:
    """Clean, filter and deduplicate: yields ``(text, source_id, split_index)``."""
    dedup = Deduplicator()
    for source_id, source in enumerate(sources):
        records = 0
        for _, raw in read_source(source, errors):
            records += 1
            text = clean_text(raw)
            if len(text) < max(settings.min_chars, 1):
                counts["removed_short" if text else "removed_empty"] += 1
                continue
            if settings.max_chars is not None and len(text) > settings.max_chars:
                counts["removed_long"] += 1
                continue
            if not dedup.is_new(text):
                continue
            split = int(validation_bucket(text) < settings.validation_fraction)
            yield text, source_id, split
        counts["records_read"] += records
        if records == 0:
            errors.bad(source.path, None, "no records (empty file)")
        counts["duplicates_exact"] = dedup.exact
        counts["duplicates_normalized"] = dedup.normalized


def _chunks(documents: Iterator[tuple[str, int, int]], size: int) -> Iterator[list[tuple[str, int, int]]]:
    chunk: list[tuple[str, int, int]] = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _tokenized(
    chunks: Iterator[list[tuple[str, int, int]]],
    tokenizer_dir: Path,
    segmentation: str,
    dtype: str,
    workers: int,
) -> Iterator[tuple[list[tuple[str, int, int]], tuple[np.ndarray, np.ndarray, np.ndarray | None]]]:
    """Tokenize chunks in order; with ``workers > 1`` in a process pool, at most ``2 * workers`` in flight."""
    warm_up(segmentation)
    if workers <= 1:  # in process: the tokenizers library still encodes a batch on all cores
        for chunk in chunks:
            yield chunk, tokenize_chunk([text for text, _, _ in chunk], tokenizer_dir, segmentation, dtype)
        return
    # fork starts workers in milliseconds; spawn would re-import torch in each one.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool: Pool = multiprocessing.get_context(method).Pool(workers, initializer=init_worker)
    try:
        pending: collections.deque[Any] = collections.deque()
        for chunk in chunks:
            args = ([text for text, _, _ in chunk], tokenizer_dir, segmentation, dtype)
            pending.append((chunk, pool.apply_async(tokenize_chunk, args)))
            if len(pending) >= 2 * workers:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _stage(
    staging: Path,
    sources: list[Source],
    settings: PrepareSettings,
    dtype: str,
    workers: int,
    errors: ErrorLog,
    counts: collections.Counter[str],
) -> dict[str, dict[str, Any]]:
    """Write every split's files into ``staging``; returns per-split counts."""
    segmented = settings.word_segmentation != "none"
    handles: dict[str, dict[str, IO[bytes]]] = {split: {} for split in SPLITS}
    offsets: dict[str, list[np.ndarray]] = {split: [np.zeros(1, np.int64)] for split in SPLITS}
    source_ids: dict[str, list[int]] = {split: [] for split in SPLITS}
    totals = dict.fromkeys(SPLITS, 0)
    with contextlib.ExitStack() as stack:
        for split in SPLITS:
            files = split_files(split)
            for kind in ("tokens", "words") if segmented else ("tokens",):
                handles[split][kind] = stack.enter_context(open(staging / files[kind], "wb"))
        documents = _documents(sources, settings, errors, counts)
        for chunk, (ids, lengths, words) in _tokenized(
            _chunks(documents, _CHUNK_DOCUMENTS),
            staging / _TOKENIZER_DIR,
            settings.word_segmentation,
            dtype,
            workers,
        ):
            splits = np.array([split for _, _, split in chunk])
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for index, split in enumerate(SPLITS):
                chosen = np.flatnonzero(splits == index)
                if len(chosen) == 0:
                    continue
                pieces = [slice(starts[i], starts[i + 1]) for i in chosen]
                handles[split]["tokens"].write(np.concatenate([ids[p] for p in pieces]).tobytes())
                if words is not None:
                    handles[split]["words"].write(np.concatenate([words[p] for p in pieces]).tobytes())
                offsets[split].append(totals[split] + np.cumsum(lengths[chosen]))
                totals[split] += int(lengths[chosen].sum())
                source_ids[split].extend(chunk[i][1] for i in chosen)
    result = {}
    for split in SPLITS:
        files = split_files(split)
        np.save(staging / files["offsets"], np.concatenate(offsets[split]).astype(np.int64))
        np.save(staging / files["sources"], np.asarray(source_ids[split], dtype=np.int32))
        result[split] = {
            "num_documents": len(source_ids[split]),
            "num_tokens": totals[split],
            "has_word_starts": segmented,
            "files": {k: v for k, v in files.items() if segmented or k != "words"},
        }
    return result


def _publish(staging: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Swap the staged files in: old manifest out first, so a crash never pairs it with new files."""
    (out / "manifest.json").unlink(missing_ok=True)
    for split in SPLITS:
        (out / split_files(split)["words"]).unlink(missing_ok=True)
    old_tokenizer = out / _TOKENIZER_DIR
    if old_tokenizer.exists():
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=out))
        os.replace(old_tokenizer, trash / _TOKENIZER_DIR)
        shutil.rmtree(trash)
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def prepare(
    inputs: list[str],
    tokenizer: TokenizerLike,
    out: str | Path,
    *,
    text_column: str | None = None,
    validation_fraction: float = 0.01,
    workers: int | None = None,
    word_segmentation: WordSegmentation = "none",
    on_error: OnError = "raise",
    min_chars: int = 1,
    max_chars: int | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Turn text files / corpus assets into token data for pretraining.

    Args:
        inputs: files (``.txt`` one document a line, ``.jsonl``, ``.csv``, each optionally ``.gz``)
            or corpus assets (``web-bible``, ``peoples-daily``, ``zh-sentiment``, ``kougo-bible``).
        tokenizer: a :class:`lmforge.tokenizers.Tokenizer` (e.g. ``Tokenizer.from_dir(path)``).
        out: output directory (created; an existing one is replaced unless up to date).
        text_column: field / column of structured files (default ``"text"``).
        validation_fraction: share of documents, chosen by text hash, for ``validation``.
        workers: tokenizer processes; default ``min(4, cpu_count)``.
        word_segmentation: ``"none"``, ``"whitespace"`` or ``"jieba"``; anything but ``"none"``
            writes per-token word starts for whole-word masking.
        on_error: ``"raise"`` at the first bad record (file and line in the message) or ``"skip"``.
        min_chars: drop documents shorter than this after cleaning.
        max_chars: drop documents longer than this (``None``: no limit).
        force: rewrite even when the manifest says the data is up to date.

    Returns:
        The manifest (see :class:`~lmforge.data.TokenDataset`) plus ``"up_to_date"``: True when
        nothing was written because an identical run had already produced the data.

    Raises:
        DataError: bad input with ``on_error="raise"``, or no document left after filtering.
    """
    started = time.perf_counter()
    settings = PrepareSettings(
        text_column, validation_fraction, word_segmentation, on_error, min_chars, max_chars
    )
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    if workers < 1:
        raise DataError(f"--workers (workers) = {workers}: must be >= 1 (or unset for min(4, CPUs))")
    out = check_output_dir(out)
    sources = resolve_inputs(list(inputs), text_column)
    source_info = [
        {
            "id": index,
            "input": source.input,
            "path": str(source.path),
            "sha256": file_sha256(source.path),
            "bytes": source.path.stat().st_size,
            "asset": source.asset,
        }
        for index, source in enumerate(sources)
    ]
    loaded = tokenizer
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out))
    try:
        loaded.save(staging / _TOKENIZER_DIR)
        tokenizer_hash = _dir_sha256(staging / _TOKENIZER_DIR)
        fingerprint = hashlib.sha256(
            json.dumps(
                {
                    "format_version": FORMAT_VERSION,
                    "sources": [(s["input"], s["sha256"]) for s in source_info],
                    "tokenizer": tokenizer_hash,
                    "settings": asdict(settings),
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        previous = _read_manifest(out)
        if not force and previous and previous.get("fingerprint") == fingerprint and _intact(out, previous):
            return {**previous, "up_to_date": True}

        vocab_size = loaded.vocab_size
        dtype = token_dtype(vocab_size)
        errors = ErrorLog(on_error)
        counts: collections.Counter[str] = collections.Counter()
        splits = _stage(staging, sources, settings, dtype, workers, errors, counts)
        documents = sum(info["num_documents"] for info in splits.values())
        if documents == 0:
            raise DataError(
                f"empty corpus: no document left from {', '.join(inputs)} "
                f"({counts['records_read']} records read, {errors.skipped} skipped as bad, "
                f"{counts['removed_empty'] + counts['removed_short']} too short, {counts['removed_long']} too long, "
                f"{counts['duplicates_exact'] + counts['duplicates_normalized']} duplicates); check the inputs "
                "and --text-column"
            )
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "vocab_size": vocab_size,
            "dtype": dtype,
            **_special_token_ids(loaded),
            "tokenizer_dir": _TOKENIZER_DIR,
            "tokenizer_hash": tokenizer_hash,
            "num_documents": documents,
            "num_tokens": sum(info["num_tokens"] for info in splits.values()),
            "splits": splits,
            "sources": source_info,
            "asset_versions": {s.asset["name"]: s.asset["version"] for s in sources if s.asset},
            "settings": asdict(settings),
            "report": {
                "records_read": counts["records_read"],
                "skipped_bad_records": errors.skipped,
                "skipped_examples": errors.messages,
                "removed_empty": counts["removed_empty"],
                "removed_short": counts["removed_short"],
                "removed_long": counts["removed_long"],
                "duplicates_exact": counts["duplicates_exact"],
                "duplicates_normalized": counts["duplicates_normalized"],
                "documents": documents,
                "workers": workers,
                "seconds": round(time.perf_counter() - started, 3),
            },
        }
        _publish(staging, out, manifest)
        return {**manifest, "up_to_date": False}
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if (
            created and out.is_dir() and not any(out.iterdir())
        ):  # a failed first run leaves no empty folder behind
            out.rmdir()


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME else None
