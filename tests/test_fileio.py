"""atomic_replace_dir: the directory is the old one or the new one, never a mix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.fileio import atomic_replace_dir, interrupted_replace


def _write(files: dict[str, str]):  # noqa: ANN202
    def build(directory: Path) -> None:
        for name, text in files.items():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text)

    return build


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


def test_creates_then_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out"
    atomic_replace_dir(target, _write({"a.txt": "1", "nested/b.txt": "2"}))
    assert _tree(target) == {"a.txt": "1", "nested/b.txt": "2"}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    atomic_replace_dir(target, _write({"c.txt": "3"}))
    assert _tree(target) == {"c.txt": "3"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out"]


def test_failing_build_leaves_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "out"
    atomic_replace_dir(target, _write({"a.txt": "old"}))

    def build(directory: Path) -> None:
        (directory / "a.txt").write_text("new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_replace_dir(target, build)
    assert _tree(target) == {"a.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_of_a_crash_are_resolved(tmp_path: Path) -> None:
    target = tmp_path / "out"
    # Crash after the swap, before the old copy was deleted: the stale copy goes.
    atomic_replace_dir(target, _write({"a.txt": "new"}))
    (tmp_path / ".out.old").mkdir()
    assert interrupted_replace(target) is None
    atomic_replace_dir(target, _write({"a.txt": "newer"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # Crash between the renames: the previous directory is found and put back first.
    os.replace(target, tmp_path / ".out.old")
    assert interrupted_replace(target) == tmp_path / ".out.old"
    with pytest.raises(RuntimeError):
        atomic_replace_dir(target, lambda directory: (_ for _ in ()).throw(RuntimeError("again")))
    assert _tree(target) == {"a.txt": "newer"}


def test_refuses_a_file_at_the_target(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file")
    with pytest.raises(LmforgeError, match="not a directory"):
        atomic_replace_dir(tmp_path / "out", _write({"a.txt": "1"}))
    assert (tmp_path / "out").read_text() == "a file"
