"""Run the quickstart's stages in order, timed, reusing those a previous run finished.

``OUT/stages.json`` records the plan and, per finished stage, its summary and duration; it is
rewritten atomically after each stage, so an interrupted run keeps every stage it finished. A
re-run reuses finished stages in order until the first that is missing; that one and every later
one run again (each depends on the ones before). A run under a different plan (``--lang``,
``--fast``, seed) starts over and clears the old stage folders. Pretraining and fine-tuning
resume from their newest checkpoint when they were interrupted.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.fileio import atomic_write_text
from lmforge.quickstart.plan import QuickstartConfig
from lmforge.quickstart.report import write_report
from lmforge.quickstart.stages import OUTPUTS, RESUMABLE, STAGES, Context
from lmforge.runtime import torch_threads

__all__ = ["STATE_NAME", "run_quickstart"]

#: The record of finished stages in the run directory.
STATE_NAME = "stages.json"


def _read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # none yet, or unreadable: start over
    return state if isinstance(state, dict) and isinstance(state.get("stages"), dict) else None


def _clear(out: Path, names: list[str]) -> None:
    for name in names:
        for folder in OUTPUTS[name]:
            shutil.rmtree(out / folder, ignore_errors=True)


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".")


def run_quickstart(config: QuickstartConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the quickstart in ``config.out`` and write ``report.html`` and ``summary.json``.

    Args:
        config: the run.
        progress: called with one line as each stage starts and ends.

    Returns:
        ``{"plan", "stages": {name: {"summary", "seconds", "reused"}}, "report": path}``.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = config.plan()
    key = json.loads(json.dumps({**plan.fingerprint(), "seed": config.seed}))  # as stages.json holds it
    state = _read_state(out / STATE_NAME)
    if state is None or state.get("plan") != key:
        if state is not None:
            progress(f"{out}: earlier stages ran under another plan; starting over")
        _clear(out, list(STAGES))
        state = {"plan": key, "stages": {}}
    finished: dict[str, Any] = state["stages"]
    ctx = Context(plan, out, config.seed, {})
    reusing = True
    for index, (name, stage) in enumerate(STAGES.items(), start=1):
        tag = f"[{index}/{len(STAGES)}] {name}"
        if reusing and name in finished:
            ctx.done[name] = finished[name]["summary"]
            finished[name]["reused"] = True
            progress(f"{tag}: reused (finished earlier in {finished[name]['seconds']:.1f}s)")
            continue
        if reusing:  # this stage and every later one run again
            reusing = False
            later = list(STAGES)[index - 1 :]
            for stale in later:
                finished.pop(stale, None)
            # The interrupted stage continues from its checkpoint if it can; later ones start clean.
            _clear(out, later[1:] if name in RESUMABLE else later)
        progress(f"{tag}: {_first_sentence(stage.__doc__)}")
        start = time.perf_counter()
        with torch_threads(config.threads):
            summary = stage(ctx)
        seconds = time.perf_counter() - start
        ctx.done[name] = summary
        finished[name] = {"summary": summary, "seconds": seconds, "reused": False}
        atomic_write_text(out / STATE_NAME, json.dumps(state, indent=2, ensure_ascii=False) + "\n")
        progress(f"{tag}: done in {seconds:.1f}s")
    report = write_report(out, config, plan, finished)
    result = {"plan": key, "stages": finished, "report": str(report)}
    atomic_write_text(out / "summary.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result
