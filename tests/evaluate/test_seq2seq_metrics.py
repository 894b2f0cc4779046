"""Seq2seq metrics: the BLEU tokenizer chosen per target language, values equal to sacreBLEU /
rouge-score computed directly, and the evaluation folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from lmforge.evaluate.seq2seq import evaluate_seq2seq
from lmforge.metrics import seq2seq
from lmforge.metrics.seq2seq import bleu_tokenize_for, is_cjk_text, seq2seq_metrics

JA_REFS = ["元始に神天地を創造たまへり", "神光を善と觀たまへり", "夕あり朝ありき是首の日なり"]
JA_PREDS = ["元始に神天を創造り", "神光を善とせり", "夕あり朝ありき"]
EN_REFS = ["the cat sat on the mat", "god saw the light and it was good", "there was evening"]
EN_PREDS = ["the cat is on the mat", "god saw that the light was good", "it was evening"]


def test_bleu_tokenize_per_language(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seq2seq, "_mecab_installed", lambda: False)
    assert bleu_tokenize_for("ja") == "char"
    assert bleu_tokenize_for("zh") == "zh"
    assert bleu_tokenize_for("en", JA_REFS) == "13a"  # a given language wins over the text
    assert bleu_tokenize_for(None, JA_REFS) == "char"
    assert bleu_tokenize_for(None, EN_REFS) == "13a"
    monkeypatch.setattr(seq2seq, "_mecab_installed", lambda: True)
    assert bleu_tokenize_for("ja") == "ja-mecab"
    assert is_cjk_text(["神 abc"], threshold=0.25) and not is_cjk_text(["神 abcd"], threshold=0.25)


def test_japanese_metrics_equal_sacrebleu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seq2seq, "_mecab_installed", lambda: False)
    metrics = seq2seq_metrics(JA_PREDS, JA_REFS, target_language="ja")
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(JA_PREDS, [JA_REFS], tokenize="char").score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(JA_PREDS, [JA_REFS]).score)
    assert 0 < metrics["bleu"] < 100 and "tok:char" in metrics["bleu_signature"]
    assert metrics["bleu_tokenize"] == "char" and "rouge1" not in metrics and "meteor" not in metrics
    # The 13a default would see each unsegmented sentence as one word: a different (wrong) score.
    assert metrics["bleu"] != pytest.approx(sacrebleu.corpus_bleu(JA_PREDS, [JA_REFS]).score)


def test_english_metrics_equal_references() -> None:
    metrics = seq2seq_metrics(EN_PREDS, EN_REFS, target_language="en")
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(EN_PREDS, [EN_REFS]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(EN_PREDS, [EN_REFS]).score)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(EN_PREDS, EN_REFS)]
    for name in ("rouge1", "rouge2", "rougeL"):
        assert metrics[name] == pytest.approx(sum(s[name].fmeasure for s in scores) / len(scores))
    assert "meteor" in metrics or any("meteor" in n for n in metrics.get("notes", []))


def test_evaluation_folder(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    metrics = evaluate_seq2seq(
        JA_PREDS, JA_REFS, sources=["a", "b", "c"], ids=["Ge 1:1", None, "Ge 1:5"], target_language="ja",
        out_dir=out, extra={"loss": 1.5},
    )  # fmt: skip
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (
        saved["task"] == "seq2seq"
        and saved["loss"] == 1.5
        and saved["bleu"] == pytest.approx(metrics["bleu"])
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["Ge 1:1", 1, "Ge 1:5"]
    assert rows[2] == {"id": "Ge 1:5", "source": "c", "prediction": JA_PREDS[2], "reference": JA_REFS[2]}
    assert (out / "summary.html").is_file()
