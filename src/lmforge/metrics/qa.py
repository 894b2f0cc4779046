"""SQuAD exact match and F1 with the official normalisation (v1.1 and v2.0 scripts).

An answer is normalised by lower-casing, removing ASCII punctuation (``string.punctuation``), the
articles *a*, *an*, *the*, and collapsing whitespace. EM is 1 when the normalised prediction equals
a normalised gold answer; F1 is the bag-of-tokens overlap F1 against the best gold answer. For a
v2.0 unanswerable question (no gold answers) the only right prediction is the empty string: then
EM = F1 = 1, else 0 (the v2.0 script's rule). Scores are percentages (0-100), as the official
scripts print them.

Example:
    >>> squad_metrics(["the Eiffel Tower"], [["Eiffel Tower", "The Eiffel tower in Paris"]])["exact_match"]
    100.0
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from typing import Any

from lmforge.errors import EvaluationError

__all__ = ["normalize_answer", "qa_exact_match", "qa_f1", "squad_metrics"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (official SQuAD rule)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def qa_exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def qa_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of the normalised strings; when either is empty, 1.0 only if both are."""
    predicted, true = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not true:
        return float(predicted == true)
    common = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Mean EM and F1 (0-100) over questions, with answerable / unanswerable breakdowns.

    Args:
        predictions: one answer string per question (``""`` for "no answer").
        references: the gold answer texts of each question; an empty list marks a v2.0
            unanswerable question. Gold answers that normalise to nothing are ignored (v2.0 rule).

    Returns:
        ``exact_match``, ``f1``, ``total``; ``has_answer_exact``, ``has_answer_f1``,
        ``has_answer_total`` when there are answerable questions, the ``no_answer_*`` ones when
        there are unanswerable ones; the same breakdowns also under the v2.0 script's names
        (``HasAns_exact``, ``HasAns_f1``, ``HasAns_total``, ``NoAns_*``).
    """
    if len(predictions) != len(references):
        raise EvaluationError(f"{len(predictions)} predictions but {len(references)} questions")
    if not predictions:
        raise EvaluationError("no questions to score")
    exact, f1, has_answer = [], [], []
    for prediction, golds in zip(predictions, references):
        if isinstance(golds, str):
            raise EvaluationError("each reference is a list of gold answers, not a string")
        kept = [g for g in golds if normalize_answer(g)] or [""]
        exact.append(max(qa_exact_match(prediction, g) for g in kept))
        f1.append(max(qa_f1(prediction, g) for g in kept))
        has_answer.append(bool(golds))  # v2.0 script: any gold answer at all, even one like "the"
    result: dict[str, Any] = {
        "exact_match": 100.0 * sum(exact) / len(exact),
        "f1": 100.0 * sum(f1) / len(f1),
        "total": len(exact),
    }
    for name, official, wanted in (("has_answer", "HasAns", True), ("no_answer", "NoAns", False)):
        index = [i for i, h in enumerate(has_answer) if h == wanted]
        if index:  # as the v2.0 script: HasAns_* / NoAns_* whenever such questions exist
            scores = {
                "exact": 100.0 * sum(exact[i] for i in index) / len(index),
                "f1": 100.0 * sum(f1[i] for i in index) / len(index),
                "total": len(index),
            }
            result.update({f"{name}_{k}": v for k, v in scores.items()})
            result.update({f"{official}_{k}": v for k, v in scores.items()})
    return result
