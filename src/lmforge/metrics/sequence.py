"""Entity-level precision, recall and F1 for BIO / BIOES tag sequences (conlleval / seqeval).

An entity is a maximal chunk ``(type, start, end)`` read from the tags the way conlleval and
``seqeval``'s default mode read them, so ill-formed sequences are scored as those tools score them:
a chunk starts at ``B-`` / ``S-``, at an ``I-`` / ``E-`` after ``O`` or after another type, and ends
before ``O``, ``B-``, ``S-``, a change of type, or after ``E-`` / ``S-``. A predicted entity is
correct when type, start and end all match a true one. Micro scores count entities over all
types; macro scores average the types found in the references or the predictions (as
``seqeval.metrics.classification_report``).

Example:
    >>> get_entities(["B-PER", "I-PER", "O", "S-LOC"])
    [('PER', 0, 1), ('LOC', 3, 3)]
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from lmforge.errors import EvaluationError

__all__ = ["entity_metrics", "get_entities"]

Entity = tuple[str, int, int]  # (type, first token, last token), inclusive as in seqeval


def _split(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> (``"B"``, ``"PER"``); ``"O"`` -> (``"O"``, ``"_"``)."""
    return tag[:1], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _ends(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != kind


def _starts(prev_tag: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if tag in ("E", "I") and prev_tag in ("E", "S", "O"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def get_entities(tags: Sequence[str]) -> list[Entity]:
    """Entities ``(type, start, end)`` (end inclusive) of one tag sequence."""
    entities: list[Entity] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, kind = _split(chunk)
        if _ends(prev_tag, tag, prev_type, kind):
            entities.append((prev_type, begin, i - 1))
        if _starts(prev_tag, tag, prev_type, kind):
            begin = i
        prev_tag, prev_type = tag, kind
    return entities


def _scores(correct: int, predicted: int, true: int) -> tuple[float, float, float]:
    precision = correct / predicted if predicted else 0.0
    recall = correct / true if true else 0.0
    f1 = 2 * correct / (predicted + true) if predicted + true else 0.0
    return precision, recall, f1


def entity_metrics(
    references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]
) -> dict[str, Any]:
    """Entity P/R/F1 (micro, macro, support-weighted, per type) and token accuracy.

    Args:
        references: true tag sequences, one per sentence (``["B-PER", "I-PER", "O"]``).
        predictions: predicted tag sequences of the same lengths.

    Returns:
        ``entity_precision``, ``entity_recall``, ``entity_f1`` (micro over entities), ``macro_*``
        and ``weighted_*`` precision / recall / f1 over types,
        ``per_type`` ({type: precision, recall, f1, support}), ``token_accuracy``,
        ``num_sentences``, ``num_true_entities``, ``num_predicted_entities``.

    Raises:
        EvaluationError: different numbers of sentences, or a sentence of different lengths.
    """
    if len(references) != len(predictions):
        raise EvaluationError(f"{len(references)} reference sentences but {len(predictions)} predicted")
    true: dict[str, set[tuple[int, int, int]]] = collections.defaultdict(set)
    pred: dict[str, set[tuple[int, int, int]]] = collections.defaultdict(set)
    tokens = right = 0
    for s, (ref, hyp) in enumerate(zip(references, predictions)):
        if len(ref) != len(hyp):
            raise EvaluationError(f"sentence {s}: {len(ref)} reference tags but {len(hyp)} predicted")
        tokens += len(ref)
        right += sum(a == b for a, b in zip(ref, hyp))
        for kind, start, end in get_entities(list(ref)):
            true[kind].add((s, start, end))
        for kind, start, end in get_entities(list(hyp)):
            pred[kind].add((s, start, end))
    per_type = {}
    for kind in sorted(true.keys() | pred.keys()):
        p, r, f = _scores(len(true[kind] & pred[kind]), len(pred[kind]), len(true[kind]))
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": len(true[kind])}
    correct = sum(len(true[k] & pred[k]) for k in per_type)
    n_pred, n_true = sum(map(len, pred.values())), sum(map(len, true.values()))
    precision, recall, f1 = _scores(correct, n_pred, n_true)
    result: dict[str, Any] = {"entity_precision": precision, "entity_recall": recall, "entity_f1": f1}
    for name in ("precision", "recall", "f1"):
        values = [v[name] for v in per_type.values()]
        weights = [v["support"] for v in per_type.values()]
        result[f"macro_{name}"] = sum(values) / len(values) if values else 0.0
        result[f"weighted_{name}"] = (
            sum(v * w for v, w in zip(values, weights)) / sum(weights) if sum(weights) else 0.0
        )
    result.update(
        per_type=per_type,
        token_accuracy=right / tokens if tokens else 0.0,
        num_sentences=len(references),
        num_true_entities=n_true,
        num_predicted_entities=n_pred,
    )
    return result
