"""The ``lmforge`` command line: one verb per job, the same work as the Python API.

:mod:`lmforge.cli.app` registers the verbs; each lives in its own module (``info``, ``assets``,
``tokenizer``, ``data``, ``calibrate``, ``prompt``, ``pretrain``, ``init``, ``baseline``,
``finetune``, ``tune``, ``evaluate`` ...) and only parses flags, calls the stage's Python API and
prints. Shared option types and flag parsing are in :mod:`lmforge.cli.options`.
"""

from lmforge.cli.app import app, main

__all__ = ["app", "main"]
