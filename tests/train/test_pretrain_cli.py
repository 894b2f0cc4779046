"""`lmforge pretrain` end to end: text -> tokenizer -> token data -> a few steps -> report and model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pretrain_utils import prepare_english_data

import lmforge
from lmforge.data import TokenDataset

RECIPES = Path(__file__).parents[2] / "recipes" / "pretrain"
TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64"]
FAST = [*TINY, "objective.seq_len=32", "data.batch_size=4", "eval_every=2", "eval_batches=1", "threads=1"]


def _lmforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmforge.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )


@pytest.fixture(scope="module")
def english_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_english_data(tmp_path_factory.mktemp("english"))


def test_pretrain_cli_writes_report_and_model(tmp_path: Path, english_data: Path) -> None:
    run = tmp_path / "run"
    result = _lmforge(
        "pretrain", "--config", str(RECIPES / "gpt-bible-tiny.yaml"), "--data", str(english_data),
        "--out", str(run), "--max-steps", "4", *FAST,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((run / "report.json").read_text())
    for key in ("final_val_loss", "val_perplexity", "tokens_per_second", "steps"):
        assert report[key] is not None, key
    assert report["steps"] == 4 and report["val_perplexity"] == pytest.approx(
        np.exp(report["final_val_loss"])
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]
    loaded = lmforge.load(run / "model")
    assert loaded.config.head == "causal_lm" and loaded.tokenizer is not None
    ids = torch.tensor([loaded.tokenizer.encode("the of and")])
    assert loaded.model(ids).logits.shape[-1] == loaded.config.vocab_size
    assert loaded.config.vocab_size >= TokenDataset(english_data).vocab_size


def test_pretrain_cli_reports_bad_override_in_one_line(tmp_path: Path, english_data: Path) -> None:
    result = _lmforge(
        "pretrain", "--config", str(RECIPES / "gpt-bible-tiny.yaml"), "--data", str(english_data),
        "--out", str(tmp_path / "run"), "optim.lrr=0.1",
    )  # fmt: skip
    assert result.returncode == 1
    assert "unknown field 'optim.lrr'" in result.stderr and "Traceback" not in result.stderr
