"""TF-IDF features (word and/or character n-grams) with a linear classifier from scikit-learn.

``analyzer="auto"`` uses character 1-3-grams for mostly-CJK text (Chinese has no word spaces and
characters carry most of the meaning) and word 1-2-grams otherwise; ``word+char`` concatenates both
feature spaces. Sub-linear term frequency (``1 + log tf``) is on by default, which usually helps
linear models on short texts.

Example:
    >>> clf = TfidfClassifier(TfidfSettings(classifier="lr")).fit(["good", "bad"], [1, 0])  # doctest: +SKIP
    >>> clf.predict(["good good"])  # doctest: +SKIP
    array([1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lmforge.baselines.text import is_mostly_cjk, tokenize
from lmforge.errors import ConfigError

__all__ = ["TfidfClassifier", "TfidfSettings"]

Analyzer = Literal["auto", "word", "char", "char_wb", "word+char"]


@dataclass
class TfidfSettings:
    """TF-IDF + linear classifier.

    Attributes:
        classifier: ``lr`` (logistic regression), ``nb`` (multinomial naive Bayes) or ``svm`` (linear SVM).
        analyzer: ``word``, ``char`` (n-grams across spaces), ``char_wb`` (inside words),
            ``word+char`` or ``auto`` (see module docstring).
        word_ngrams: (min n, max n) of word n-grams.
        char_ngrams: (min n, max n) of character n-grams.
        word_tokens: how words are cut: ``word`` (regex, lower-cased) or ``jieba``.
        min_df: drop n-grams found in fewer documents.
        max_features: keep the most frequent n-grams per feature space (``None``: all).
        sublinear_tf: use ``1 + log(tf)``.
        c: inverse regularisation strength of LR / SVM.
        alpha: additive smoothing of naive Bayes.
        seed: random state of the solvers that use one.
    """

    classifier: Literal["lr", "nb", "svm"] = "lr"
    analyzer: Analyzer = "auto"
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (1, 3)
    word_tokens: Literal["word", "jieba"] = "word"
    min_df: int = 1
    max_features: int | None = None
    sublinear_tf: bool = True
    c: float = 1.0
    alpha: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        if self.classifier not in ("lr", "nb", "svm"):
            raise ConfigError(f"classifier={self.classifier!r}: use lr, nb or svm")
        if self.analyzer not in ("auto", "word", "char", "char_wb", "word+char"):
            raise ConfigError(f"analyzer={self.analyzer!r}: use auto, word, char, char_wb or word+char")
        for name, (low, high) in (("word_ngrams", self.word_ngrams), ("char_ngrams", self.char_ngrams)):
            if not 1 <= low <= high:
                raise ConfigError(f"{name}={low},{high}: need 1 <= min <= max")
        if self.word_tokens not in ("word", "jieba"):
            raise ConfigError(f"word_tokens={self.word_tokens!r}: use word or jieba")


def _word_tokenizer(mode: str) -> Any:
    return lambda text: tokenize(text, mode)


class TfidfClassifier:
    """A fitted TF-IDF vectorizer and linear classifier over integer labels ``0..C-1``.

    Args:
        settings: see :class:`TfidfSettings`.
    """

    def __init__(self, settings: TfidfSettings | None = None) -> None:
        self.settings = settings or TfidfSettings()
        self.settings.validate()
        self.resolved_analyzer = self.settings.analyzer
        self.pipeline: Any = None
        self.num_classes = 0

    def _vectorizer(self, texts: Sequence[str]) -> Any:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        s = self.settings
        analyzer = s.analyzer
        if analyzer == "auto":
            analyzer = "char" if is_mostly_cjk(texts) else "word"
        self.resolved_analyzer = analyzer
        common = {"min_df": s.min_df, "max_features": s.max_features, "sublinear_tf": s.sublinear_tf}
        word = TfidfVectorizer(
            tokenizer=_word_tokenizer(s.word_tokens),
            token_pattern=None,
            lowercase=False,
            ngram_range=s.word_ngrams,
            **common,
        )
        char_kind = "char_wb" if analyzer == "char_wb" else "char"
        char = TfidfVectorizer(analyzer=char_kind, ngram_range=s.char_ngrams, lowercase=True, **common)
        if analyzer == "word":
            return word
        if analyzer in ("char", "char_wb"):
            return char
        return FeatureUnion([("word", word), ("char", char)])

    def _classifier(self) -> Any:
        s = self.settings
        if s.classifier == "lr":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=s.c, max_iter=2000, random_state=s.seed)
        if s.classifier == "nb":
            from sklearn.naive_bayes import MultinomialNB

            return MultinomialNB(alpha=s.alpha)
        from sklearn.svm import LinearSVC

        return LinearSVC(C=s.c, random_state=s.seed)

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> TfidfClassifier:
        """Fit vectorizer and classifier on N texts with labels in ``0..C-1``."""
        from sklearn.pipeline import Pipeline

        self.num_classes = int(max(labels)) + 1
        self.pipeline = Pipeline([("tfidf", self._vectorizer(texts)), ("clf", self._classifier())])
        self.pipeline.fit(list(texts), np.asarray(labels))
        return self

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Per-class scores usable as logits, ``[N, C]``.

        LR and NB give log-probabilities (softmax of them is the model's probability); the SVM
        gives decision values (margins, not probabilities; a binary SVM's one margin ``m`` becomes
        ``[-m/2, m/2]`` so that argmax and softmax agree with its sign).
        """
        if self.pipeline is None:
            raise ConfigError("TfidfClassifier: call fit() first")
        clf = self.pipeline.named_steps["clf"]
        if self.settings.classifier == "svm":
            margin = np.asarray(self.pipeline.decision_function(list(texts)), dtype=np.float64)
            raw = np.stack([-margin / 2, margin / 2], axis=1) if margin.ndim == 1 else margin
        else:
            raw = np.asarray(self.pipeline.predict_log_proba(list(texts)), dtype=np.float64)
        # A class missing from the training labels has no column: give it the lowest score.
        out = np.full((len(texts), self.num_classes), raw.min() - 1e3 if raw.size else 0.0)
        out[:, np.asarray(clf.classes_, dtype=np.int64)] = raw
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted labels ``[N]``."""
        return self.scores(texts).argmax(axis=1)

    def num_features(self) -> int:
        """Size of the TF-IDF feature space."""
        if self.pipeline is None:
            return 0
        return int(len(self.pipeline.named_steps["tfidf"].get_feature_names_out()))
