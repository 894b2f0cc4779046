"""Deterministic task splits written once to a cache folder, with the asset versions and hashes.

A named task dataset (``zh-sentiment``, ``peoples-daily-ner``, ``bible-en-ja``) is built from its
source files, split by text hash, and written as one JSONL file per split under
``<cache>/tasks/<name>-<fingerprint>/`` next to a ``manifest.json`` that records the asset
(package, version), the SHA-256 of every source file, the settings, the count and SHA-256 of every
split file. The fingerprint covers the source hashes, the settings and the builder's version, so a
new asset version or other fractions give a new folder; a later load reads the files back after
checking their hashes against the manifest (a damaged file is rebuilt).

The cache folder is ``$LMFORGE_CACHE``, else ``$XDG_CACHE_HOME/lmforge``, else ``~/.cache/lmforge``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.data.clean import SPLIT_NAMES
from lmforge.fileio import atomic_write_text

__all__ = ["cache_root", "cached_splits", "file_sha256"]

_FORMAT = "lmforge-task-splits"
_HASH_CHUNK = 1 << 20

Records = dict[str, list[dict[str, Any]]]


def cache_root() -> Path:
    """``$LMFORGE_CACHE``, else ``$XDG_CACHE_HOME/lmforge``, else ``~/.cache/lmforge``."""
    if os.environ.get("LMFORGE_CACHE"):
        return Path(os.environ["LMFORGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmforge"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def _read_cached(folder: Path) -> tuple[Records, dict[str, Any]] | None:
    """The splits of a complete, undamaged cache folder, else ``None``."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        splits: Records = {}
        for split, info in manifest["splits"].items():
            data = (folder / info["file"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != info["sha256"]:
                return None
            splits[split] = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return splits, manifest


def cached_splits(
    name: str,
    *,
    sources: list[Path],
    asset: dict[str, Any],
    settings: dict[str, Any],
    builder_version: int,
    build: Callable[[], tuple[Records, dict[str, Any]]],
    use_cache: bool = True,
) -> tuple[Records, dict[str, Any]]:
    """Read a named dataset's splits from the cache, or build and write them there.

    Args:
        name: dataset name (folder prefix).
        sources: the files it is built from (hashed into the fingerprint and the manifest).
        asset: provenance, e.g. ``{"name", "package", "version"}``, or such dicts by asset name.
        settings: everything else that changes the result (fractions, options); JSON-ready.
        builder_version: bump when the building code changes its output.
        build: returns ``({split: [record, ...]}, stats)``; records are JSON-ready dicts.
        use_cache: False builds in memory and writes nothing.

    Returns:
        ``(splits, manifest)``; the manifest has ``asset``, ``sources`` (path, sha256, bytes),
        ``settings``, ``stats``, ``splits`` ({split: {file, count, sha256}}), ``folder`` and
        ``from_cache``.
    """
    source_info = [{"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size} for p in sources]
    key = json.dumps(
        {
            "name": name,
            "builder_version": builder_version,
            "sources": [s["sha256"] for s in source_info],
            "settings": settings,
        },
        sort_keys=True,
    )
    fingerprint = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    folder = cache_root() / "tasks" / f"{name}-{fingerprint}"
    if use_cache and (found := _read_cached(folder)) is not None:
        return found[0], {**found[1], "folder": str(folder), "from_cache": True}
    splits, stats = build()
    manifest: dict[str, Any] = {
        "format": _FORMAT,
        "name": name,
        "builder_version": builder_version,
        "fingerprint": fingerprint,
        "asset": asset,
        "sources": source_info,
        "settings": settings,
        "stats": stats,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {},
    }
    texts = {split: _jsonl(splits.get(split, [])) for split in SPLIT_NAMES}
    for split in SPLIT_NAMES:
        manifest["splits"][split] = {
            "file": f"{split}.jsonl",
            "count": len(splits.get(split, [])),
            "sha256": hashlib.sha256(texts[split].encode("utf-8")).hexdigest(),
        }
    if use_cache:
        try:  # the manifest goes last: a folder without one is never read
            for split in SPLIT_NAMES:
                atomic_write_text(folder / f"{split}.jsonl", texts[split])
            atomic_write_text(
                folder / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
            )
        except OSError:
            pass  # a read-only cache only costs rebuilding next time; the data itself is fine
    return {s: splits.get(s, []) for s in SPLIT_NAMES}, {
        **manifest,
        "folder": str(folder),
        "from_cache": False,
    }
