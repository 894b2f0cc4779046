"""Extractive QA: windows and offsets, span post-processing, and `lmforge finetune/evaluate --task qa`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import lmforge
from lmforge.assets import asset_path
from lmforge.cli import app
from lmforge.data.qa import QAAnswer, QAExample, load_squad
from lmforge.errors import AssetMissingError, ConfigError
from lmforge.metrics.qa import squad_metrics
from lmforge.models import TransformerModel, preset_config
from lmforge.tasks.qa import QAConfig, best_spans, encode_qa
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

sys.path.insert(0, str(Path(__file__).parent))
from qa_utils import synthetic_squad  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SQuAD-style files (v1.1 and v2.0) and a tiny random BERT with a WordPiece tokenizer trained on them."""
    root = tmp_path_factory.mktemp("qa")
    synthetic_squad(root / "train.json", 24, seed=1, v2=True, people=(1, 4))
    synthetic_squad(root / "dev.json", 8, seed=2, v2=True, people=(2, 5))
    synthetic_squad(root / "long.json", 12, seed=3, v2=False, people=(4, 6))
    texts = [
        f"{q['question']} {p['context']}"
        for name in ("train.json", "dev.json", "long.json")
        for article in json.loads((root / name).read_text())["data"]
        for p in article["paragraphs"]
        for q in p["qas"]
    ]
    tokenizer = train_tokenizer(texts, TokenizerTrainConfig(kind="wordpiece", vocab_size=300, lowercase=True))
    tokenizer.save(root / "tokenizer")
    torch.manual_seed(0)
    config = preset_config(
        "bert-tiny", vocab_size=tokenizer.vocab_size, hidden_size=32, num_heads=2,
        intermediate_size=64, max_positions=128,
    )  # fmt: skip
    lmforge.save(TransformerModel(config), root / "tiny", tokenizer)
    return root


def _tokenizer(kind: str, workspace: Path) -> tuple[Tokenizer, str]:
    """A tokenizer of each kind and its first special token."""
    if kind == "wordpiece":
        return Tokenizer.from_dir(workspace / "tokenizer"), "[CLS]"
    if kind == "roberta-bpe":  # byte-level BPE: offsets must skip the leading space ("Ġ")
        data = load_squad(workspace / "long.json")
        texts = [f"{e.question} {e.context}" for e in data.examples]
        return train_tokenizer(
            texts, TokenizerTrainConfig(kind="bpe", vocab_size=400, family="roberta")
        ), "<s>"
    try:
        return Tokenizer.from_dir(asset_path("minilm-l6")), "[CLS]"
    except AssetMissingError:
        pytest.skip("MiniLM asset not installed")


@pytest.mark.parametrize("kind", ["wordpiece", "roberta-bpe", "minilm"])
def test_windows_put_the_answer_on_its_gold_characters(workspace: Path, kind: str) -> None:
    tokenizer, first = _tokenizer(kind, workspace)
    data = load_squad(workspace / "long.json")
    config = QAConfig(doc_stride=12, max_query_length=16)
    features = encode_qa(tokenizer, data.examples, 48, config)
    windows_of: dict[int, list[dict]] = {}
    for feature in features:
        assert len(feature["input_ids"]) <= 48
        assert feature["input_ids"][0] == tokenizer.backend.token_to_id(first)
        windows_of.setdefault(feature["example_index"], []).append(feature)
    assert sorted(windows_of) == list(range(len(data.examples)))
    found_in_later_window = 0
    for index, example in enumerate(data.examples):
        windows, answer = windows_of[index], example.answers[0]
        assert len(windows) >= 2  # 4-6 people per paragraph: the contexts need several windows
        hits = [w for w in windows if w["start_position"] != 0]
        assert hits, f"{example.id}: the answer is in no window"
        for window in hits:
            s, e, offsets = window["start_position"], window["end_position"], window["offsets"]
            assert 0 < s <= e and offsets[s, 0] >= 0 and offsets[e, 0] >= 0  # on context tokens
            assert example.context[offsets[s, 0] : offsets[e, 1]] == answer.text
            assert (offsets[s, 0], offsets[e, 1]) == (answer.start, answer.start + len(answer.text))
            decoded = tokenizer.decode(window["input_ids"][s : e + 1]).strip()
            assert decoded == (answer.text if kind == "roberta-bpe" else answer.text.lower())
        for window in windows:  # a window without the whole answer points at CLS
            context = window["offsets"][window["offsets"][:, 0] >= 0]
            holds = context[0, 0] <= answer.start and context[-1, 1] >= answer.start + len(answer.text)
            assert holds == (window["start_position"] != 0)
        found_in_later_window += windows.index(hits[0]) > 0
    assert found_in_later_window >= 3  # answers first seen in the 2nd (or later) window are covered


