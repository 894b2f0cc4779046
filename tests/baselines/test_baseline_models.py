"""Each classic baseline learns a separable toy problem; TF-IDF parity with scikit-learn; GloVe pieces."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lmforge.baselines.embeddings import (
    AveragedEmbeddingClassifier,
    cooccurrence,
    train_glove,
    train_word2vec,
)
from lmforge.baselines.linear import TfidfClassifier, TfidfSettings
from lmforge.baselines.neural import (
    BiLSTMClassifier,
    BiLSTMTagger,
    TextCNN,
    TrainSettings,
    fit_model,
    predict_logits,
)
from lmforge.baselines.text import Vocabulary, is_mostly_cjk, tokenize

POSITIVE = ["good", "great", "excellent", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "poor", "nasty"]
FILLER = ["the", "movie", "was", "a", "film", "it", "plot", "and", "acting", "story"]


def toy_texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Texts whose label is decided by two sentiment words hidden among filler words."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.randrange(2)
        words = [rng.choice(FILLER) for _ in range(5)] + [
            rng.choice(POSITIVE if label else NEGATIVE) for _ in range(2)
        ]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("classifier", ["lr", "nb", "svm"])
@pytest.mark.parametrize("analyzer", ["word", "char_wb", "word+char"])
def test_tfidf_classifiers_separate_the_toy_problem(classifier: str, analyzer: str) -> None:
    train, train_labels = toy_texts(120, 0)
    test, test_labels = toy_texts(40, 1)
    model = TfidfClassifier(TfidfSettings(classifier=classifier, analyzer=analyzer)).fit(train, train_labels)  # type: ignore[arg-type]
    scores = model.scores(test)
    assert scores.shape == (40, 2)
    assert (model.predict(test) == np.asarray(test_labels)).mean() == 1.0


def test_tfidf_lr_scores_equal_a_plain_scikit_learn_pipeline() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, labels = toy_texts(80, 2)
    test, _ = toy_texts(20, 3)
    ours = TfidfClassifier(TfidfSettings(classifier="lr", analyzer="char", char_ngrams=(1, 3))).fit(
        train, labels
    )
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    reference = LogisticRegression(max_iter=2000, random_state=0).fit(vectorizer.fit_transform(train), labels)
    expected = reference.predict_log_proba(vectorizer.transform(test))
    np.testing.assert_allclose(ours.scores(test), expected, rtol=1e-6, atol=1e-8)


def test_auto_analyzer_uses_characters_for_chinese() -> None:
    texts = ["这个酒店很好", "服务太差了", "房间很干净", "价格太贵了"]
    model = TfidfClassifier(TfidfSettings(analyzer="auto")).fit(texts, [1, 0, 1, 0])
    assert model.resolved_analyzer == "char"
    assert is_mostly_cjk(texts) and not is_mostly_cjk(["plain english text"])
    assert tokenize("很 好!", "char") == ["很", "好", "!"]
    assert tokenize("Not BAD, ok", "word") == ["not", "bad", ",", "ok"]


def test_cooccurrence_weights_pairs_by_inverse_distance_within_sentences() -> None:
    cooc = cooccurrence([[2, 3, 4], [4, 2]], vocab_size=5, window=2)
    table = {(int(r), int(c)): v for r, c, v in zip(cooc.rows, cooc.cols, cooc.values)}
    # (2,3) at distance 1; (3,4) at 1; (2,4) at 2 in sentence one and at 1 in sentence two.
    assert table == pytest.approx(
        {(2, 3): 1.0, (3, 2): 1.0, (3, 4): 1.0, (4, 3): 1.0, (2, 4): 1.5, (4, 2): 1.5}
    )
    # <pad>/<unk> ids (< 2) never count; pairs never cross sentences.
    assert cooccurrence([[1, 2], [3]], vocab_size=4, window=3).values.size == 0


def test_glove_loss_decreases_and_vectors_separate_sentiment() -> None:
    texts, labels = toy_texts(150, 4)
    tokens = [tokenize(t, "word") for t in texts]
    vocab = Vocabulary(tokens)
    cooc = cooccurrence([vocab.encode(t) for t in tokens], len(vocab), window=3)
    vectors, losses = train_glove(cooc, dim=16, epochs=8, batch_size=256)
    assert vectors.shape == (len(vocab), 16)
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    table = {w: vectors[i] for i, w in enumerate(vocab.itos) if i >= 2}
    test, test_labels = toy_texts(40, 5)
    clf = AveragedEmbeddingClassifier(table).fit(tokens, labels)
    accuracy = (clf.predict([tokenize(t, "word") for t in test]) == np.asarray(test_labels)).mean()
    assert accuracy >= 0.9


def test_word2vec_is_repeatable_and_feeds_the_averaged_classifier() -> None:
    pytest.importorskip("gensim.models", reason="word2vec needs gensim (pip install 'lmforge[baselines]')")
    texts, labels = toy_texts(150, 6)
    tokens = [tokenize(t, "word") for t in texts]
    first = train_word2vec(tokens, dim=16, window=3, epochs=10)
    second = train_word2vec(tokens, dim=16, window=3, epochs=10)
    assert set(first) == set(second) and all(np.array_equal(first[w], second[w]) for w in first)
    test, test_labels = toy_texts(40, 7)
    clf = AveragedEmbeddingClassifier(first).fit(tokens, labels)
    assert (clf.predict([tokenize(t, "word") for t in test]) == np.asarray(test_labels)).mean() >= 0.9


@pytest.mark.parametrize("model_class", [TextCNN, BiLSTMClassifier])
def test_neural_classifiers_learn_the_toy_problem(model_class: type) -> None:
    texts, labels = toy_texts(160, 8)
    tokens = [tokenize(t, "word") for t in texts]
    vocab = Vocabulary(tokens)
    torch.manual_seed(0)
    model = model_class(len(vocab), 2, embed_dim=32)
    losses = fit_model(
        model, [vocab.encode(t) for t in tokens], labels, TrainSettings(epochs=6, batch_size=16, lr=3e-3)
    )
    assert losses[-1] < losses[0] / 2
    test, test_labels = toy_texts(40, 9)
    logits = torch.stack(predict_logits(model, [vocab.encode(tokenize(t, "word")) for t in test]))
    assert logits.shape == (40, 2)
    assert (logits.argmax(-1) == torch.tensor(test_labels)).float().mean() >= 0.95
    # An empty text (all padding) still gets finite logits.
    assert torch.isfinite(predict_logits(model, [[]])[0]).all()
    # Padding never changes a prediction: batched logits equal one-at-a-time logits.
    ids = [vocab.encode(tokenize(t, "word")) for t in test[:8]] + [[2], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
    batched = torch.stack(predict_logits(model, ids))
    alone = torch.stack([predict_logits(model, [x])[0] for x in ids])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_bilstm_tagger_learns_token_tags_and_ignores_padding() -> None:
    rng = random.Random(10)
    names, places = ["john", "mary", "li"], ["paris", "tokyo", "rome"]
    sentences, tag_lists = [], []
    for _ in range(150):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 7)):
            roll = rng.random()
            if roll < 0.2:
                tokens.append(rng.choice(names)), tags.append(1)
            elif roll < 0.4:
                tokens.append(rng.choice(places)), tags.append(2)
            else:
                tokens.append(rng.choice(FILLER)), tags.append(0)
        sentences.append(tokens)
        tag_lists.append(tags)
    vocab = Vocabulary(sentences)
    torch.manual_seed(0)
    model = BiLSTMTagger(len(vocab), 3, embed_dim=32, hidden_size=32)
    fit_model(
        model,
        [vocab.encode(s) for s in sentences],
        tag_lists,
        TrainSettings(epochs=8, batch_size=16, lr=5e-3),
    )
    outputs = predict_logits(model, [vocab.encode(s) for s in sentences[:30]])
    assert [o.shape[0] for o in outputs] == [len(s) for s in sentences[:30]]
    predicted = [t for o in outputs for t in o.argmax(-1).tolist()]
    gold = [t for tags in tag_lists[:30] for t in tags]
    assert np.mean(np.asarray(predicted) == np.asarray(gold)) >= 0.95
