"""Atomic writes: a temp file (or directory) in the same folder, fsync, then rename over the target.

A crash mid-write leaves the old file (or nothing), never a truncated one; a directory written with
:func:`atomic_replace_dir` is the previous one or the new one, never a mix of the two.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, LmforgeError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def read_json_object(path: Path, error: type[LmforgeError] = LmforgeError) -> dict[str, Any]:
    """The JSON object in ``path``; invalid JSON or another JSON value raises ``error`` naming the
    file (and the line of a syntax error)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data


def default_permissions(path: str | Path) -> None:
    """Give ``path`` the mode a plain ``open`` would (0666 less the umask): ``mkstemp`` and some
    writers (safetensors) create files as 0600, which other users could not read."""
    os.chmod(path, 0o666 & ~_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        default_permissions(tmp_path)
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


def fsync_tree(root: str | Path) -> None:
    """fsync every file and directory under ``root`` (``root`` included), directories last, so
    that the names as well as the bytes are on disk before the tree is renamed into place."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(folder)


def fsync_dir(path: str | Path) -> None:
    """fsync a directory: makes the creation, removal and renaming of its entries durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _aside(target: Path) -> Path:
    """Where :func:`replace_dir` keeps the previous directory during the swap."""
    return target.with_name(f".{target.name}.old")


def interrupted_replace(target: str | Path) -> Path | None:
    """The previous directory an interrupted :func:`replace_dir` left beside a missing ``target``
    (a crash between its two renames), or None."""
    target = Path(target)
    aside = _aside(target)
    return aside if aside.is_dir() and not target.exists() else None


def _resolve_interrupted(target: Path) -> None:
    """Clean up after a crashed swap: a stale copy beside a complete ``target`` goes, a previous
    directory whose ``target`` is missing comes back (it is the only complete one)."""
    aside = _aside(target)
    if aside.is_dir():
        if target.exists():  # a crash after the swap, before the old copy was deleted
            shutil.rmtree(aside)
        else:  # a crash between the renames
            os.replace(aside, target)


def replace_dir(staging: str | Path, target: str | Path) -> Path:
    """Make the complete directory ``staging`` the directory ``target``, whatever was there.

    ``staging`` must be a sibling of ``target`` (same filesystem). Its files and directories are
    fsynced, the old ``target`` is renamed aside to ``.<name>.old``, ``staging`` renamed in, then
    the old one removed: nothing of the previous content survives, and a crash leaves either the
    previous directory (between the two renames: complete at ``.<name>.old``, see
    :func:`interrupted_replace`, which the next call on ``target`` puts back first) or the new one,
    never a mix of both. If a rename fails, the previous directory is put back and the error raised.

    Raises:
        LmforgeError: ``target`` exists and is not a directory.
    """
    staging, target = Path(staging), Path(target)
    _resolve_interrupted(target)
    if target.exists() and not target.is_dir():
        raise LmforgeError(f"{target}: exists and is not a directory; cannot put a directory there")
    fsync_tree(staging)
    aside = _aside(target)
    replacing = target.exists()
    try:
        if replacing:
            os.replace(target, aside)
        os.replace(staging, target)
        fsync_dir(target.parent)  # the new directory is in place before the old one goes
    except BaseException:
        if aside.is_dir() and not target.exists():
            os.replace(aside, target)
        raise
    if replacing:
        shutil.rmtree(aside)
        fsync_dir(target.parent)
    return target


def atomic_replace_dir(target: str | Path, build: Callable[[Path], None]) -> Path:
    """Replace the directory ``target`` with one ``build(tmp)`` fills, all at once.

    ``build`` writes into an empty temporary sibling directory, which :func:`replace_dir` then
    swaps in. If ``build`` raises, the temporary directory is removed and ``target`` is untouched
    (after putting back a previous directory an earlier crash left aside).

    Args:
        target: the directory to create or replace (its parent is created if missing).
        build: writes the new content into the directory it is given.

    Returns:
        ``target``.

    Raises:
        LmforgeError: ``target`` exists and is not a directory.
    """
    target = Path(os.path.abspath(target))  # "." has no name to put a sibling beside
    target.parent.mkdir(parents=True, exist_ok=True)
    _resolve_interrupted(target)
    if target.exists() and not target.is_dir():
        raise LmforgeError(f"{target}: exists and is not a directory; cannot put a directory there")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the directory the usual permissions
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def check_output_dir(path: str | Path, option: str = "--out") -> Path:
    """Refuse an output folder that cannot be one, before any work starts.

    Args:
        path: the folder a command will create or write into.
        option: how the user named it (``--out``, ``--save-into``), for the message.

    Raises:
        ConfigError: ``path``, or the closest of its parents that exists, is a file.
    """
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is an existing file" if folder == path else f"is inside {folder}, an existing file"
                raise ConfigError(
                    f"{option} {path}: {what}, not a directory; name a new folder (or remove the file)"
                )
            break
    return path
