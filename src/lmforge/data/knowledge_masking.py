"""ERNIE's knowledge masking: masked-LM units that are tokens, phrases or named entities.

ERNIE 1.0 (Sun et al., 2019) masks whole linguistic units so that the model must recover a word
or an entity from its context rather than from its other half. Three levels:

* ``token``: every token is a unit (BERT's basic masking).
* ``phrase``: a segmented word is a unit: jieba words for Chinese, whitespace words for English
  (the word starts ``lmforge data prepare --word-segmentation`` stores).
* ``entity``: a named entity found in the text is a unit, the words around it too; an entity
  overrides the word boundaries it crosses.

Each example masks at one level drawn with the configured weights. Within an example, units are
visited in random order (at the entity level, entities first) and selected while they fit in a
budget of ``round(probability * real tokens)``, so the masked share of tokens is the masking
probability (less only where no remaining unit fits). A selected unit is then masked whole by the
80/10/10 rule, drawn once per unit: all its tokens become the mask token, or all become random
tokens, or all stay (and are still predicted).

Entities come from an :class:`EntityLexicon`: a file (one entity a line, optionally a tab and its
type; ``#`` starts a comment line) or the entities annotated in the People's Daily NER training
split (``peoples-daily-ner``). Each entity is tokenized once and found in the token ids by
longest match, so matching costs nothing at training time beyond a dictionary walk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lmforge.errors import ConfigError, DataError

__all__ = [
    "LEVELS",
    "EntityLexicon",
    "KnowledgeMasking",
    "Level",
    "check_levels",
    "read_lexicon",
    "unit_starts",
]

Level = Literal["token", "phrase", "entity"]
LEVELS: tuple[str, ...] = get_args(Level)
PEOPLES_DAILY = "peoples-daily-ner"
Encode = Callable[[str], list[int]]


def check_levels(weights: Mapping[str, float], where: str = "objective.masking_units") -> dict[str, float]:
    """Validated level weights: known levels, non-negative numbers, a positive sum."""
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError(
            f"{where}: give a mapping of masking units to weights, e.g. {{token: 0.4, entity: 0.6}}"
        )
    unknown = sorted(str(name) for name in weights if name not in LEVELS)
    if unknown:
        raise ConfigError(f"{where}: unknown masking unit {', '.join(unknown)}; use {', '.join(LEVELS)}")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ConfigError(f"{where}.{name}: weight must be a number >= 0, got {weight!r}")
    if sum(weights.values()) <= 0:
        raise ConfigError(f"{where}: the weights sum to 0; give at least one unit a positive weight")
    return {str(name): float(weight) for name, weight in weights.items()}


def read_lexicon(path: str | Path) -> list[str]:
    """Entities of a lexicon file: one a line, ``entity`` or ``entity<TAB>type``.

    Blank lines and lines starting with ``#`` are skipped. A line with more than two tab-separated
    fields, or an empty entity, is a :class:`DataError` naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: entity lexicon not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the entity lexicon as UTF-8 ({error})") from None
    entities: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise DataError(
                f"{path}:{number}: expected 'entity' or 'entity<TAB>type', got {len(fields)} fields"
            )
        entity = fields[0].strip()
        if not entity:
            raise DataError(f"{path}:{number}: empty entity")
        entities.append(entity)
    if not entities:
        raise DataError(f"{path}: the entity lexicon has no entities")
    return entities


def _peoples_daily_entities() -> list[str]:
    """The entity strings annotated in the People's Daily NER training split (BIO tags)."""
    from lmforge.data.ner import load_peoples_daily_ner

    entities: set[str] = set()
    for example in load_peoples_daily_ner("train").examples:
        start = None
        for i, tag in enumerate([*example.tags, "O"]):
            if start is not None and not tag.startswith("I-"):
                entities.add("".join(example.tokens[start:i]))
                start = None
            if tag.startswith("B-"):
                start = i
    return sorted(entities)


@dataclass
class EntityLexicon:
    """Entities as token-id sequences, found in token rows by longest match.

    Build it with :meth:`from_source` (a file or ``peoples-daily-ner``) or :meth:`from_entities`.
    """

    trie: dict[int, dict]
    num_entities: int
    source: str

    @classmethod
    def from_entities(
        cls, entities: Iterable[str], encode: Encode, source: str = "entities", unknown_id: int | None = None
    ) -> EntityLexicon:
        """Tokenize each entity with ``encode`` (no special tokens). Byte-level BPE spells a word
        after a space differently, so the space-prefixed spelling is added too; spellings with the
        unknown token would match any unknown text and are left out."""
        trie: dict[int, dict] = {}
        count = 0
        for entity in entities:
            spellings = {tuple(encode(entity)), tuple(encode(" " + entity))}
            for ids in spellings:
                if len(ids) < 1 or (unknown_id is not None and unknown_id in ids):
                    continue
                node = trie
                for token in ids:
                    node = node.setdefault(int(token), {})
                node[-1] = {}  # end of an entity
            count += 1
        return cls(trie, count, source)

    @classmethod
    def from_source(cls, source: str, encode: Encode, unknown_id: int | None = None) -> EntityLexicon:
        """``peoples-daily-ner`` or a lexicon file path (see :func:`read_lexicon`)."""
        entities = _peoples_daily_entities() if source == PEOPLES_DAILY else read_lexicon(source)
        return cls.from_entities(entities, encode, source, unknown_id)

    def spans(self, row: np.ndarray) -> list[tuple[int, int]]:
        """Non-overlapping ``(start, end)`` entity spans in a (T,) id row, longest match first."""
        spans: list[tuple[int, int]] = []
        i, length = 0, len(row)
        while i < length:
            node, j, end = self.trie, i, -1
            while j < length and int(row[j]) in node:
                node = node[int(row[j])]
                j += 1
                if -1 in node:
                    end = j
            if end > i:
                spans.append((i, end))
                i = end
            else:
                i += 1
        return spans


