"""Count-based n-gram language models: interpolated Kneser-Ney and Witten-Bell, and perplexity.

Both follow Chen & Goodman (1998), "An empirical study of smoothing techniques for language
modeling", in the interpolated form: every order mixes its own estimate with the next lower one,

    P_k(w | h) = alpha_k(w | h) + gamma_k(h) * P_{k-1}(w | h[1:]),

and a context never seen at order ``k`` hands its whole mass down (``gamma = 1``). Sentences are
padded with ``order - 1`` ``<s>`` on the left and one ``</s>`` on the right; ``</s>`` is predicted
(so sentence ends count in perplexity), ``<s>`` never is. The predicted vocabulary ``V`` is every
training type plus ``</s>`` and ``<unk>``; words rarer than ``min_count`` become ``<unk>``.

* :class:`KneserNeyLM` is **interpolated modified Kneser-Ney** by default: three discounts
  ``D1, D2, D3+`` per order estimated from count-of-counts; ``discount=d`` gives the single-discount
  (original) form. Lower orders count *continuations* ``N1+(. h w)`` (in how many distinct contexts
  ``h w`` follows some word), the highest order raw counts.
* :class:`WittenBellLM`: ``P_k = (c(h w) + N1+(h .) P_{k-1}) / (c(h) + N1+(h .))`` on raw counts.

With ``interpolate_uniform=True`` (default) the unigram level is itself interpolated with the uniform
distribution ``1 / |V|``, so every word of ``V`` (``<unk>`` included) has non-zero probability and
``sum_w P(w | h) = 1`` for every context. ``interpolate_uniform=False`` uses the bare unigram
estimate (continuation shares for KN, relative frequencies for WB) as ``nltk.lm`` does; unseen words
then get probability 0.

Example:
    >>> lm = KneserNeyLM(order=2).fit([["a", "b"], ["a", "c"]])
    >>> round(sum(lm.prob(w, ["a"]) for w in lm.vocab), 6)
    1.0
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from lmforge.errors import ConfigError

__all__ = ["BOS", "EOS", "UNK", "KneserNeyLM", "NGramLM", "WittenBellLM", "padded_ngrams"]

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Context = tuple[str, ...]


@dataclass(frozen=True)
class _ContextStats:
    """Totals of one context's count table: sum of counts and how many words have count 1, 2, 3+."""

    total: int
    n1: int
    n2: int
    n3plus: int

    @property
    def distinct(self) -> int:
        return self.n1 + self.n2 + self.n3plus


def padded_ngrams(sentence: Sequence[str], order: int) -> list[tuple[str, ...]]:
    """Every n-gram of order 1..``order`` that ends at a predicted position of the padded sentence.

    The sentence is padded with ``order - 1`` ``<s>`` and one ``</s>``; these are exactly the counts
    the models are fit on (useful to feed another toolkit the same events).
    """
    padded = [BOS] * (order - 1) + list(sentence) + [EOS]
    return [
        tuple(padded[i - k + 1 : i + 1]) for i in range(order - 1, len(padded)) for k in range(1, order + 1)
    ]


