"""`lmforge quantize`, `prune` and `distill` end to end: each writes a checkpoint `lmforge.load` reads."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

import lmforge
from lmforge.cli import app
from lmforge.models.quantized import Int8DynamicLinear

runner = CliRunner()


def _logits(run: Path) -> torch.Tensor:
    loaded = lmforge.load(run)
    ids = torch.randint(0, loaded.config.vocab_size, (3, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return loaded.model(ids).logits


def test_quantize_writes_a_calibrated_int8_checkpoint(classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    result = runner.invoke(
        app,
        ["quantize", str(classifier), "--method", "int8", "--out", str(out), "--eval-data", str(tmp_path / "test.csv"),
         "--fit-data", str(tmp_path / "train.csv"), "--fit-split", "train", "--eval-limit", "40", "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "compression.json").read_text())
    assert report["kind"] == "quantize" and report["calibration"]["before"]["examples"] == 40  # --eval-limit
    loaded = lmforge.load(out)
    assert loaded.calibrator is not None  # the recalibration of --fit-data is saved with the model
    assert any(isinstance(m, Int8DynamicLinear) for m in loaded.model.modules())
    assert _logits(out).shape == (3, 2)
    assert "agreement with the model before" in result.output


def test_prune_writes_a_smaller_checkpoint(classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    result = runner.invoke(
        app,
        ["prune", str(classifier), "--heads", "0.5", "--ffn", "0.5", "--data", str(tmp_path / "train.csv"),
         "--importance-batches", "1", "--recovery-steps", "1", "--batch-size", "8", "--limit", "24",
         "--out", str(out), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded = lmforge.load(out)
    assert sum(loaded.config.layer_num_heads) == 4  # of 2 layers x 4 heads
    assert json.loads((out / "compression.json").read_text())["kind"] == "prune"
    assert _logits(out).shape == (3, 2)
    assert "parameters" in result.output


def test_distill_writes_a_one_block_student(classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    result = runner.invoke(
        app,
        ["distill", "--teacher", str(classifier), "--data", str(tmp_path / "train.csv"), "--student-layers", "1",
         "--steps", "2", "--batch-size", "8", "--out", str(out), "--threads", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert lmforge.load(out).config.num_layers == 1
    assert json.loads((out / "compression.json").read_text())["kind"] == "distill"
    assert _logits(out).shape == (3, 2)
    assert "2 steps" in result.output
