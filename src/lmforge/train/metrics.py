"""Where training reports go: ``metrics.jsonl``, TensorBoard (when installed) and the console.

Only the main process writes. On resume, :meth:`MetricsLog.truncate` drops records past the
checkpoint step (and any half-written last line of a killed run), so the file of a resumed run
reads exactly like that of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from lmforge.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSON lines, one object per record, mirrored to TensorBoard when available."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool) -> None:
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._writer: Any = None
        # Opened on the first record: a run that ends before training (a resumed run found
        # complete, a refused change) leaves the directory untouched.
        self._tensorboard = enabled and tensorboard

    def _open_writer(self) -> None:
        self._tensorboard = False
        try:  # optional: torch's writer needs the tensorboard package
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path.parent / "tensorboard"))
        except ImportError:
            self._writer = None

    def truncate(self, last_step: int) -> None:
        """Keep only complete records with ``step <= last_step``."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut
            if isinstance(record, dict) and record.get("step", 0) <= last_step:
                kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        if self._tensorboard:
            self._open_writer()
        file = self._file
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        file.write(json.dumps(clean) + "\n")
        file.flush()
        if self._writer is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._writer.add_scalar(f"{record.get('kind', 'train')}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()


class ProgressDisplay:
    """Progress bar with loss, tokens/s and ETA on a terminal; plain log lines otherwise."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._task: Any = None
        if self.bar:
            self._progress = Progress(
                TextColumn("[bold]pretrain"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, info="")
            self._progress.start()
        self._last = time.perf_counter()

    def step(self, step: int, info: str, force_line: bool) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        elif force_line:
            self.console.print(f"step {step}: {info}", highlight=False)

    def print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
