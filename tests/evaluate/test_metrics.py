"""Metric parity with the reference libraries (scikit-learn, seqeval, sacrebleu, rouge-score, nltk,
torch) and the evaluation folder that evaluate_predictions writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lmforge.errors import AssetMissingError, EvaluationError
from lmforge.evaluate import evaluate_predictions
from lmforge.metrics import generation as gen
from lmforge.metrics.calibration import probs_from_logits
from lmforge.metrics.classification import (
    average_precision,
    classification_metrics,
    multilabel_metrics,
    pr_curve,
    roc_curve,
)
from lmforge.metrics.qa import normalize_answer, squad_metrics
from lmforge.metrics.sequence import entity_metrics, get_entities


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))


def _logits(n: int, classes: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[labels]
    return (np.round(logits, 1) if ties else logits), labels


# ------------------------------------------------------------------ classification vs scikit-learn


@pytest.mark.parametrize(("classes", "ties"), [(2, False), (2, True), (4, False), (5, True)])
def test_classification_metrics_equal_sklearn(classes: int, ties: bool) -> None:
    logits, labels = _logits(300, classes, seed=classes, ties=ties)
    probs = probs_from_logits(logits)  # the same floats for both: ties must stay ties
    preds = logits.argmax(axis=1)
    every = list(range(classes))
    got = classification_metrics(labels, logits=logits)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            labels, preds, labels=every, average=average, zero_division=0
        )
        assert (got[f"{average}_precision"], got[f"{average}_recall"], got[f"{average}_f1"]) == pytest.approx(
            (p, r, f)
        )
    p, r, f, s = skm.precision_recall_fscore_support(labels, preds, labels=every, zero_division=0)
    assert [got["per_class"][str(k)]["f1"] for k in every] == pytest.approx(f.tolist())
    assert [got["per_class"][str(k)]["support"] for k in every] == s.tolist()
    assert got["confusion_matrix"] == skm.confusion_matrix(labels, preds, labels=every).tolist()
    assert got["log_loss"] == pytest.approx(skm.log_loss(labels, probs, labels=every), rel=1e-9)
    if classes == 2:
        assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs[:, 1]))
        assert got["pr_auc"] == pytest.approx(skm.average_precision_score(labels, probs[:, 1]))
    else:
        assert got["roc_auc"] == pytest.approx(
            skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        )
        onehot = np.eye(classes)[labels]
        assert got["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, probs, average="macro"))


def test_absent_class_counts_as_zero_in_macro_average() -> None:
    labels, preds = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    got = classification_metrics(labels, predictions=preds, label_names=["a", "b", "c"])
    expected = skm.f1_score(labels, preds, labels=[0, 1, 2], average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(expected) and got["per_class"]["c"]["support"] == 0


def test_roc_and_pr_curve_points_equal_sklearn() -> None:
    logits, labels = _logits(200, 2, seed=7, ties=True)
    scores, positive = logits[:, 1] - logits[:, 0], labels == 1
    fpr, tpr, thresholds = roc_curve(scores, positive)
    ref = skm.roc_curve(positive, scores, drop_intermediate=False)
    for mine, theirs in zip((fpr, tpr, thresholds), ref):
        np.testing.assert_allclose(mine, theirs)
    precision, recall, cut = pr_curve(scores, positive)
    ref = skm.precision_recall_curve(positive, scores)
    for mine, theirs in zip((precision, recall, cut), ref):
        np.testing.assert_allclose(mine, theirs)
    assert average_precision(scores, positive) == pytest.approx(skm.average_precision_score(positive, scores))


def test_multilabel_metrics_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    targets = (rng.random((120, 4)) < 0.4).astype(int)
    logits = rng.normal(size=(120, 4)) + 2.0 * (targets - 0.5)
    probs = 1 / (1 + np.exp(-logits))
    predicted = (probs >= 0.5).astype(int)
    got = multilabel_metrics(targets, logits=logits)
    assert got["subset_accuracy"] == pytest.approx(skm.accuracy_score(targets, predicted))
    assert got["hamming_loss"] == pytest.approx(skm.hamming_loss(targets, predicted))
    for average in ("micro", "macro"):
        assert got[f"{average}_f1"] == pytest.approx(
            skm.f1_score(targets, predicted, average=average, zero_division=0)
        )
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(targets, probs, average="macro"))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(targets, probs, average="macro"))


def test_classification_input_errors() -> None:
    with pytest.raises(EvaluationError, match="3 labels but 2 predictions"):
        classification_metrics([0, 1, 1], predictions=[0, 1])
    with pytest.raises(EvaluationError, match="only 2 classes"):
        classification_metrics([0, 2], logits=np.zeros((2, 2)))


# ------------------------------------------------------------------ entity F1 vs seqeval


def _random_tags(rng: np.random.Generator, scheme: str, lengths: list[int]) -> list[list[str]]:
    prefixes = ["B", "I"] if scheme == "BIO" else ["B", "I", "E", "S"]
    sentences = []
    for length in lengths:
        tags = []
        for _ in range(length):  # random, so often ill-formed (I- after O, type switches)
            if rng.random() < 0.4:
                tags.append("O")
            else:
                tags.append(f"{rng.choice(prefixes)}-{rng.choice(['PER', 'LOC', 'ORG'])}")
        sentences.append(tags)
    return sentences


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_entity_metrics_equal_seqeval(scheme: str) -> None:
    seqeval = pytest.importorskip("seqeval.metrics")
    from seqeval.metrics.sequence_labeling import get_entities as seqeval_entities

    rng = np.random.default_rng(11)
    truth = _random_tags(rng, scheme, [int(n) for n in rng.integers(1, 15, 60)])
    # half: the truth with some tags dropped (partial matches); half: unrelated random tags
    predicted = [[t if rng.random() < 0.7 else "O" for t in s] for s in truth[:30]]
    predicted += _random_tags(rng, scheme, [len(s) for s in truth[30:]])
    for sentence in truth:
        assert get_entities(sentence) == seqeval_entities(sentence)
    got = entity_metrics(truth, predicted)
    assert got["entity_precision"] == pytest.approx(seqeval.precision_score(truth, predicted))
    assert got["entity_recall"] == pytest.approx(seqeval.recall_score(truth, predicted))
    assert got["entity_f1"] == pytest.approx(seqeval.f1_score(truth, predicted))
    assert got["token_accuracy"] == pytest.approx(seqeval.accuracy_score(truth, predicted))
    report = seqeval.classification_report(truth, predicted, output_dict=True, zero_division=0)
    for kind, values in got["per_type"].items():
        assert values["f1"] == pytest.approx(report[kind]["f1-score"])
        assert values["support"] == report[kind]["support"]
    assert got["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert got["weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])


def test_entity_metrics_by_hand() -> None:
    truth = [["B-PER", "I-PER", "O", "B-LOC"]]
    got = entity_metrics(truth, [["B-PER", "I-PER", "O", "O"]])
    assert (got["entity_precision"], got["entity_recall"]) == (1.0, 0.5)
    with pytest.raises(EvaluationError, match="sentence 0: 4 reference tags but 3"):
        entity_metrics(truth, [["O", "O", "O"]])


# ------------------------------------------------------------------ SQuAD EM / F1


def test_squad_official_normalisation_and_scores() -> None:
    assert normalize_answer("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    got = squad_metrics(
        ["Eiffel Tower", "in 1889 it opened", "", "Paris"],
        [["the Eiffel Tower."], ["1889", "It opened in 1889"], [], []],
    )
    # q1 EM; q2 F1 max(2*(1/4*1)/(1/4+1)=0.4, 1.0 for the exact token bag) = 1.0, EM 0; q3 right
    # "no answer"; q4 answered an impossible question: 0
    assert got["exact_match"] == pytest.approx(50.0)
    assert got["f1"] == pytest.approx(75.0)
    assert (got["has_answer_total"], got["no_answer_total"], got["no_answer_exact"]) == (2, 2, 50.0)
    partial = squad_metrics(["Paris France"], [["Paris"]])
    assert partial["f1"] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5) and partial["exact_match"] == 0.0


# ------------------------------------------------------------------ generation metrics


_HYPS = ["the cat sat on the mat", "a quick brown fox jumps", "hello there world"]
_REFS = [
    ["the cat is on the mat", "there is a cat on the mat"],
    ["the quick brown fox jumps"],
    ["hello world"],
]


def test_bleu_and_chrf_equal_sacrebleu() -> None:
    import sacrebleu

    streams = [[r[0] for r in _REFS], [r[1] if len(r) > 1 else None for r in _REFS]]
    assert gen.bleu(_HYPS, _REFS)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(_HYPS, streams).score)
    assert gen.chrf(_HYPS, _REFS)["chrf"] == pytest.approx(sacrebleu.corpus_chrf(_HYPS, streams).score)
    ja_h, ja_r = ["元始に神天地を創造たまへり"], ["元始に神天地を創造りたまへり"]
    char = gen.bleu(ja_h, ja_r, tokenize="char")
    assert char["bleu"] == pytest.approx(sacrebleu.corpus_bleu(ja_h, [ja_r], tokenize="char").score)
    assert "tok:char" in char["bleu_signature"] and char["bleu"] > 0


def test_rouge_equals_rouge_score() -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    got = gen.rouge(_HYPS, _REFS)
    for name in ("rouge1", "rouge2", "rougeL"):
        expected = np.mean([scorer.score_multi(r, h)[name].fmeasure for h, r in zip(_HYPS, _REFS)])
        assert got[name] == pytest.approx(expected)
    assert gen.rouge(["天気がいい"], ["今日は天気がいい"], tokenizer="char")["rouge1"] == pytest.approx(
        2 * 5 / 13
    )


def test_meteor_equals_nltk_or_says_how_to_install_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        got = gen.meteor(_HYPS, _REFS)
    except AssetMissingError as error:
        assert "apt-get install wordnet-base" in str(error)
        pytest.skip(f"WordNet not installed here: {error}")
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    expected = np.mean(
        [meteor_score([x.split() for x in r], h.split(), wordnet=wordnet) for h, r in zip(_HYPS, _REFS)]
    )
    assert got["meteor"] == pytest.approx(expected) and 0 < got["meteor"] < 1


def test_meteor_without_wordnet_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    def not_found(*args: object, **kwargs: object) -> None:
        raise LookupError("no wordnet")

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setattr(gen, "_WORDNET_DIRS", ())
    monkeypatch.delenv("LMFORGE_WORDNET_DIR", raising=False)
    with pytest.raises(
        AssetMissingError, match="WordNet 3.0.*apt-get install wordnet-base wordnet-sense-index"
    ):
        gen.meteor(_HYPS, _REFS)
    notes = gen.generation_metrics(_HYPS, _REFS, metrics=("chrf", "meteor"))
    assert "meteor" not in notes and "meteor skipped" in notes["notes"][0]


def test_perplexity_equals_torch_cross_entropy() -> None:
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 7, 11), torch.randint(0, 11, (3, 7))
    lengths = [7, 4, 6]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    sums = [float(nll[i, :n].sum()) for i, n in enumerate(lengths)]
    expected = math.exp(float(torch.cat([nll[i, :n] for i, n in enumerate(lengths)]).mean()))
    got = gen.perplexity_metrics(sums, lengths)
    assert got["perplexity"] == pytest.approx(expected) and got["num_tokens"] == 17
    assert got["bits_per_token"] == pytest.approx(math.log2(expected))


# ------------------------------------------------------------------ evaluate_predictions and its files


def test_classification_evaluation_folder(tmp_path: Path) -> None:
    logits, labels = _logits(80, 3, seed=5)
    names = ["neg", "neutral", "pos"]
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "".join(
            json.dumps({"kind": "train", "step": s, "loss": 2 / s, "lr": 1e-4}) + "\n" for s in range(1, 6)
        )
        + json.dumps({"kind": "eval", "step": 5, "val_loss": 0.5, "accuracy": 0.8})
        + '\n{"step": 6, "lo'  # the cut last line of a killed run
    )
    out = tmp_path / "eval"
    result = evaluate_predictions(
        "classification",
        None,
        [names[k] for k in labels],
        names,
        logits=torch.tensor(logits),
        out_dir=out,
        metrics_log=log,
    )
    assert result["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    on_disk = json.loads(
        (out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}")
    )
    assert on_disk["macro_f1"] == pytest.approx(result["macro_f1"]) and on_disk["task"] == "classification"
    saved = np.load(out / "logits.npz", allow_pickle=False)
    assert saved["logits"].shape == (80, 3) and saved["logits"].dtype == np.float32
    assert saved["labels"].tolist() == labels.tolist() and saved["label_names"].tolist() == names
    for name in ("roc_curve", "pr_curve", "confusion_matrix", "learning_curves"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "summary.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "macro_f1" in page and "neutral" in page
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporary files


def test_evaluate_predictions_other_tasks() -> None:
    names = ["O", "B-PER", "I-PER"]
    ner = evaluate_predictions(
        "token-classification", [[0, 1, 2, 0], [1, 0]], [[-100, 1, 2, 0], [1, -100]], names
    )  # -100: positions without a label (special tokens, later sub-words)
    assert ner["entity_f1"] == 1.0 and ner["num_true_entities"] == 2
    qa = evaluate_predictions("qa", ["Paris"], [["Paris", "in Paris"]])
    assert qa["exact_match"] == 100.0
    mt = evaluate_predictions("translation", _HYPS, _REFS, generation=("bleu", "chrf"))
    assert mt["bleu"] > 0 and "rouge1" not in mt
    lm = evaluate_predictions("lm", [2.0, 4.0], [2, 2])
    assert lm["perplexity"] == pytest.approx(math.exp(1.5))
    multi = evaluate_predictions(
        "classification",
        references=[(0, 2), (1,)],
        logits=[[3.0, -3.0, 2.0], [-1.0, 4.0, -2.0]],
        multi_label=True,
    )
    assert multi["accuracy"] == 1.0 and multi["micro_f1"] == 1.0
    with pytest.raises(EvaluationError, match="unknown task"):
        evaluate_predictions("regression", [1], [1])
    with pytest.raises(EvaluationError, match="pass label_names"):
        evaluate_predictions("classification", ["pos"], ["neg"])
