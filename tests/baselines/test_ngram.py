"""n-gram language models: hand-computed probabilities, normalisation, nltk parity, perplexity."""

from __future__ import annotations

import math
import random

import pytest

from lmforge.baselines.ngram import BOS, EOS, UNK, KneserNeyLM, WittenBellLM, padded_ngrams
from lmforge.errors import ConfigError

# Padded: <s> a b </s> | <s> a c </s> | <s> b </s>;  V = {a, b, c, </s>, <unk>}.
TOY = [["a", "b"], ["a", "c"], ["b"]]


def _random_corpus(seed: int, size: int = 40) -> list[list[str]]:
    rng = random.Random(seed)
    words = ["a", "b", "c", "d", "e", "f"]
    return [[rng.choice(words) for _ in range(rng.randint(1, 7))] for _ in range(size)]


def test_kneser_ney_matches_hand_computed_bigram_probabilities() -> None:
    lm = KneserNeyLM(order=2, discount=0.5).fit(TOY)
    assert lm.vocab == sorted(["a", "b", "c", EOS, UNK])
    # Continuation counts N1+(. w): a 1, b 2, c 1, </s> 2 over 6 bigram types; gamma = 0.5 * 4 / 6,
    # so P1 = a 9/60, b 19/60, c 9/60, </s> 19/60, <unk> 4/60 (next test).
    # P(b | a) = (1 - .5) / 2 + (.5 * 2 / 2) * P1(b)
    assert lm.prob("b", ["a"]) == pytest.approx(0.25 + 0.5 * 19 / 60)
    assert lm.prob("a", ["a"]) == pytest.approx(0.5 * 9 / 60)
    assert lm.prob(EOS, ["b"]) == pytest.approx(0.75 + 0.25 * 19 / 60)
    assert lm.prob("a", []) == pytest.approx(1.5 / 3 + (0.5 * 2 / 3) * 9 / 60)  # context <s>
    assert lm.prob("b", ["zzz"]) == pytest.approx(19 / 60)  # unseen context: all mass to the unigram
    assert lm.prob("zzz", ["b"]) == pytest.approx(lm.prob(UNK, ["b"]))  # unknown word scored as <unk>


def test_unigram_kneser_ney_level_is_continuation_interpolated_with_uniform() -> None:
    lm = KneserNeyLM(order=2, discount=0.5).fit(TOY)
    # With an unseen one-word context the bigram level hands everything to the unigram level.
    expected = {"a": 9 / 60, "b": 19 / 60, "c": 9 / 60, EOS: 19 / 60, UNK: 4 / 60}
    for word, p in expected.items():
        assert lm.prob(word, ["never-seen"]) == pytest.approx(p)


def test_witten_bell_matches_hand_computed_probabilities() -> None:
    lm = WittenBellLM(order=2).fit(TOY)
    # Unigram counts a 2, b 2, c 1, </s> 3: N = 8, T = 4, |V| = 5: P1(w) = (c + 0.8) / 12.
    assert lm.prob("c", ["unseen"]) == pytest.approx(1.8 / 12)
    assert lm.prob(UNK, ["unseen"]) == pytest.approx(0.8 / 12)
    assert lm.prob("b", ["a"]) == pytest.approx((1 + 2 * 2.8 / 12) / 4)
    assert lm.prob(EOS, ["b"]) == pytest.approx((2 + 3.8 / 12) / 3)


def test_modified_kneser_ney_discounts_follow_count_of_counts() -> None:
    lm = KneserNeyLM(order=2).fit(TOY)
    # Unigram continuation counts {a: 1, b: 2, c: 1, </s>: 2}: n1 = 2, n2 = 2, n3 = n4 = 0.
    y = 2 / (2 + 2 * 2)
    d1, d2, d3 = lm.discounts[1]
    assert d1 == pytest.approx(1 - 2 * y * 2 / 2)
    assert d2 == pytest.approx(2.0)  # 2 - 3 Y n3 / n2 = 2
    assert d3 == pytest.approx(y)  # no count-3 types: falls back to Y
    # Bigram raw counts {1: 4, 2: 2}: Y = 4 / 8; D1 = 1 - 2 Y 2 / 4 = 0.5, D2 = 2 - 3 Y 0 / 2 = 2.
    assert lm.discounts[2][:2] == pytest.approx((0.5, 2.0))


