"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash mid-write leaves the old file (or nothing), never a truncated one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    return atomic_write(path, write)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return atomic_write(path, write)


def atomic_save_npz(path: str | Path, **arrays: Any) -> Path:
    """Write ``arrays`` to an ``.npz`` at ``path`` atomically (``np.load(path)`` reads them back)."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **arrays)

    return atomic_write(path, write)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves (before a rename publishes them)."""
    for path in sorted(root.rglob("*")) + [root]:
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for folder in [p for p in root.rglob("*") if p.is_dir()] + [root, root.parent]:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_dir(staging: str | Path, target: str | Path) -> Path:
    """Make the complete directory ``staging`` the directory ``target``, whatever was there.

    ``staging`` must be a sibling of ``target`` (same filesystem). The old ``target`` is renamed
    aside, ``staging`` renamed in, then the old one removed: nothing of the previous content
    survives, and a crash leaves either the previous directory (or, between the two renames, it
    under ``.<name>.old``) or the new one, never a mix of both.
    """
    import shutil

    staging, target = Path(staging), Path(target)
    fsync_tree(staging)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old.exists():
        shutil.rmtree(old)
    return target
