"""`lmforge quickstart --fast` end to end on the bundled data, and the stage runner's reuse rules."""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import lmforge
from lmforge.errors import ConfigError
from lmforge.quickstart import QuickstartConfig, run_quickstart
from lmforge.quickstart import run as runner
from lmforge.quickstart.plan import Plan, write_splits
from lmforge.quickstart.report import metric_rows


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
        timeout=600,
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_fast_quickstart_end_to_end_and_rerun_reuses_every_stage(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    lines: list[str] = []
    result = run_quickstart(QuickstartConfig(out, "zh", fast=True), progress=lines.append)
    stages = result["stages"]
    assert list(stages) == list(runner.STAGES) and not any(s["reused"] for s in stages.values())
    assert sum("done in" in line for line in lines) == len(runner.STAGES)

    # Every metric row holds real numbers, on the test split.
    rows = metric_rows(stages)
    assert len(rows) == 1 + 2 + 3 + 6 + 2  # baseline, 2 fine-tuned, 3 calibrators, 6 prompted, 2 int8
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["ece"] <= 1.0, row["model"]
        assert math.isfinite(row["nll"]) and row["nll"] > 0, row["model"]
    test_size = len(_rows(out / "data" / "test.csv"))
    summary = {name: entry["summary"] for name, entry in stages.items()}
    assert summary["evaluate"]["tiny-test"]["examples"] == test_size == summary["baseline"]["examples"]
    assert summary["prompt"]["examples"] == QuickstartConfig(out, fast=True).plan().prompt_examples

    # Splits are disjoint; the pretraining corpus holds training texts only.
    texts = {
        split: {r["text"] for r in _rows(out / "data" / f"{split}.csv")}
        for split in ("train", "validation", "test")
    }
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["validation"]
    corpus = set((out / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines())
    assert texts["train"] <= corpus and not corpus & texts["test"]

    # The calibrator chosen by the calibrate stage is shipped in the chosen classifier.
    best = summary["evaluate"]["best"]
    classifier = lmforge.load(out / f"finetune-{best}")
    assert classifier.calibrator is not None and classifier.calibrator.method == summary["calibrate"]["saved"]
    saved = np.load(out / "eval" / f"{best}-test" / "logits.npz")
    test_texts = [r["text"] for r in _rows(out / "data" / "test.csv")]
    np.testing.assert_allclose(classifier.logits(test_texts[:8]), saved["logits"][:8], atol=1e-4)

    # int8: a smaller file, the same classifier head, its own (refitted) temperature.
    compress = summary["compress"]
    assert compress["file_bytes_after"] < compress["file_bytes_before"]
    assert lmforge.load(out / "compressed").calibrator is not None

    # The report: self-contained, every section present, figures embedded and real PNGs.
    page = (out / "report.html").read_text(encoding="utf-8")
    for heading in ("Data", "Pretraining and fine-tuning", "Test metrics", "Calibration of the chosen model",
                    "ROC and confusion matrix", "Compression", "Timings", "Versions", "Serve the calibrated model"):  # fmt: skip
        assert f"<h2>{heading}" in page, heading
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 8 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from elsewhere
    assert f"lmforge serve {out / f'finetune-{best}'}" in page and "/v1/classify" in page

    # A re-run (through the CLI) reuses every finished stage and reports the same numbers.
    before = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    run = run_cli("quickstart", "--fast", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("reused") == len(runner.STAGES)
    assert "lmforge serve" in run.stdout and "curl -s http://127.0.0.1:8000/v1/classify" in run.stdout
    after = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert metric_rows(after["stages"]) == metric_rows(before["stages"])


def _fake_stages(calls: list[str], fail: str | None = None) -> dict[str, Any]:
    def stage(name: str) -> Any:
        def run(ctx: Any) -> dict[str, Any]:
            calls.append(name)
            if name == fail:
                raise RuntimeError(f"{name} interrupted")
            folder = ctx.path(name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "done").write_text("x")
            return {"name": name, "after": sorted(ctx.done)}

        run.__doc__ = f"stage {name}"
        return run

    return {name: stage(name) for name in ("a", "b", "c")}


def test_runner_reuses_finished_stages_in_order_and_reruns_from_the_first_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(runner, "STAGES", _fake_stages(calls, fail="b"))
    monkeypatch.setattr(runner, "OUTPUTS", {n: (n,) for n in "abc"})
    monkeypatch.setattr(runner, "RESUMABLE", frozenset({"b"}))
    monkeypatch.setattr(runner, "write_report", lambda out, *_: out / "report.html")
    config = QuickstartConfig(tmp_path, "zh", fast=True)
    with pytest.raises(RuntimeError, match="b interrupted"):
        run_quickstart(config, progress=lambda _: None)
    state = json.loads((tmp_path / runner.STATE_NAME).read_text())
    assert list(state["stages"]) == ["a"]  # what finished before the interruption is kept

    calls.clear()
    monkeypatch.setattr(runner, "STAGES", _fake_stages(calls))
    (tmp_path / "b").mkdir(exist_ok=True)
    (tmp_path / "b" / "checkpoint").write_text("x")  # b resumes: its folder is kept
    (tmp_path / "c").mkdir(exist_ok=True)
    (tmp_path / "c" / "stale").write_text("x")  # c starts clean
    result = run_quickstart(config, progress=lambda _: None)
    assert calls == ["b", "c"]
    assert [s["reused"] for s in result["stages"].values()] == [True, False, False]
    assert (tmp_path / "b" / "checkpoint").exists() and not (tmp_path / "c" / "stale").exists()
    assert result["stages"]["c"]["summary"]["after"] == ["a", "b"]

    calls.clear()
    run_quickstart(config, progress=lambda _: None)
    assert calls == []  # everything reused

    calls.clear()
    lines: list[str] = []
    run_quickstart(QuickstartConfig(tmp_path, "zh", fast=True, seed=1), progress=lines.append)
    assert calls == ["a", "b", "c"] and "another plan" in lines[0]  # another plan starts over
    assert not (tmp_path / "b" / "checkpoint").exists()


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--lang 'fr'"):
        QuickstartConfig(tmp_path, "fr")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--threads 0"):
        QuickstartConfig(tmp_path, threads=0)
    run = run_cli("quickstart", "--lang", "fr", "--out", str(tmp_path / "x"))
    assert run.returncode == 1 and "--lang 'fr'" in run.stderr and "Traceback" not in run.stderr


def test_english_splits_are_disjoint_deterministic_and_cover_pang_lee(tmp_path: Path) -> None:
    plan = Plan.of("en", fast=True)
    stats = write_splits(plan, tmp_path / "one")
    write_splits(plan, tmp_path / "two")
    sizes = {k: v["examples"] for k, v in stats["splits"].items()}
    assert sizes == {"train": 100, "validation": 40, "test": 60}
    seen: set[str] = set()
    for split in ("train", "validation", "test"):
        first = (tmp_path / "one" / f"{split}.csv").read_text(encoding="utf-8")
        assert first == (tmp_path / "two" / f"{split}.csv").read_text(encoding="utf-8")
        texts = {r["text"] for r in _rows(tmp_path / "one" / f"{split}.csv")}
        assert not texts & seen
        seen |= texts
    assert len(seen) == 200