def test_unanswerable_questions_point_at_cls(workspace: Path) -> None:
    tokenizer = Tokenizer.from_dir(workspace / "tokenizer")
    data = load_squad(workspace / "train.json")
    assert data.has_impossible
    features = encode_qa(tokenizer, data.examples, 64, QAConfig(doc_stride=16))
    impossible = [f for f in features if data.examples[f["example_index"]].is_impossible]
    assert impossible and all(f["start_position"] == f["end_position"] == 0 for f in impossible)
    with pytest.raises(ConfigError, match="doc_stride"):
        encode_qa(tokenizer, data.examples, 24, QAConfig(doc_stride=16))


def _window(context_offsets: list[tuple[int, int]], question_tokens: int = 2) -> np.ndarray:
    """Offsets of ``[CLS] q... [SEP] context... [SEP]``: -1 off the context."""
    rows = [(-1, -1)] * (question_tokens + 2) + context_offsets + [(-1, -1)]
    return np.asarray(rows, dtype=np.int64)


def test_best_spans_from_hand_made_logits() -> None:
    context = "Anna was born in Lisbon in 1820."
    words = [(0, 4), (5, 8), (9, 13), (14, 16), (17, 23), (24, 26), (27, 31)]  # Anna ... 1820
    example = QAExample("q", "Where?", context, (QAAnswer("Lisbon", 17),))
    offsets = _window(words)  # positions 4..10 are the words, 0-3 CLS/question/SEP, 11 SEP
    start, end = np.zeros(12), np.zeros(12)
    start[8], end[8] = 5.0, 5.0  # "Lisbon": 10
    start[1], end[1] = 9.0, 9.0  # a question token scores higher but is not context
    start[10], end[4] = 8.0, 8.0  # "1820" ... "Anna" ends before it starts: invalid (16)
    answers, _ = best_spans([example], [0], [offsets], [start], [end])
    assert answers == ["Lisbon"]
    start[10], end[10] = 0.0, 5.5  # "Lisbon in 1820" = 5 + 5.5 beats "Lisbon" = 10
    assert best_spans([example], [0], [offsets], [start], [end])[0] == ["Lisbon in 1820"]
    assert best_spans([example], [0], [offsets], [start], [end], max_answer_length=2)[0] == ["Lisbon"]
    # Two windows: the second window's span wins; the null score is the smallest over windows.
    other_start, other_end = np.full(12, -1.0), np.full(12, -1.0)
    other_start[10], other_end[10] = 7.0, 7.0  # "1820" in window 2: 14 > 10.5
    other_start[0], other_end[0] = 6.0, 6.0  # its null score 12 (window 1's is 0)
    args = ([example], [0, 0], [offsets, offsets], [start, other_start], [end, other_end])
    answers, margins = best_spans(*args)
    assert answers == ["1820"] and margins == [pytest.approx(0.0 - 14.0)]
    start[0], end[0] = 10.0, 10.0  # window 1's null is now 20, window 2's 12: null = 12 < 14
    assert best_spans(*args, version_2=True)[0] == ["1820"]
    other_start[0] = 9.0  # null = min(20, 15) = 15 > 14: no answer in v2.0, an answer in v1.1
    assert best_spans(*args, version_2=True)[0] == [""]
    assert best_spans(*args, version_2=True, null_threshold=2.5)[0] == ["1820"]
    assert best_spans(*args, version_2=False)[0] == ["1820"]


