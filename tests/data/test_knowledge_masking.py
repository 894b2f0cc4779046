"""ERNIE's knowledge masking: every masked span is a whole unit (token, word or entity), the
masking rate holds, 80/10/10 applies per unit, entities come first; lexicons and bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmforge.data.knowledge_masking import EntityLexicon, KnowledgeMasking, read_lexicon, unit_starts
from lmforge.errors import ConfigError, DataError

PAD, CLS, SEP, MASK = 0, 2, 3, 4
SPECIAL = np.array([0, 1, 2, 3, 4])
VOCAB = 60
# Entities as token ids: found in rows by longest match ([20, 21, 22] wins over [20, 21]).
ENTITIES = {"e1": [20, 21], "e2": [20, 21, 22], "e3": [30, 31, 32, 33]}


def _lexicon() -> EntityLexicon:
    return EntityLexicon.from_entities(ENTITIES, lambda text: ENTITIES.get(text.strip(), []), "test")


def _batch(rows: int = 400, length: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[CLS] ... [SEP] ... [SEP] [PAD]* rows with planted entities and words of ~2.5 tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(8, VOCAB, (rows, length))
    for row in ids:
        for start in rng.choice(np.arange(2, length - 12, 5), 3, replace=False):
            entity = ENTITIES[str(rng.choice(list(ENTITIES)))]
            row[start : start + len(entity)] = entity
    ids[:, 0] = CLS
    ids[:, length // 2] = SEP
    ends = rng.integers(length - 8, length, rows)
    for row, end in zip(ids, ends):
        row[end] = SEP
        row[end + 1 :] = PAD
    words = rng.random(ids.shape) < 0.4
    return ids, words


def _masking(**levels: float) -> KnowledgeMasking:
    return KnowledgeMasking(dict(levels), SPECIAL, MASK, VOCAB, _lexicon())


def _assert_whole_units(masking: KnowledgeMasking, ids: np.ndarray, words: np.ndarray, level: str) -> int:
    """Every unit of ``level`` is labelled entirely or not at all; returns how many were chosen."""
    inputs, labels = masking(ids, words, np.random.default_rng(7))
    chosen = 0
    for row in range(len(ids)):
        special = np.isin(ids[row], SPECIAL)
        units, _ = masking.units(ids[row], special, words[row], level)
        selected = labels[row] != -100
        assert not (selected & special).any(), "special tokens are never selected"
        covered = 0
        for start, end in units:
            picked = selected[start:end]
            assert picked.all() or not picked.any(), (level, row, start, end)
            if picked.all():
                chosen += 1
                covered += end - start
                values = inputs[row, start:end]
                # 80/10/10 per unit: all masked, or none masked (random or unchanged).
                assert (values == MASK).all() or not (values == MASK).any()
        assert covered == selected.sum(), "a selected position outside every unit"
        assert np.array_equal(labels[row][selected], ids[row][selected])
        assert (inputs[row][~selected] == ids[row][~selected]).all()
    return chosen


@pytest.mark.parametrize("level", ["token", "phrase", "entity"])
def test_every_masked_span_is_a_whole_unit(level: str) -> None:
    ids, words = _batch()
    assert _assert_whole_units(_masking(**{level: 1.0}), ids, words, level) > 1000


def test_entity_units_override_word_boundaries() -> None:
    words = np.array([True, False, True, True, True, False, True])
    starts = unit_starts(words, [(1, 4)])  # an entity over tokens 1..3 crossing two words
    assert starts.tolist() == [True, True, False, False, True, False, True]
    row = np.array([9, 20, 21, 22, 20, 21, 8, 30, 31, 32, 33, 30, 31])
    assert _lexicon().spans(row) == [(1, 4), (4, 6), (7, 11)]  # longest match; [30, 31] alone is none


@pytest.mark.parametrize(
    "levels", [{"token": 1.0}, {"phrase": 1.0}, {"entity": 1.0}, {"token": 1, "entity": 2}]
)
def test_masking_rate_holds(levels: dict[str, float]) -> None:
    ids, words = _batch(seed=1)
    inputs, labels = _masking(**levels)(ids, words, np.random.default_rng(3))
    special = np.isin(ids, SPECIAL)
    budget = np.round(0.15 * (~special).sum(axis=1))
    per_row = (labels != -100).sum(axis=1)
    assert (per_row <= budget).all(), "a row masked more than its budget"
    assert per_row.sum() >= 0.97 * budget.sum(), "units left the budget unfilled"
    rate = per_row.sum() / (~special).sum()
    assert rate == pytest.approx(0.15, abs=0.005)  # round(0.15 * n) per row


def test_80_10_10_is_drawn_once_per_unit() -> None:
    ids, words = _batch(rows=1500, seed=2)
    masking = _masking(phrase=1.0)
    inputs, labels = masking(ids, words, np.random.default_rng(4))
    masked = kept = randomised = 0
    for row in range(len(ids)):
        units, _ = masking.units(ids[row], np.isin(ids[row], SPECIAL), words[row], "phrase")
        for start, end in units:
            if labels[row, start] == -100:
                continue
            values, original = inputs[row, start:end], ids[row, start:end]
            if (values == MASK).all():
                masked += 1
            elif (values == original).all():
                kept += 1  # (a random draw equal to every original token counts here: rare)
            else:
                randomised += 1
                assert not np.isin(values, SPECIAL).any()
    total = masked + kept + randomised
    assert total > 5000
    assert masked / total == pytest.approx(0.8, abs=0.015)
    assert randomised / total == pytest.approx(0.1, abs=0.012)
    assert kept / total == pytest.approx(0.1, abs=0.012)


def test_entity_level_masks_entities_first() -> None:
    ids, words = _batch(seed=3)
    masking = _masking(entity=1.0)
    _, labels = masking(ids, words, np.random.default_rng(5))
    entity_tokens = np.zeros(ids.shape, dtype=bool)
    for row in range(len(ids)):
        for start, end in _lexicon().spans(ids[row]):
            entity_tokens[row, start:end] = True
    selected = labels != -100
    # Entities hold ~20% of the tokens but take most of a 15% budget.
    assert selected[entity_tokens].mean() > 0.5
    assert selected[~entity_tokens & ~np.isin(ids, SPECIAL)].mean() < 0.05


def test_levels_are_drawn_per_example_with_their_weights() -> None:
    """Rows drawn at the phrase level keep every word whole; rows at the token level split words."""
    ids, words = _batch(rows=2000, seed=4)
    masking = _masking(token=0.25, phrase=0.75)
    _, labels = masking(ids, words, np.random.default_rng(0))
    # The level of each row is the masking generator's first draw.
    levels = np.random.default_rng(0).choice(2, size=len(ids), p=[0.25, 0.75])
    assert np.mean(levels == 0) == pytest.approx(0.25, abs=0.03)
    split_rows = {0: 0, 1: 0}
    for row, level in enumerate(levels):
        special = np.isin(ids[row], SPECIAL)
        units, _ = masking.units(ids[row], special, words[row], "phrase")
        selected = labels[row] != -100
        split_rows[int(level)] += any(0 < selected[s:e].sum() < e - s for s, e in units)
    assert split_rows[1] == 0, "a phrase-level row split a word"
    assert split_rows[0] > 0.5 * np.sum(levels == 0), "token-level rows mask tokens, not words"
    assert masking(ids, words, np.random.default_rng(0))[1].tolist() == labels.tolist()  # seeded


def test_chinese_entities_and_jieba_words_stay_whole(tmp_path: Path) -> None:
    """Real text: a WordPiece tokenizer (one token per character), jieba word starts, a lexicon
    file with 北京大学 and 中国人民银行: each masked span is one of those entities or one word."""
    from lmforge.data.segment import jieba_word_starts
    from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

    lines = [
        "北京大学的学生在中国人民银行实习。",
        "中国人民银行发布了新的政策，北京大学的教授表示欢迎。",
    ] * 20
    tokenizer = train_tokenizer(lines, TokenizerTrainConfig(kind="wordpiece", vocab_size=34, family="bert"))
    lexicon_file = tmp_path / "entities.txt"
    lexicon_file.write_text("# organisations\n北京大学\tORG\n中国人民银行\tORG\n\n", encoding="utf-8")
    backend = tokenizer.backend
    lexicon = EntityLexicon.from_source(
        str(lexicon_file), lambda t: backend.encode(t, add_special_tokens=False).ids
    )
    assert lexicon.num_entities == 2
    encodings = [backend.encode(text, add_special_tokens=False) for text in lines[:2]]
    length = max(len(e.ids) for e in encodings)
    ids = np.zeros((2, length), dtype=np.int64)
    words = np.ones((2, length), dtype=bool)
    for row, (text, encoding) in enumerate(zip(lines, encodings)):
        ids[row, : len(encoding.ids)] = encoding.ids
        words[row, : len(encoding.ids)] = jieba_word_starts(text, [s for s, _ in encoding.offsets])
    specials = np.array(
        sorted(
            tokenizer.special_token_id(n)
            for n in ("pad_token", "cls_token", "sep_token", "mask_token", "unk_token")
        )
    )
    masking = KnowledgeMasking(
        {"entity": 1.0},
        specials,
        int(tokenizer.special_token_id("mask_token")),
        len(tokenizer),
        lexicon,
        probability=0.4,
    )
    entity_ids = [backend.encode(e, add_special_tokens=False).ids for e in ("北京大学", "中国人民银行")]
    found = set()
    for seed in range(20):
        _, labels = masking(ids, words, np.random.default_rng(seed))
        units = [masking.units(ids[r], np.isin(ids[r], specials), words[r], "entity")[0] for r in range(2)]
        for row in range(2):
            for start, end in units[row]:
                picked = labels[row, start:end] != -100
                assert picked.all() or not picked.any()
                if picked.all() and ids[row, start:end].tolist() in entity_ids:
                    found.add(tuple(ids[row, start:end].tolist()))
    assert len(found) == 2, "both entities were masked whole at some seed"


def test_lexicon_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.tsv"
    path.write_text("北京\tLOC\n上海\tLOC\textra\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=r"lexicon.tsv:2: expected 'entity' or 'entity<TAB>type', got 3 fields"
    ):
        read_lexicon(path)
    path.write_text("北京\n\tLOC\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lexicon.tsv:2: empty entity"):
        read_lexicon(path)
    path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match="UTF-8"):
        read_lexicon(path)
    with pytest.raises(DataError, match="not found"):
        read_lexicon(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ({"word": 1.0}, "unknown masking unit word; use token, phrase, entity"),
        ({"token": -1}, "weight must be a number >= 0"),
        ({"token": 0}, "sum to 0"),
        ({}, "give a mapping"),
    ],
)
def test_bad_levels_are_refused(levels: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KnowledgeMasking(levels, SPECIAL, MASK, VOCAB, _lexicon())


def test_entity_level_needs_a_lexicon_and_words() -> None:
    with pytest.raises(ConfigError, match="entity_lexicon"):
        KnowledgeMasking({"entity": 1.0}, SPECIAL, MASK, VOCAB)
    ids, _ = _batch(rows=2)
    with pytest.raises(ConfigError, match="--word-segmentation"):
        _masking(phrase=1.0)(ids, None, np.random.default_rng(0))
    _masking(token=1.0)(ids, None, np.random.default_rng(0))  # tokens need no words


def test_peoples_daily_annotations_give_the_entity_lexicon() -> None:
    """Entities of the People's Daily NER training split (persons, places, organisations, bracketed
    compounds whole), found by longest match in character ids."""
    from lmforge.assets import check_asset

    if not check_asset("peoples-daily")["installed"]:
        pytest.skip("asset peoples-daily is not installed")
    lexicon = EntityLexicon.from_source("peoples-daily-ner", lambda text: [ord(c) for c in text.strip()])
    assert lexicon.num_entities > 5000
    text = "江泽民在北京会见了新华社记者"
    spans = lexicon.spans(np.array([ord(c) for c in text]))
    assert [text[s:e] for s, e in spans] == ["江泽民", "北京", "新华社"]
