"""The one error path of the ``lmforge`` command.

* Usage errors (no verb, unknown verb or option, missing option, a value of the wrong type):
  the CLI library's own short usage message, exit code 2.
* An :class:`~lmforge.errors.LmforgeError`: one line (what, where, what to do), its exit code.
* Anything else is a bug or an environment problem: one line naming the exception and the log
  file holding the full traceback, exit code 1. ``--debug`` (or ``LMFORGE_DEBUG=1``) shows the
  traceback instead.

:class:`~lmforge.errors.LmforgeWarning` warnings print as one ``warning:`` line too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from rich.markup import escape

from lmforge.cli.options import err_console
from lmforge.errors import LmforgeError, LmforgeWarning

__all__ = ["debug_requested", "log_dir", "run_with_error_path"]

DEBUG_FLAG = "--debug"


def debug_requested(args: Sequence[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` (anywhere before a ``--``) or ``LMFORGE_DEBUG=1`` asks for tracebacks,
    and the arguments without the flag (so every verb accepts it, before or after its options)."""
    end = list(args).index("--") if "--" in args else len(args)
    rest = [a for i, a in enumerate(args) if not (i < end and a == DEBUG_FLAG)]
    from_env = os.environ.get("LMFORGE_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    return from_env or len(rest) < len(args), rest


def log_dir() -> Path:
    """Where crash logs go: ``$XDG_CACHE_HOME/lmforge/logs`` (default ``~/.cache/lmforge/logs``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lmforge" / "logs"


def _write_log(exc: BaseException, args: Sequence[str]) -> Path | None:
    """The full traceback in a fresh log file; the system temp dir when the cache is not writable."""
    from lmforge.version import __version__

    text = (
        f"lmforge {__version__}, Python {sys.version.split()[0]}\n"
        f"command: lmforge {' '.join(args)}\n"
        f"cwd: {os.getcwd()}\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    )
    name = f"lmforge-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir()) / "lmforge-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
            return folder / name
        except OSError:
            continue
    return None


def _one_line(text: object) -> str:
    """The message on one line, with rich markup escaped (messages quote lists like ``['a', 'b']``)."""
    return escape(" ".join(str(text).split()))


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print lmforge's own warnings as ``warning: ...`` lines (no file:line of the warn call)."""
    with warnings.catch_warnings():  # restores the filters and showwarning on exit
        warnings.simplefilter("always", LmforgeWarning)
        previous = warnings.showwarning

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: TextIO | None = None,
            line: str | None = None,
        ) -> None:
            if issubclass(category, LmforgeWarning):
                err_console.print(
                    f"[yellow]warning:[/yellow] {_one_line(message)}", highlight=False, soft_wrap=True
                )
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def run_with_error_path(command: Any, args: Sequence[str] | None = None) -> NoReturn:
    """Run the click/typer ``command`` on ``args`` (default ``sys.argv[1:]``) and exit with its code."""
    debug, rest = debug_requested(sys.argv[1:] if args is None else args)
    with _warnings_as_lines():
        try:
            # standalone mode: click prints usage errors itself and exits 2, and exits 0 on success.
            command(args=rest, prog_name="lmforge", standalone_mode=True)
        except LmforgeError as exc:
            if debug:
                raise
            err_console.print(f"[red]error:[/red] {_one_line(exc)}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if debug:
                raise
            log = _write_log(exc, rest)
            where = f"full traceback in {log}" if log is not None else "no log could be written"
            err_console.print(
                f"[red]error:[/red] unexpected {type(exc).__name__}: {_one_line(exc) or '(no message)'} "
                f"({where}; rerun with --debug to see it here, and please report it)",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(1)
    sys.exit(0)
