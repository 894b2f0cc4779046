"""Synthetic SQuAD-style data for the QA tests: biographies with born-in / worked-as facts.

No QA data set ships offline, so the tests write small SQuAD v1.1 / v2.0 JSON files from
templates. Each paragraph holds several people; a question names one of them, so answering
needs the question (a single "city" guess per paragraph is wrong for all but one).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

FIRST = ["Anna", "Boris", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
         "Karin", "Lukas", "Maria", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tilda", "Viktor"]  # fmt: skip
LAST = ["Smith", "Novak", "Berg", "Costa", "Dahl", "Engel", "Fischer", "Horvat", "Ivanov", "Jensen",
        "Keller", "Larsen", "Moreau", "Nagy", "Olsen", "Petrov", "Quist", "Rossi", "Sato", "Weber"]  # fmt: skip
CITIES = ["Lisbon", "Vienna", "Oslo", "Prague", "Dublin", "Madrid", "Warsaw", "Athens", "Berlin",
          "Helsinki", "Budapest", "Zurich", "Milan", "Lyon", "Porto", "Krakow"]  # fmt: skip
JOBS = ["baker", "painter", "doctor", "sailor", "teacher", "carpenter", "lawyer", "farmer",
        "engineer", "musician", "tailor", "chemist"]  # fmt: skip


def _paragraph(rng: random.Random, people: int, v2: bool, index: int) -> dict[str, Any]:
    names = rng.sample([f"{f} {s}" for f in FIRST for s in LAST], people + 1)
    absent, present = names[0], names[1:]
    context, qas = "", []
    for k, name in enumerate(present):
        city, year, job = rng.choice(CITIES), rng.randint(1700, 1990), rng.choice(JOBS)
        sentence = f"{name} was born in {city} in {year}. Later {name.split()[0]} worked as a {job}. "
        base = len(context)
        context += sentence
        facts = {
            f"Where was {name} born?": city,
            f"In which year was {name} born?": str(year),
            f"What did {name} work as?": job,
        }
        question, answer = rng.choice(sorted(facts.items()))
        # the answer's own occurrence in this person's sentence, not an earlier person's
        start = base + sentence.index(answer if answer != job else f"a {job}") + (2 if answer == job else 0)
        qas.append({"id": f"q{index}-{k}", "question": question,
                    "answers": [{"text": answer, "answer_start": start}]})  # fmt: skip
    if v2:
        qas.append({"id": f"q{index}-none", "question": f"Where was {absent} born?", "answers": [],
                    "is_impossible": True})  # fmt: skip
    return {"context": context.strip(), "qas": qas}


def synthetic_squad(
    path: Path, paragraphs: int, seed: int, v2: bool = False, people: tuple[int, int] = (1, 3)
) -> Path:
    """Write a SQuAD-style JSON of ``paragraphs`` paragraphs of ``people`` (min, max) persons."""
    rng = random.Random(seed)
    data = [{"title": f"p{i}", "paragraphs": [_paragraph(rng, rng.randint(*people), v2, seed * 10_000 + i)]}
            for i in range(paragraphs)]  # fmt: skip
    path.write_text(json.dumps({"version": "v2.0" if v2 else "1.1", "data": data}), encoding="utf-8")
    return path
