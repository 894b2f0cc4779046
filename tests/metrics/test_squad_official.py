"""`squad_metrics` against the official SQuAD v1.1 and v2.0 evaluation scripts.

The scripts (``evaluate-v1.1.py``, ``evaluate-v2.0.py``) are not packaged; their scoring functions
are reproduced below as published (comments trimmed, the v2.0 no-answer-probability part left
out: it is off without ``--na-prob-file``), and both are fed the same random predictions.
"""

from __future__ import annotations

import collections
import random
import re
import string
from collections import Counter
from typing import Any

import pytest

from lmforge.metrics.qa import squad_metrics

# -- evaluate-v1.1.py ------------------------------------------------------------------------------


def v1_normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def v1_f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = v1_normalize_answer(prediction).split()
    ground_truth_tokens = v1_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def v1_exact_match_score(prediction: str, ground_truth: str) -> bool:
    return v1_normalize_answer(prediction) == v1_normalize_answer(ground_truth)


def v1_evaluate(dataset: list[dict[str, Any]], predictions: dict[str, str]) -> dict[str, float]:
    f1 = exact_match = total = 0.0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(v1_exact_match_score(prediction, g) for g in ground_truths)
                f1 += max(v1_f1_score(prediction, g) for g in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# -- evaluate-v2.0.py ------------------------------------------------------------------------------


def v2_get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return v1_normalize_answer(s).split()  # the v2.0 normalize_answer is the v1.1 one


def v2_compute_exact(a_gold: str, a_pred: str) -> int:
    return int(v1_normalize_answer(a_gold) == v1_normalize_answer(a_pred))


def v2_compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = v2_get_tokens(a_gold)
    pred_toks = v2_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def v2_evaluate(dataset: list[dict[str, Any]], preds: dict[str, str]) -> dict[str, float]:
    qid_to_has_ans = {
        qa["id"]: bool(qa["answers"]) for a in dataset for p in a["paragraphs"] for qa in p["qas"]
    }
    exact_scores, f1_scores = {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                gold_answers = [a["text"] for a in qa["answers"] if v1_normalize_answer(a["text"])]
                if not gold_answers:
                    gold_answers = [""]
                a_pred = preds[qa["id"]]
                exact_scores[qa["id"]] = max(v2_compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qa["id"]] = max(v2_compute_f1(a, a_pred) for a in gold_answers)

    def make_eval_dict(qid_list: list[str]) -> dict[str, float]:
        total = len(qid_list)
        return {
            "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
            "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
            "total": total,
        }

    out = make_eval_dict(list(exact_scores))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in qid_to_has_ans.items() if v == wanted]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in make_eval_dict(qids).items()})
    return out


# -- the comparison --------------------------------------------------------------------------------

WORDS = [
    "the",
    "a",
    "An",
    "Eiffel",
    "tower",
    "Paris,",
    "France.",
    "in",
    "1889",
    "Gustave",
    "(Eiffel)",
    "iron",
]


def _random_dataset(
    rng: random.Random, n: int, impossible: float, empty_golds: bool
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Questions with 1-3 gold answers (none when impossible) and predictions: empty, a gold, or noise.

    ``empty_golds``: golds may normalise to nothing ("the a", "The"). The v2.0 script drops such
    golds (and so does ``squad_metrics``); v1.1 keeps them, but SQuAD v1.1 has none.
    """

    def phrase() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))

    def gold() -> str:
        text = phrase()
        while not empty_golds and not v1_normalize_answer(text):
            text = phrase()
        return text

    qas, predictions = [], {}
    for i in range(n):
        answers = [] if rng.random() < impossible else [{"text": gold()} for _ in range(rng.randint(1, 3))]
        if answers and empty_golds and rng.random() < 0.05:
            answers = [{"text": "The"}]  # normalises to nothing: still a "has answer" question
        qas.append({"id": f"q{i}", "answers": answers})
        roll = rng.random()
        predictions[f"q{i}"] = (
            "" if roll < 0.2 else answers[0]["text"] if answers and roll < 0.4 else phrase()
        )
    return [{"paragraphs": [{"qas": qas}]}], predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_squad_metrics_match_the_official_scripts(seed: int) -> None:
    rng = random.Random(seed)
    # v1.1: every question answerable
    dataset, predictions = _random_dataset(rng, 300, impossible=0.0, empty_golds=False)
    qas = dataset[0]["paragraphs"][0]["qas"]
    ours = squad_metrics(
        [predictions[q["id"]] for q in qas], [[a["text"] for a in q["answers"]] for q in qas]
    )
    official = v1_evaluate(dataset, predictions)
    assert ours["exact_match"] == pytest.approx(official["exact_match"])
    assert ours["f1"] == pytest.approx(official["f1"])
    # v2.0: a third unanswerable
    dataset, predictions = _random_dataset(rng, 300, impossible=0.33, empty_golds=True)
    qas = dataset[0]["paragraphs"][0]["qas"]
    ours = squad_metrics(
        [predictions[q["id"]] for q in qas], [[a["text"] for a in q["answers"]] for q in qas]
    )
    official2 = v2_evaluate(dataset, predictions)
    assert ours["exact_match"] == pytest.approx(official2.pop("exact"))
    for key, value in official2.items():  # f1, total, HasAns_* and NoAns_*
        assert ours[key] == pytest.approx(value), key