class NGramLM:
    """Shared counting, vocabulary and perplexity; subclasses define the per-order interpolation.

    Args:
        order: n (1 = unigram).
        min_count: training words seen fewer times become ``<unk>``.
        interpolate_uniform: mix the unigram level with ``1 / |V|`` (see module docstring).
    """

    name = "ngram"

    def __init__(self, order: int = 3, min_count: int = 1, interpolate_uniform: bool = True) -> None:
        if order < 1:
            raise ConfigError(f"order={order}: an n-gram model needs order >= 1")
        if min_count < 1:
            raise ConfigError(f"min_count={min_count}: use 1 (keep every word) or more")
        self.order = order
        self.min_count = min_count
        self.interpolate_uniform = interpolate_uniform
        self.vocab: list[str] = []
        self._known: set[str] = set()
        # counts[k][context][word], k = 1..order; context has k-1 words. What a count means at each
        # order (raw or continuation) is up to the subclass.
        self.counts: list[dict[Context, dict[str, int]]] = []
        self._stats: list[dict[Context, _ContextStats]] = []

    # ------------------------------------------------------------------ fitting
    def fit(self, sentences: Iterable[Sequence[str]]) -> NGramLM:
        """Count the n-grams of tokenized sentences (each a list of tokens, no padding)."""
        sentences = [list(s) for s in sentences]
        frequency = Counter(token for sentence in sentences for token in sentence)
        if not frequency:
            raise ConfigError("n-gram model: the training text has no tokens")
        for reserved in (BOS, EOS):
            if reserved in frequency:
                raise ConfigError(f"n-gram model: the training text contains the reserved token {reserved!r}")
        self._known = {w for w, c in frequency.items() if c >= self.min_count} | {EOS, UNK}
        self.vocab = sorted(self._known)
        raw: list[dict[Context, Counter[str]]] = [defaultdict(Counter) for _ in range(self.order + 1)]
        for sentence in sentences:
            for gram in padded_ngrams(self._map(sentence), self.order):
                raw[len(gram)][gram[:-1]][gram[-1]] += 1
        self.counts = [{}] + [self._level_counts(k, raw) for k in range(1, self.order + 1)]
        self._stats = [{}] + [
            {h: _stats_of(table) for h, table in self.counts[k].items()} for k in range(1, self.order + 1)
        ]
        self._after_fit()
        return self

    def _level_counts(self, k: int, raw: list[dict[Context, Counter[str]]]) -> dict[Context, dict[str, int]]:
        """Counts used at order ``k``; raw counts unless a subclass says otherwise."""
        return {h: dict(table) for h, table in raw[k].items()}

    def _after_fit(self) -> None:
        """Hook for estimates that need the final counts (discounts)."""

    def _map(self, tokens: Sequence[str]) -> list[str]:
        return [t if t in self._known else UNK for t in tokens]

    # ------------------------------------------------------------------ scoring
    def _unigram(self, word: str) -> float:
        raise NotImplementedError

    def _interpolate(self, k: int, context: Context, word: str, lower: float) -> float:
        raise NotImplementedError

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context); words outside the vocabulary are scored as ``<unk>``.

        Args:
            word: the next token (``</s>`` for the sentence end).
            context: preceding tokens of the sentence (without padding); only the last
                ``order - 1`` matter, a shorter context is left-padded with ``<s>``.
        """
        if not self.counts:
            raise ConfigError("n-gram model: call fit() before prob()")
        history = [BOS] * (self.order - 1) + [t if t == BOS else self._map([t])[0] for t in context]
        history = history[len(history) - (self.order - 1) :] if self.order > 1 else []
        word = self._map([word])[0]
        p = self._unigram(word)
        for k in range(2, self.order + 1):
            p = self._interpolate(k, tuple(history[len(history) - (k - 1) :]), word, p)
        return p

    def logprob(self, word: str, context: Sequence[str] = ()) -> float:
        """Natural log of :meth:`prob` (``-inf`` for probability 0)."""
        p = self.prob(word, context)
        return math.log(p) if p > 0 else -math.inf

    def sentence_nll(self, sentences: Iterable[Sequence[str]]) -> tuple[list[float], list[int], int]:
        """Summed negative log-likelihood (nats) and predicted-token count of each sentence.

        Every word and the closing ``</s>`` is predicted. Returns ``(nll_sums, token_counts,
        out_of_vocabulary_words)``; the first two are what :func:`lmforge.evaluate.evaluate_predictions`
        takes for task ``"lm"``.
        """
        sums: list[float] = []
        counts: list[int] = []
        oov = 0
        for sentence in sentences:
            sentence = list(sentence)
            oov += sum(word not in self._known for word in sentence)
            sums.append(
                -math.fsum(
                    self.logprob(word, sentence[max(0, i - self.order + 1) : i])
                    for i, word in enumerate([*sentence, EOS])
                )
            )
            counts.append(len(sentence) + 1)
        return sums, counts, oov

    def perplexity(self, sentences: Iterable[Sequence[str]]) -> dict[str, Any]:
        """Perplexity over every token of the sentences and each sentence end.

        Returns:
            ``perplexity`` (exp of the mean negative log-likelihood per predicted token),
            ``nll_per_token`` (nats), ``num_tokens`` (``</s>`` included), ``num_sentences``,
            ``oov_rate`` (share of words outside the vocabulary).
        """
        sums, counts, oov = self.sentence_nll(sentences)
        tokens = sum(counts)
        if tokens == 0:
            raise ConfigError("perplexity: the evaluation text has no sentences")
        mean = math.fsum(sums) / tokens
        return {
            "perplexity": math.exp(mean) if math.isfinite(mean) else math.inf,
            "nll_per_token": mean,
            "num_tokens": tokens,
            "num_sentences": len(counts),
            "oov_rate": oov / max(tokens - len(counts), 1),  # over words: `</s>` is never out of vocabulary
        }


def _stats_of(table: dict[str, int]) -> _ContextStats:
    values = list(table.values())
    return _ContextStats(
        sum(values), sum(v == 1 for v in values), sum(v == 2 for v in values), sum(v >= 3 for v in values)
    )


class KneserNeyLM(NGramLM):
    """Interpolated Kneser-Ney; modified (three discounts per order) unless ``discount`` is given.

    Args:
        order: n.
        discount: one absolute discount in (0, 1] for every order (original interpolated KN);
            ``None`` estimates modified-KN discounts ``D1, D2, D3+`` per order (Chen & Goodman):
            ``Y = n1 / (n1 + 2 n2)``, ``D_c = c - (c + 1) Y n_{c+1} / n_c``, clamped to ``[0, c]``.
        min_count, interpolate_uniform: see :class:`NGramLM`.
    """

    name = "kneser-ney"

    def __init__(
        self,
        order: int = 3,
        discount: float | None = None,
        min_count: int = 1,
        interpolate_uniform: bool = True,
    ) -> None:
        super().__init__(order, min_count, interpolate_uniform)
        if discount is not None and not 0.0 < discount <= 1.0:
            raise ConfigError(f"discount={discount}: a Kneser-Ney discount must be in (0, 1]")
        self.discount = discount
        self.discounts: list[tuple[float, float, float]] = []

    def _level_counts(self, k: int, raw: list[dict[Context, Counter[str]]]) -> dict[Context, dict[str, int]]:
        if k == self.order:
            return super()._level_counts(k, raw)
        # N1+(. h w): in how many distinct left contexts the (k+1)-gram ``v h w`` was seen. With
        # order-1 `<s>` of padding every k-gram ending at a predicted token has a left neighbour.
        continuation: dict[Context, Counter[str]] = defaultdict(Counter)
        for context, table in raw[k + 1].items():
            for word in table:
                continuation[context[1:]][word] += 1
        return {h: dict(table) for h, table in continuation.items()}

    def _after_fit(self) -> None:
        self.discounts = [(0.0, 0.0, 0.0)]
        for k in range(1, self.order + 1):
            if self.discount is not None:
                self.discounts.append((self.discount, self.discount, self.discount))
                continue
            n = Counter(v for table in self.counts[k].values() for v in table.values())
            y = n[1] / (n[1] + 2 * n[2]) if n[1] + 2 * n[2] > 0 else 0.5
            estimates = []
            for c in (1, 2, 3):
                d = c - (c + 1) * y * n[c + 1] / n[c] if n[c] > 0 else y
                estimates.append(min(max(d, 0.0), float(c)))
            self.discounts.append((estimates[0], estimates[1], estimates[2]))

    def _discount(self, k: int, count: int) -> float:
        if count == 0:
            return 0.0
        d1, d2, d3 = self.discounts[k]
        return min(d1 if count == 1 else d2 if count == 2 else d3, float(count))

    def _gamma_mass(self, k: int, stats: _ContextStats) -> float:
        d1, d2, d3 = self.discounts[k]
        return d1 * stats.n1 + d2 * stats.n2 + d3 * stats.n3plus

    def _unigram(self, word: str) -> float:
        stats = self._stats[1][()]
        count = self.counts[1][()].get(word, 0)
        if not self.interpolate_uniform:
            return count / stats.total
        alpha = (count - self._discount(1, count)) / stats.total
        return alpha + self._gamma_mass(1, stats) / stats.total / len(self.vocab)

    def _interpolate(self, k: int, context: Context, word: str, lower: float) -> float:
        table = self.counts[k].get(context)
        if not table:
            return lower
        stats = self._stats[k][context]
        count = table.get(word, 0)
        alpha = max(count - self._discount(k, count), 0.0) / stats.total
        return alpha + self._gamma_mass(k, stats) / stats.total * lower


class WittenBellLM(NGramLM):
    """Interpolated Witten-Bell smoothing on raw counts (see module docstring)."""

    name = "witten-bell"

    def _unigram(self, word: str) -> float:
        stats = self._stats[1][()]
        count = self.counts[1][()].get(word, 0)
        if not self.interpolate_uniform:
            return count / stats.total
        return (count + stats.distinct / len(self.vocab)) / (stats.total + stats.distinct)

    def _interpolate(self, k: int, context: Context, word: str, lower: float) -> float:
        table = self.counts[k].get(context)
        if not table:
            return lower
        stats = self._stats[k][context]
        return (table.get(word, 0) + stats.distinct * lower) / (stats.total + stats.distinct)
