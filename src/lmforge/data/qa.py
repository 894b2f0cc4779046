"""Extractive question answering data: SQuAD v1.1 and v2.0 JSON files.

The file is ``{"version": ..., "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``. A v2.0 question with
``is_impossible: true`` has no answer (its ``plausible_answers`` are kept aside, never used as
gold). Answer offsets are checked against the context; an answer whose text sits one or two
characters away from its ``answer_start`` (a few exist in the official files) is moved there and
counted, any other mismatch is a bad record.

JSON has no useful line numbers, so errors name the record path, e.g.
``dev.json: data[3].paragraphs[1].qas[0] (id 5733be28...)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.data.readers import ErrorLog, OnError
from lmforge.errors import DataError

__all__ = ["QAAnswer", "QAData", "QAExample", "load_squad"]

_SHIFT = 2  # characters an answer_start may be off by before the record is called bad


@dataclass(frozen=True)
class QAAnswer:
    """One gold answer: its text and character offset in the context."""

    text: str
    start: int


@dataclass(frozen=True)
class QAExample:
    """One question about one context.

    Attributes:
        id: the question id.
        question: the question.
        context: the paragraph.
        answers: gold answers (several annotators may agree or differ); empty when impossible.
        is_impossible: SQuAD v2.0 unanswerable question.
        title: the article title.
    """

    id: str
    question: str
    context: str
    answers: tuple[QAAnswer, ...]
    is_impossible: bool = False
    title: str = ""


@dataclass
class QAData:
    """Questions of one file.

    Attributes:
        examples: the questions, in file order.
        version: the file's ``version`` field.
        source: the file path.
        info: counts (questions, impossible, answers moved to their text, skipped).
    """

    examples: list[QAExample]
    version: str = ""
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def has_impossible(self) -> bool:
        return any(e.is_impossible for e in self.examples)


def _aligned(context: str, text: str, start: Any) -> int | None:
    """The offset where ``text`` sits at or within ``_SHIFT`` characters of ``start``, else None."""
    if not isinstance(start, int) or isinstance(start, bool):
        return None
    for shift in sorted(range(-_SHIFT, _SHIFT + 1), key=abs):
        at = start + shift
        if at >= 0 and context[at : at + len(text)] == text:
            return at
    return None


def _answers(
    raw: Any, context: str, where: str, errors: ErrorLog, counts: dict[str, int]
) -> list[QAAnswer] | None:
    if not isinstance(raw, list):
        errors.bad(where, None, "'answers' is not a list")
        return None
    answers = []
    for j, answer in enumerate(raw):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) or not answer["text"]:
            errors.bad(where, None, f"answers[{j}] has no 'text'")
            return None
        text, start = answer["text"], answer.get("answer_start")
        at = _aligned(context, text, start)
        if at is None:
            errors.bad(
                where, None, f"answers[{j}] {text[:40]!r} is not in the context at answer_start={start!r}"
            )
            return None
        counts["answers_moved"] += at != start
        answers.append(QAAnswer(text, at))
    return answers


def load_squad(path: str | Path, *, on_error: OnError = "raise", limit: int | None = None) -> QAData:
    """Load a SQuAD v1.1 / v2.0 JSON file.

    Args:
        path: the ``.json`` file (e.g. ``train-v2.0.json``).
        on_error: ``"raise"`` at the first bad question (naming its record path and id) or
            ``"skip"`` and count it.
        limit: read at most this many questions.

    Raises:
        DataError: unreadable file, no ``data`` list, question without id / question / context,
            an answerable question without answers, or an answer not found in its context.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read ({error})") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from error
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file: expected an object with a 'data' list of articles")
    errors = ErrorLog(on_error)
    counts = {"questions": 0, "impossible": 0, "answers_moved": 0}
    examples: list[QAExample] = []
    for a, article in enumerate(document["data"]):
        title = article.get("title", "") if isinstance(article, dict) else ""
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            errors.bad(f"{path}: data[{a}]", None, "no 'paragraphs' list")
            continue
        for p, paragraph in enumerate(paragraphs):
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
            if not isinstance(context, str) or not isinstance(qas, list):
                errors.bad(
                    f"{path}: data[{a}].paragraphs[{p}]", None, "needs a 'context' string and a 'qas' list"
                )
                continue
            for q, qa in enumerate(qas):
                if limit is not None and len(examples) >= limit:
                    break
                qid = qa.get("id") if isinstance(qa, dict) else None
                where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}] (id {qid})"
                question = qa.get("question") if isinstance(qa, dict) else None
                if not isinstance(qid, str) or not isinstance(question, str) or not question.strip():
                    errors.bad(where, None, "needs an 'id' and a non-empty 'question'")
                    continue
                impossible = bool(qa.get("is_impossible", False))
                answers = _answers(qa.get("answers", []), context, where, errors, counts)
                if answers is None:
                    continue
                if not impossible and not answers:
                    errors.bad(where, None, "no answers and not is_impossible")
                    continue
                if impossible:  # v2.0 lists no gold answers for these; ignore any that are there
                    answers = []
                counts["questions"] += 1
                counts["impossible"] += impossible
                examples.append(
                    QAExample(qid, question.strip(), context, tuple(answers), impossible, str(title))
                )
    errors.require(path, examples, "questions")
    return QAData(examples, str(document.get("version", "")), str(path), errors.info(path, **counts))
