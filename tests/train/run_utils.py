"""What the resume tests through the real CLI share: running `lmforge`, reading a run directory
back (file hashes, history) and the one-line error the CLI prints."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m lmforge.cli ARGS`` in a subprocess, wide enough that messages are not wrapped."""
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


def hashes(run: Path) -> dict[str, str]:
    """SHA-256 of every file under the run directory, by relative path."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line the CLI prints for an lmforge error (and nothing else on stderr)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def history(run: Path) -> list[dict]:
    """The run's ``history.jsonl`` records, in order."""
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
