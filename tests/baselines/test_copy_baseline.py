"""The seq2seq copy baseline: the prediction is the source, scored like `lmforge evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from typer.testing import CliRunner

from lmforge.baselines import BaselineConfig, run_baseline
from lmforge.cli import app

PAIRS = [
    {"document": "the quick brown fox jumps over the lazy dog today", "summary": "a fox jumps over a dog"},
    {"document": "rain fell on the city all night and the streets flooded", "summary": "the city flooded"},
    {"document": "the team won the final match by two goals", "summary": "the team won the final"},
]


def test_copy_baseline_scores_the_source(tmp_path: Path) -> None:
    data = tmp_path / "sum.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    metrics = run_baseline(BaselineConfig("copy", str(data), tmp_path / "copy"))
    sources, targets = [p["document"] for p in PAIRS], [p["summary"] for p in PAIRS]
    assert metrics["task"] == "seq2seq" and metrics["num_test"] == 3 and metrics["bleu_tokenize"] == "13a"
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(sources, [targets]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(sources, [targets]).score)
    assert metrics["chrf"] > 20 and "rouge1" in metrics  # English target: ROUGE too
    rows = [json.loads(line) for line in (tmp_path / "copy" / "predictions.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == sources
    saved = json.loads((tmp_path / "copy" / "metrics.json").read_text())
    assert saved["kind"] == "copy" and saved["chrf"] == pytest.approx(metrics["chrf"])


def test_copy_baseline_cli_with_columns(tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    data.write_text("en,ja\nGod is light,神は光なり\nThe day 1,第1日\n", encoding="utf-8")
    out = tmp_path / "copy"
    result = CliRunner().invoke(
        app, ["baseline", "--kind", "copy", "--data", str(data), "--text-column", "en", "--label-column", "ja",
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bleu_tokenize"] == "char"  # Japanese targets detected from the text
    sources, targets = ["God is light", "The day 1"], ["神は光なり", "第1日"]
    # The --text-column / --label-column pair chose what is copied and what it is scored against: the
    # English side is the prediction (the Japanese one copied would score 100).
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["prediction"], r["reference"]) for r in rows] == list(zip(sources, targets))
    assert 0 < metrics["chrf"] < 100
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(sources, [targets]).score)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(sources, [targets], tokenize="char").score)
