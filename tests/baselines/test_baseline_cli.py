"""`lmforge baseline` and `lmforge compare` end to end on tiny files."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lmforge.baselines.compare import compare_runs
from lmforge.cli import app

runner = CliRunner()
POSITIVE = ["good", "great", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "nasty"]
FILLER = ["the", "movie", "was", "a", "film", "it", "plot", "and", "acting", "story"]
NEURAL = ("textcnn", "bilstm")


def write_csv(path: Path, n: int, seed: int, labels: tuple[str, str] = ("neg", "pos")) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review", "sentiment"])
        for i in range(n):
            label = rng.randrange(2)
            words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POSITIVE if label else NEGATIVE)] * 2
            rng.shuffle(words)
            writer.writerow([i, " ".join(words), labels[label]])


def invoke(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["tfidf-lr", "tfidf-nb", "tfidf-svm", "glove-lr", "textcnn", "bilstm"])
def test_classifier_kinds_write_metrics_and_logits(tmp_path: Path, kind: str) -> None:
    write_csv(tmp_path / "train.csv", 120, 0)
    write_csv(tmp_path / "test.csv", 30, 1)
    out = tmp_path / kind
    metrics = invoke(
        "baseline", "--kind", kind, "--data", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
        "--text-column", "review", "--label-column", "sentiment", "--out", str(out), "--threads", "1",
        "--epochs", "8", "--embed-dim", "32", *(["--lr", "0.005", "--batch-size", "16"] if kind in NEURAL else []),
    )  # fmt: skip
    assert metrics["accuracy"] >= 0.9 and metrics["macro_f1"] >= 0.9
    assert metrics["kind"] == kind and metrics["task"] == "classification"
    assert metrics["num_train"] == 120 and metrics["num_test"] == 30
    saved = np.load(out / "logits.npz")
    assert saved["logits"].shape == (30, 2)
    assert list(saved["label_names"]) == ["neg", "pos"]
    # The saved arrays reproduce the reported metrics, as scikit-learn computes them.
    from sklearn.metrics import accuracy_score, f1_score

    predicted = saved["logits"].argmax(1)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(saved["labels"], predicted))
    assert metrics["macro_f1"] == pytest.approx(f1_score(saved["labels"], predicted, average="macro"))
    assert (out / "summary.html").is_file() and (out / "confusion_matrix.png").is_file()


def test_integer_labels_and_a_hash_split_without_test_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "all.csv", 200, 2, labels=("0", "1"))
    out = tmp_path / "run"
    metrics = invoke(
        "baseline", "--kind", "tfidf-lr", "--data", str(tmp_path / "all.csv"), "--text-column", "review",
        "--label-column", "sentiment", "--test-fraction", "0.2", "--out", str(out),
    )  # fmt: skip
    assert metrics["label_names"] == ["0", "1"]
    assert metrics["num_train"] + metrics["num_test"] == 200 and 20 <= metrics["num_test"] <= 60
    assert metrics["accuracy"] >= 0.9
    again = invoke(
        "baseline", "--kind", "tfidf-lr", "--data", str(tmp_path / "all.csv"), "--text-column", "review",
        "--label-column", "sentiment", "--test-fraction", "0.2", "--out", str(tmp_path / "again"),
    )  # fmt: skip
    assert again["num_test"] == metrics["num_test"] and again["accuracy"] == metrics["accuracy"]


def test_ngram_language_models_report_perplexity(tmp_path: Path) -> None:
    rng = random.Random(3)
    lines = [" ".join(rng.choice(FILLER[:5]) for _ in range(6)) for _ in range(200)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    kn = invoke(
        "baseline",
        "--kind",
        "ngram-kn",
        "--data",
        str(tmp_path / "corpus.txt"),
        "--out",
        str(tmp_path / "kn"),
    )
    wb = invoke(
        "baseline", "--kind", "ngram-wb", "--data", str(tmp_path / "corpus.txt"), "--order", "2",
        "--out", str(tmp_path / "wb"),
    )  # fmt: skip
    # Five equally likely words plus </s> every 7th token: a uniform model scores 6.
    for metrics in (kn, wb):
        assert metrics["task"] == "lm"
        assert 4.0 < metrics["perplexity"] < 7.5
    assert kn["smoothing"] == "kneser-ney" and kn["discount"].startswith("modified")


def test_bilstm_tagger_reports_entity_f1_on_conll_files(tmp_path: Path) -> None:
    rng = random.Random(4)
    people, places = ["john", "mary", "li"], ["paris", "tokyo", "rome"]

    def sentence() -> str:
        rows = []
        for _ in range(5):
            roll = rng.random()
            if roll < 0.25:
                rows += [f"{rng.choice(people)}\tB-PER"]
            elif roll < 0.5:
                rows += [f"{rng.choice(places)}\tB-LOC", "city\tI-LOC"]
            else:
                rows += [f"{rng.choice(FILLER)}\tO"]
        return "\n".join(rows)

    (tmp_path / "train.conll").write_text(
        "\n\n".join(sentence() for _ in range(150)) + "\n", encoding="utf-8"
    )
    (tmp_path / "test.conll").write_text("\n\n".join(sentence() for _ in range(30)) + "\n", encoding="utf-8")
    metrics = invoke(
        "baseline", "--kind", "bilstm-tagger", "--data", str(tmp_path / "train.conll"),
        "--test", str(tmp_path / "test.conll"), "--out", str(tmp_path / "tagger"), "--threads", "1",
        "--epochs", "10", "--embed-dim", "32", "--lr", "0.01",
    )  # fmt: skip
    assert metrics["task"] == "token-classification"
    assert metrics["entity_f1"] >= 0.9
    assert metrics["label_names"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_compare_puts_runs_in_one_table(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "metrics.json").write_text(
        json.dumps({"kind": "tfidf-lr", "accuracy": 0.8, "macro_f1": 0.7})
    )
    # A transformer evaluation may nest its metrics and name its model.
    (tmp_path / "b" / "metrics.json").write_text(
        json.dumps(
            {"model": "bert-zh-tiny", "task": "classification", "metrics": {"accuracy": 0.9, "macro_f1": 0.6}}
        )
    )
    result = runner.invoke(
        app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 0, result.output
    assert "bert-zh-tiny" in result.output
    report = json.loads((tmp_path / "r" / "compare.json").read_text())
    assert report["columns"][:2] == ["accuracy", "macro_f1"]
    assert [r["accuracy"] for r in report["rows"]] == [0.8, 0.9]
    assert report["best"] == {"accuracy": 0.9, "macro_f1": 0.7}
    page = (tmp_path / "r" / "compare.html").read_text()
    assert "<b>0.9000</b>" in page and "<b>0.7000</b>" in page
    # `lmforge baseline compare` is the same command.
    again = runner.invoke(app, ["baseline", "compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert again.exit_code == 0 and "tfidf-lr" in again.output
    assert compare_runs([tmp_path / "a" / "metrics.json"])["rows"][0]["model"] == "tfidf-lr"


def test_bad_input_fails_with_a_clear_message(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", 20, 5)
    (tmp_path / "test.csv").write_text("review,sentiment\nfine film,meh\n", encoding="utf-8")
    cases = [
        (["--kind", "nope", "--data", str(tmp_path / "train.csv")], "--kind 'nope'"),
        (["--kind", "tfidf-lr", "--data", str(tmp_path / "train.csv")], "no column 'text'"),
        (
            ["--kind", "tfidf-lr", "--data", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
             "--text-column", "review", "--label-column", "sentiment"],
            "test.csv:2",
        ),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, ["baseline", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code != 0
        assert message in str(result.exception)
    missing = runner.invoke(app, ["compare", str(tmp_path / "nowhere")])
    assert missing.exit_code != 0 and "no metrics.json" in str(missing.exception)