def invoke(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_finetune_then_evaluate_qa_cli(workspace: Path) -> None:
    run, evaluation = workspace / "run", workspace / "eval"
    invoke(
        "finetune", "--task", "qa", "--model", workspace / "tiny", "--data", workspace / "train.json",
        "--validation", workspace / "dev.json", "--out", run, "--max-length", "64", "--doc-stride", "16",
        "--max-steps", "30", "--eval-every", "10", "--batch-size", "16", "--lr", "3e-3", "--threads", "1",
    )  # fmt: skip
    loaded = lmforge.load(run)
    assert loaded.config.head == "question_answering"
    assert loaded.config.extra["qa"]["doc_stride"] == 16 and loaded.config.extra["qa"]["version_2"] is True
    report = json.loads((run / "report.json").read_text())
    assert report["train_windows"] > report["train_questions"]  # some contexts needed two windows
    assert "f1" in report["best"] and "exact_match" in report["best"]
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals if e["kind"] == "eval"] == [10, 20, 30]
    assert max(e["f1"] for e in evals if e["kind"] == "eval") == pytest.approx(report["best"]["f1"])

    invoke("evaluate", "--model", run, "--data", workspace / "dev.json", "--out", evaluation)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    predictions = json.loads((evaluation / "predictions.json").read_text())
    dev = load_squad(workspace / "dev.json")
    assert list(predictions) == [e.id for e in dev.examples]
    for example in dev.examples:  # every answer is a piece of its own context, or no answer
        assert predictions[example.id] in example.context
    # metrics.json is the official scoring of predictions.json; the best checkpoint was kept
    expected = squad_metrics(
        [predictions[e.id] for e in dev.examples], [[a.text for a in e.answers] for e in dev.examples]
    )
    for key in ("exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "NoAns_total"):
        assert metrics[key] == pytest.approx(expected[key])
    assert metrics["f1"] == pytest.approx(report["best"]["f1"])
    # Raising the threshold can only turn "no answer" into an answer.
    invoke("evaluate", "--model", run, "--data", workspace / "dev.json", "--out", evaluation / "t",
           "--null-threshold", "1e9")  # fmt: skip
    assert "" not in json.loads((evaluation / "t" / "predictions.json").read_text()).values()


@pytest.mark.slow
def test_minilm_learns_synthetic_qa(tmp_path: Path) -> None:
    """Real weights: 60 steps (batch 8) on synthetic biographies answer held-out questions.

    One person per paragraph, so the model must learn which kind of span each question asks for
    (a city, a year or a job); an untrained head scores near zero. Measured: F1 93 after ~70 s on
    a busy 2-core machine (paragraphs of 1-2 people need more: F1 68 after 120 steps).
    """
    try:
        asset_path("minilm-l6")
    except AssetMissingError:
        pytest.skip("MiniLM asset not installed")
    from lmforge.data import TaskDataConfig
    from lmforge.evaluate import evaluate_predictions
    from lmforge.tasks import get_task
    from lmforge.tasks.qa import make_qa_split, predict_qa
    from lmforge.train.config import OptimConfig
    from lmforge.train.finetune import FinetuneConfig
    from lmforge.train.finetune_run import predict_dataset, run_finetune

    synthetic_squad(tmp_path / "train.json", 120, seed=11, v2=False, people=(1, 1))
    synthetic_squad(tmp_path / "test.json", 30, seed=12, v2=False, people=(1, 1))
    config = FinetuneConfig(
        task="qa", max_length=64, batch_size=8, max_steps=60, progress=False, threads=1, warmup_ratio=0.1,
        optim=OptimConfig(lr=3e-4, schedule="linear", min_lr_ratio=0.0, weight_decay=0.01),
        qa=QAConfig(doc_stride=16),
    )  # fmt: skip
    test = get_task("qa").read(tmp_path / "test.json", "test", TaskDataConfig())
    references = [[a.text for a in e.answers] for e in test.examples]
    untrained = lmforge.load("minilm-l6", head="question_answering")
    assert untrained.tokenizer is not None
    split = make_qa_split(test, untrained.tokenizer, 64, QAConfig(doc_stride=16, version_2=False), 0)
    before = evaluate_predictions("qa", predict_qa(untrained.model, split.source)[0], references)
    tick = time.perf_counter()
    run_finetune("minilm-l6", tmp_path / "train.json", tmp_path / "run", config)
    result = predict_dataset(tmp_path / "run", tmp_path / "test.json")
    metrics = evaluate_predictions("qa", result["outputs"], result["references"])
    print(
        f"MiniLM synthetic QA: F1 {before['f1']:.1f} untrained -> EM {metrics['exact_match']:.1f} "
        f"F1 {metrics['f1']:.1f} after 60 steps ({time.perf_counter() - tick:.0f} s)"
    )
    assert before["f1"] < 30.0
    assert metrics["f1"] >= 70.0


def test_window_longer_than_learned_positions_is_a_clear_error(workspace: Path) -> None:
    limit = lmforge.load(workspace / "tiny").config.max_positions
    result = runner.invoke(
        app,
        ["finetune", "--task", "qa", "--model", str(workspace / "tiny"), "--data", str(workspace / "train.json"),
         "--out", str(workspace / "too-long"), "--max-length", str(limit + 1), "--max-steps", "1"],
    )  # fmt: skip
    assert f"max_length {limit + 1} is longer than the model's {limit} learned positions" in str(
        result.exception
    )