@pytest.mark.parametrize("model", [KneserNeyLM, WittenBellLM])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_probabilities_sum_to_one_over_the_vocabulary(model: type, order: int) -> None:
    corpus = _random_corpus(order)
    for kwargs in ({}, {"min_count": 2}):
        lm = model(order=order, **kwargs).fit(corpus)
        for context in ([], ["a"], ["a", "b"], ["f", "f", "f"], ["q", "a"], ["zz", "yy", "xx"]):
            total = math.fsum(lm.prob(w, context) for w in lm.vocab)
            assert total == pytest.approx(1.0, abs=1e-12), (order, context)
            assert all(lm.prob(w, context) > 0 for w in lm.vocab)


def test_fixed_discount_kneser_ney_sums_to_one_too() -> None:
    lm = KneserNeyLM(order=3, discount=0.9).fit(_random_corpus(7))
    assert math.fsum(lm.prob(w, ["b", "c"]) for w in lm.vocab) == pytest.approx(1.0, abs=1e-12)


def test_perplexity_is_the_exponentiated_mean_negative_log_probability() -> None:
    lm = KneserNeyLM(order=2, discount=0.5).fit(TOY)
    p = [lm.prob("a", []), lm.prob("b", ["a"]), lm.prob(EOS, ["a", "b"])]
    result = lm.perplexity([["a", "b"]])
    assert result["perplexity"] == pytest.approx(math.prod(p) ** (-1 / 3))
    assert result["num_tokens"] == 3
    assert result["nll_per_token"] == pytest.approx(-sum(math.log(x) for x in p) / 3)
    assert lm.perplexity([["a", "zzz"]])["oov_rate"] == pytest.approx(0.5)


def test_higher_order_fits_training_text_better() -> None:
    corpus = _random_corpus(3, 80)
    bigram = KneserNeyLM(order=2).fit(corpus).perplexity(corpus)["perplexity"]
    trigram = KneserNeyLM(order=3).fit(corpus).perplexity(corpus)["perplexity"]
    assert trigram < bigram


def test_invalid_settings_and_reserved_tokens_raise() -> None:
    with pytest.raises(ConfigError, match="discount"):
        KneserNeyLM(order=2, discount=1.5)
    with pytest.raises(ConfigError, match="order"):
        WittenBellLM(order=0)
    with pytest.raises(ConfigError, match="reserved"):
        WittenBellLM(order=2).fit([["a", BOS]])


@pytest.mark.parametrize("order", [2, 3])
def test_matches_nltk_interpolated_models_on_the_same_counts(order: int) -> None:
    """nltk.lm quirks handled here: its padding pipeline adds order-1 `</s>` on the right, its unigram
    level has no uniform floor, and its vocabulary also holds `<s>`. We feed it exactly our events
    (``padded_ngrams``) and compare with ``interpolate_uniform=False``."""
    lm_module = pytest.importorskip("nltk.lm")
    corpus = _random_corpus(11, 25)
    pairs = [
        (
            KneserNeyLM(order, discount=0.1, interpolate_uniform=False),
            lm_module.KneserNeyInterpolated(order, discount=0.1),
        ),
        (
            KneserNeyLM(order, discount=0.75, interpolate_uniform=False),
            lm_module.KneserNeyInterpolated(order, discount=0.75),
        ),
        (WittenBellLM(order, interpolate_uniform=False), lm_module.WittenBellInterpolated(order)),
    ]
    for ours, reference in pairs:
        ours.fit(corpus)
        reference.fit([padded_ngrams(s, order) for s in corpus], vocabulary_text=[BOS, *ours.vocab])
        for context in ([], ["a"], ["b", "a"], ["f", "f"], ["c"]):
            padded = ([BOS] * (order - 1) + context)[-(order - 1) :]
            for word in ours.vocab:
                if word != UNK:
                    assert ours.prob(word, context) == pytest.approx(reference.score(word, padded), abs=1e-12)