def unit_starts(word_starts: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """(T,) bool unit starts: words, with each entity span one unit (its inner word starts
    removed, and a unit starting right after it)."""
    starts = word_starts.copy()
    for start, end in spans:
        starts[start] = True
        starts[start + 1 : end] = False
        if end < len(starts):
            starts[end] = True
    return starts


@dataclass
class KnowledgeMasking:
    """Unit-level masking of a batch; ``levels`` maps ``token``/``phrase``/``entity`` to weights.

    Args:
        levels: weights of the masking levels (normalised here).
        special_ids: ids never masked and never drawn as replacements.
        mask_id: the mask token.
        vocab_size: random replacements are drawn below it.
        lexicon: entities, required when the ``entity`` level has weight.
        probability / mask_replace / random_replace: BERT's 0.15 and 80/10/10.
        ignore_index: the label of unselected positions.
    """

    levels: dict[str, float]
    special_ids: np.ndarray
    mask_id: int
    vocab_size: int
    lexicon: EntityLexicon | None = None
    probability: float = 0.15
    mask_replace: float = 0.8
    random_replace: float = 0.1
    ignore_index: int = -100

    def __post_init__(self) -> None:
        self.levels = check_levels(self.levels)
        if self.levels.get("entity", 0) > 0 and self.lexicon is None:
            raise ConfigError("objective.masking_units: entity units need objective.entity_lexicon")
        self._names = [name for name, weight in self.levels.items() if weight > 0]
        total = sum(self.levels[name] for name in self._names)
        self._weights = np.array([self.levels[name] / total for name in self._names])
        self._pool = np.setdiff1d(np.arange(self.vocab_size), self.special_ids)

    def __call__(
        self, input_ids: np.ndarray, word_starts: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask a (B, T) batch; ``word_starts`` (B, T) bool is needed by the phrase and entity levels.

        Returns:
            ``(inputs, labels)``, both (B, T): labels hold the original id at every selected
            position and ``ignore_index`` elsewhere.
        """
        if word_starts is None:
            self.require_words()
        inputs, labels = input_ids.copy(), np.full_like(input_ids, self.ignore_index)
        special = np.isin(input_ids, self.special_ids)
        levels = rng.choice(len(self._names), size=len(input_ids), p=self._weights)
        for row, level in enumerate(levels):
            self._mask_row(inputs[row], labels[row], special[row], word_starts, row, self._names[level], rng)
        return inputs, labels

    def require_words(self) -> None:
        """Refuse data without word boundaries when a level needs them (phrase, entity)."""
        if set(self._names) - {"token"}:
            raise ConfigError(
                "phrase and entity masking units need word boundaries: prepare the data with "
                "--word-segmentation jieba (Chinese) or whitespace (English)"
            )

    def units(
        self, ids: np.ndarray, special: np.ndarray, words: np.ndarray | None, level: str
    ) -> tuple[list[tuple[int, int]], set[int]]:
        """The maskable units of one row at ``level`` as ``(start, end)`` spans (specials are
        never part of one), and the starts of the entity units among them."""
        length = len(ids)
        if level == "token" or words is None:
            starts = np.ones(length, dtype=bool)
            entities: set[int] = set()
        else:
            spans = self.lexicon.spans(ids) if level == "entity" and self.lexicon is not None else []
            spans = [(s, e) for s, e in spans if not special[s:e].any()]
            starts = unit_starts(np.asarray(words, dtype=bool) | special, spans)
            entities = {s for s, _ in spans}
        starts = starts | special | np.roll(special, 1)  # a special token is a unit of its own
        bounds = [*np.flatnonzero(starts).tolist(), length]
        units = [(s, e) for s, e in zip(bounds[:-1], bounds[1:]) if not special[s]]
        return units, entities

    def _mask_row(
        self,
        inputs: np.ndarray,
        labels: np.ndarray,
        special: np.ndarray,
        word_starts: np.ndarray | None,
        row: int,
        level: str,
        rng: np.random.Generator,
    ) -> None:
        words = None if word_starts is None else word_starts[row]
        units, entities = self.units(inputs, special, words, level)
        budget = int(round(self.probability * int((~special).sum())))
        order = rng.permutation(len(units))
        if entities:  # entity level: entities first, the other units after, each group shuffled
            order = np.concatenate([[i for i in order if units[i][0] in entities],
                                    [i for i in order if units[i][0] not in entities]]).astype(int)  # fmt: skip
        covered = 0
        for index in order:
            if covered >= budget:
                break
            start, end = units[index]
            if covered + end - start > budget:
                continue
            covered += end - start
            labels[start:end] = inputs[start:end]
            action = rng.random()
            if action < self.mask_replace:
                inputs[start:end] = self.mask_id
            elif action < self.mask_replace + self.random_replace:
                inputs[start:end] = self._pool[rng.integers(0, len(self._pool), end - start)]
