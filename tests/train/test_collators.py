"""Collator properties: masking rates, whole words, real next sentences, span corruption round trip."""

from __future__ import annotations

import numpy as np
import pytest
from pretrain_utils import CLS, EOS, MASK, PAD, SEP, SPECIALS, VOCAB, MemoryCorpus

from lmforge.tasks.corpus import concat_documents, word_starts_from_vocab
from lmforge.tasks.masked_lm import mask_tokens, pair_anchors, sentence_pairs, word_ids
from lmforge.tasks.sources import IGNORE_INDEX
from lmforge.tasks.span_corruption import noise_mask, span_corrupt, span_corruption_lengths


def _batch(rows: int = 512, length: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(8, VOCAB, (rows, length))
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[:, length // 2] = SEP
    return ids


def test_mask_rates_and_80_10_10_split() -> None:
    ids = _batch()
    inputs, labels = mask_tokens(ids, np.random.default_rng(1), SPECIALS, 0.15, 0.8, 0.1)
    special = np.isin(ids, SPECIALS.all())
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any(), "special tokens must never be selected"
    assert (inputs[special] == ids[special]).all()
    assert np.array_equal(labels[selected], ids[selected])
    rate = selected.sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.004, rate
    masked = (inputs == MASK) & selected
    unchanged = (inputs == ids) & selected
    randomised = selected & ~masked & ~unchanged
    n = selected.sum()
    assert abs(masked.sum() / n - 0.8) < 0.01
    # A random replacement can draw the original token (1 in 89 non-special ids): it counts as unchanged.
    assert abs(randomised.sum() / n - 0.1 * (1 - 1 / 89)) < 0.01
    assert abs(unchanged.sum() / n - (0.1 + 0.1 / 89)) < 0.01
    assert not np.isin(inputs[randomised], SPECIALS.all()).any(), "random replacements are never special"
    assert (inputs[~selected] == ids[~selected]).all()


def test_masking_is_dynamic_and_seeded() -> None:
    ids = _batch(rows=8)
    first = mask_tokens(ids, np.random.default_rng(5), SPECIALS)
    again = mask_tokens(ids, np.random.default_rng(5), SPECIALS)
    other = mask_tokens(ids, np.random.default_rng(6), SPECIALS)
    assert np.array_equal(first[1], again[1]) and np.array_equal(first[0], again[0])
    assert not np.array_equal(first[1], other[1])


def test_whole_word_masking_keeps_words_whole() -> None:
    ids = _batch()
    rng = np.random.default_rng(2)
    starts = rng.random(ids.shape) < 0.4  # words of 2.5 tokens on average
    inputs, labels = mask_tokens(ids, np.random.default_rng(3), SPECIALS, word_starts=starts)
    special = np.isin(ids, SPECIALS.all())
    words = word_ids(starts | special)
    selected = labels != IGNORE_INDEX
    # Every word is selected entirely or not at all (special tokens are words of their own).
    per_word_any = np.bincount(words.ravel(), weights=selected.ravel())
    per_word_len = np.bincount(words.ravel(), weights=(~special).ravel())
    chosen = per_word_any > 0
    assert np.array_equal(per_word_any[chosen], per_word_len[chosen])
    assert chosen.sum() > 1000
    rate = selected.sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.01, rate
    assert ((inputs == MASK) & selected).sum() / selected.sum() == pytest.approx(0.8, abs=0.015)


def test_word_starts_from_vocab_reads_piece_markers() -> None:
    wordpiece = word_starts_from_vocab({"[CLS]": 0, "play": 1, "##ing": 2, "中": 3}, 4)
    assert wordpiece.tolist() == [True, True, False, True]
    bpe = word_starts_from_vocab({"<|endoftext|>": 0, "Ġplay": 1, "ing": 2, ",": 3}, 4)
    assert bpe.tolist() == [True, True, False, True]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_sentence_pairs_half_real_half_not(task: str) -> None:
    corpus = MemoryCorpus(3000, seed=4, num_sources=5)
    anchors = pair_anchors(corpus.source_ids)
    assert (corpus.source_ids[anchors] == corpus.source_ids[anchors + 1]).all()
    rng = np.random.default_rng(7)
    chosen = anchors[rng.permutation(len(anchors))[:2000]]
    pairs = sentence_pairs(corpus, chosen, np.random.default_rng(8), SPECIALS, 64, task)
    labels = pairs.sentence_labels
    assert abs(labels.mean() - 0.5) < 0.03
    stream = corpus.tokens.astype(np.int64)
    for row in range(len(chosen)):
        ids = pairs.input_ids[row][pairs.attention_mask[row] == 1]
        assert ids[0] == CLS and ids[-1] == SEP and len(ids) <= 64
        sep = int(np.flatnonzero(ids == SEP)[0])
        first, second = ids[1:sep], ids[sep + 1 : -1]
        assert (pairs.token_type_ids[row][: sep + 1] == 0).all() and (
            pairs.token_type_ids[row][sep + 1 : len(ids)] == 1
        ).all()
        a_first, a_last, b_first = pairs.segment_docs[row]
        a_text = stream[corpus.offsets[a_first] : corpus.offsets[a_last + 1]]
        b_text = stream[corpus.offsets[b_first] :]
        a, b = (second, first) if task == "sop" and labels[row] else (first, second)
        assert np.array_equal(a, a_text[len(a_text) - len(a) :]), "A keeps its end (next to B)"
        assert np.array_equal(b, b_text[: len(b)]), "B keeps its start"
        real_next = b_first == a_last + 1 and corpus.source_ids[b_first] == corpus.source_ids[a_last]
        if task == "sop" or labels[row] == 0:
            assert real_next, "label 0 (and every SOP pair) holds a real next segment"
        else:
            assert b_first != a_last + 1
    assert (pairs.input_ids[pairs.attention_mask == 0] == PAD).all()


def test_concat_documents_packs_with_separator() -> None:
    corpus = MemoryCorpus(30, seed=1)
    packed, packed_words = concat_documents(corpus, EOS, with_words=True)
    assert packed_words is not None and len(packed_words) == len(packed) == corpus.num_tokens + 30
    stream, words = np.asarray(packed), np.asarray(packed_words)
    assert stream.dtype == np.int64 and words.dtype == bool
    pieces = np.split(stream, np.flatnonzero(stream == EOS) + 1)[:-1]
    assert [p[:-1].tolist() for p in pieces] == [corpus.document(i).tolist() for i in range(30)]
    assert words[stream == EOS].all()


def test_span_corruption_lengths_match_t5() -> None:
    # T5's random_spans_helper for inputs_length=512, noise 0.15, mean span 3: 568 raw, 114 targets.
    assert span_corruption_lengths(512, 0.15, 3.0) == (568, 114)


def test_noise_mask_density_and_span_length() -> None:
    rng = np.random.default_rng(0)
    masks = np.stack([noise_mask(568, 0.15, 3.0, rng) for _ in range(200)])
    assert masks.sum(1).tolist() == [85] * 200  # round(568 * 0.15)
    starts = masks & ~np.pad(masks, ((0, 0), (1, 0)))[:, :-1]
    assert starts.sum(1).tolist() == [28] * 200  # round(85 / 3) spans
    assert not masks[:, 0].any(), "T5 starts with a non-noise span"


def test_span_corruption_reconstructs_the_input() -> None:
    raw, target_len = span_corruption_lengths(64, 0.15, 3.0)
    rng = np.random.default_rng(3)
    blocks = rng.integers(8, VOCAB - 20, (50, raw))
    sentinels = tuple(VOCAB - 1 - k for k in range(20))
    inputs, targets = span_corrupt(blocks, np.random.default_rng(4), sentinels, EOS, 0.15, 3.0)
    assert inputs.shape == (50, 64) and targets.shape == (50, target_len)
    for block, inp, tgt in zip(blocks, inputs, targets):
        assert inp[-1] == EOS and tgt[-1] == EOS
        spans: dict[int, list[int]] = {}
        current = None
        for token in tgt[:-1].tolist():
            if token in sentinels:
                current = token
                spans[current] = []
            else:
                assert current is not None
                spans[current].append(token)
        order = [t for t in inp.tolist() if t in sentinels]
        assert order == list(sentinels[: len(order)]) == list(spans), (
            "sentinels count down from the top, in order"
        )
        rebuilt = [piece for t in inp[:-1].tolist() for piece in (spans[t] if t in sentinels else [t])]
        assert rebuilt == block.tolist()
