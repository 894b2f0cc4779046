"""``lmforge baseline``: train one classic baseline on a training set, score it on a test set with
:mod:`lmforge.evaluate`'s metrics and write the folder ``lmforge evaluate`` writes: ``metrics.json``
and ``summary.html``, plus ``logits.npz`` and ROC / PR / confusion-matrix PNGs for classifiers (so
``lmforge calibrate`` and ``lmforge compare`` read baselines and transformers alike).

Kinds: classifiers ``tfidf-lr``, ``tfidf-nb``, ``tfidf-svm``, ``word2vec-lr``, ``glove-lr``,
``textcnn``, ``bilstm`` (``accuracy``, ``macro_f1``); language models ``ngram-kn``, ``ngram-wb``
(``perplexity``); tagger ``bilstm-tagger`` (``entity_f1``); seq2seq ``copy`` (the source as the
output: ``bleu``, ``chrf``, see :mod:`lmforge.baselines.seq2seq`).

Example:
    >>> metrics = run_baseline(BaselineConfig("tfidf-lr", "train.csv", Path("runs/lr"), test="test.csv"))  # doctest: +SKIP
    >>> metrics["accuracy"], metrics["macro_f1"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.baselines.config import (
    CLASSIFIER_KINDS,
    KINDS,
    LM_KINDS,
    SEQ2SEQ_KINDS,
    TAGGER_KINDS,
    BaselineConfig,
    Progress,
)
from lmforge.baselines.datasets import load_classification_split, load_tagging_split, load_text_lines
from lmforge.baselines.seq2seq import run_copy
from lmforge.baselines.text import Vocabulary, resolve_mode, tokenize
from lmforge.data.clean import assign_split
from lmforge.errors import ConfigError
from lmforge.evaluate import evaluate_predictions, write_evaluation
from lmforge.metrics.calibration import probs_from_logits
from lmforge.runtime import torch_threads

__all__ = ["CLASSIFIER_KINDS", "KINDS", "LM_KINDS", "TAGGER_KINDS", "BaselineConfig", "run_baseline"]

_DEFAULT_EPOCHS = {"word2vec-lr": 10, "glove-lr": 25, "textcnn": 5, "bilstm": 5, "bilstm-tagger": 5}


def _versions() -> dict[str, str]:
    import sklearn
    import torch

    from lmforge.version import __version__

    return {
        "lmforge": __version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_baseline(config: BaselineConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Train, evaluate and write ``config.out/metrics.json``; returns the metrics dict.

    The dict has ``kind``, ``task``, the task's metrics, ``num_train`` / ``num_test``,
    ``train_seconds`` / ``eval_seconds``, ``data`` (sources and provenance), ``settings`` and
    ``versions``.

    Raises:
        ConfigError: an invalid setting. DataError: unreadable or malformed data.
    """
    config.validate()
    say = progress or (lambda line: None)
    arrays: dict[str, Any] = {}
    with torch_threads(config.threads):
        if config.kind in LM_KINDS:
            metrics = _run_lm(config, say)
        elif config.kind in TAGGER_KINDS:
            metrics = _run_tagger(config, say)
        elif config.kind in SEQ2SEQ_KINDS:
            metrics = run_copy(config, say)
        else:
            metrics, arrays = _run_classifier(config, say)
    metrics = {"name": config.kind, "kind": config.kind, **metrics, "task": config.task}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    metrics = json.loads(json.dumps({**metrics, "settings": settings, "versions": _versions()}, default=str))
    # The evaluation folder layout of `lmforge evaluate`: metrics.json (infinities as null),
    # summary.html, and for classifiers logits.npz with ROC / PR / confusion-matrix PNGs.
    write_evaluation(
        config.out,
        metrics,
        arrays=arrays,
        label_names=metrics.get("label_names"),
        title=f"baseline {config.kind}",
    )
    return metrics


# ---------------------------------------------------------------------------------------- classifiers
Scorer = Callable[[list[str]], np.ndarray]  # texts -> [N, C] scores


def _fit_classifier(
    config: BaselineConfig, train_texts: list[str], train_labels: list[int], num_classes: int, say: Progress
) -> tuple[Scorer, dict[str, Any]]:
    """Fit the configured classifier; returns its scorer and facts for the report."""
    if config.kind.startswith("tfidf-"):
        return _fit_tfidf(config, train_texts, train_labels)
    mode = resolve_mode(config.tokens, train_texts)
    train_tokens = [tokenize(t, mode) for t in train_texts]
    epochs = config.epochs or _DEFAULT_EPOCHS[config.kind]
    if config.kind in ("word2vec-lr", "glove-lr"):
        score, facts = _fit_embeddings(config, train_tokens, train_labels, mode, epochs, say)
    else:
        score, facts = _fit_neural(config, train_tokens, train_labels, num_classes, mode, epochs, say)
    return score, {"tokens": mode, "epochs": epochs, **facts}


def _fit_tfidf(config: BaselineConfig, texts: list[str], labels: list[int]) -> tuple[Scorer, dict[str, Any]]:
    from lmforge.baselines.linear import TfidfClassifier, TfidfSettings

    settings = TfidfSettings(
        classifier=config.kind.removeprefix("tfidf-"),  # type: ignore[arg-type]
        analyzer=config.analyzer,  # type: ignore[arg-type]
        word_ngrams=config.word_ngrams,
        char_ngrams=config.char_ngrams,
        word_tokens="jieba" if config.tokens == "jieba" else "word",
        min_df=config.min_count,
        max_features=config.max_features,
        c=config.c,
        alpha=config.alpha,
        seed=config.seed,
    )
    model = TfidfClassifier(settings).fit(texts, labels)
    return model.scores, {"analyzer": model.resolved_analyzer, "num_features": model.num_features()}


def _fit_embeddings(
    config: BaselineConfig, tokens: list[list[str]], labels: list[int], mode: str, epochs: int, say: Progress
) -> tuple[Scorer, dict[str, Any]]:
    from lmforge.baselines.embeddings import (
        AveragedEmbeddingClassifier,
        cooccurrence,
        train_glove,
        train_word2vec,
    )

    facts: dict[str, Any] = {}
    if config.kind == "word2vec-lr":
        vectors = train_word2vec(
            tokens, config.embed_dim, config.window, config.min_count, epochs, seed=config.seed
        )
    else:
        vocab = Vocabulary(tokens, config.min_count, config.max_vocab)
        cooc = cooccurrence([vocab.encode(t) for t in tokens], len(vocab), config.window)
        matrix, losses = train_glove(cooc, config.embed_dim, epochs, lr=config.lr or 0.05, seed=config.seed)
        vectors = {token: matrix[i] for i, token in enumerate(vocab.itos) if i >= 2}
        facts.update(glove_loss_first=losses[0], glove_loss_last=losses[-1], cooccurrences=len(cooc.values))
        say(f"GloVe loss per entry {losses[0]:.4f} -> {losses[-1]:.4f} over {epochs} epochs")
    clf = AveragedEmbeddingClassifier(vectors, c=config.c, seed=config.seed).fit(tokens, labels)
    return lambda texts: clf.scores([tokenize(t, mode) for t in texts]), {"vocab_size": len(vectors), **facts}


def _fit_neural(
    config: BaselineConfig,
    tokens: list[list[str]],
    labels: list[int],
    num_classes: int,
    mode: str,
    epochs: int,
    say: Progress,
) -> tuple[Scorer, dict[str, Any]]:
    import torch

    from lmforge.baselines.neural import BiLSTMClassifier, TextCNN, TrainSettings, fit_model, predict_logits

    kind = config.kind
    vocab = Vocabulary(tokens, config.min_count, config.max_vocab)
    torch.manual_seed(config.seed)
    network: torch.nn.Module
    if kind == "textcnn":
        network = TextCNN(len(vocab), num_classes, config.embed_dim)
    else:
        network = BiLSTMClassifier(len(vocab), num_classes, config.embed_dim)
    train = TrainSettings(
        epochs, config.batch_size, config.lr or 1e-3, max_length=config.max_length, seed=config.seed
    )
    losses = fit_model(network, [vocab.encode(t) for t in tokens], labels, train)
    say(f"{kind}: training loss per epoch {', '.join(f'{x:.4f}' for x in losses)}")

    def scores(texts: list[str]) -> np.ndarray:
        ids = [vocab.encode(tokenize(t, mode)) for t in texts]
        return torch.stack(predict_logits(network, ids, max_length=config.max_length)).double().numpy()

    facts = {
        "vocab_size": len(vocab),
        "train_losses": losses,
        "num_parameters": sum(p.numel() for p in network.parameters()),
    }
    return scores, facts


def _run_classifier(config: BaselineConfig, say: Progress) -> tuple[dict[str, Any], dict[str, Any]]:
    train, test = load_classification_split(
        config.data,
        config.test,
        config.text_column,
        config.label_column,
        config.test_fraction,
        config.on_error,  # type: ignore[arg-type]
    )
    say(f"{config.kind}: {len(train)} training / {len(test)} test examples, classes {train.label_names}")
    start = time.perf_counter()
    train_labels = [int(label) for label in train.labels]
    score, facts = _fit_classifier(config, train.texts, train_labels, len(train.label_names), say)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logits = np.asarray(score(test.texts), dtype=np.float64)
    eval_seconds = time.perf_counter() - start
    labels = np.asarray(test.labels, dtype=np.int64)
    metrics = evaluate_predictions(
        "classification", references=labels, label_names=train.label_names, logits=logits
    )
    if config.kind == "tfidf-svm":
        metrics.pop("log_loss", None)  # SVM margins are no log-probabilities
    arrays = {
        "logits": logits,
        "labels": labels,
        "probs": probs_from_logits(logits),
        "confusion_matrix": np.asarray(metrics["confusion_matrix"]),
    }
    return {
        **metrics,
        "num_train": len(train),
        "num_test": len(test),
        "label_names": train.label_names,
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "data": {"train": train.source, "test": test.source, "train_info": train.info},
        **facts,
    }, arrays


# ---------------------------------------------------------------------------------------- n-gram LMs
def _run_lm(config: BaselineConfig, say: Progress) -> dict[str, Any]:
    from lmforge.baselines.ngram import KneserNeyLM, NGramLM, WittenBellLM

    texts = load_text_lines(config.data, config.text_column, config.on_error)  # type: ignore[arg-type]
    if config.test is not None:
        train_texts, test_texts = texts, load_text_lines(config.test, config.text_column, config.on_error)  # type: ignore[arg-type]
    else:
        is_test = [assign_split(t, 0.0, config.test_fraction) == "test" for t in texts]
        train_texts = [t for t, k in zip(texts, is_test) if not k]
        test_texts = [t for t, k in zip(texts, is_test) if k]
        if not test_texts or not train_texts:
            raise ConfigError(f"{config.data}: {len(texts)} lines are too few to split; pass --test")
    mode = resolve_mode(config.tokens, train_texts)
    say(f"{config.kind}: {len(train_texts)} training / {len(test_texts)} test lines, {mode} tokens")
    start = time.perf_counter()
    model: NGramLM
    if config.kind == "ngram-kn":
        model = KneserNeyLM(config.order, config.discount, config.min_count)
    else:
        model = WittenBellLM(config.order, config.min_count)
    model.fit(tokenize(t, mode) for t in train_texts)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    nll_sums, token_counts, oov = model.sentence_nll(tokenize(t, mode) for t in test_texts)
    result = evaluate_predictions("lm", predictions=nll_sums, references=token_counts)
    result["oov_rate"] = oov / max(sum(token_counts) - len(token_counts), 1)  # words only, not </s>
    facts: dict[str, Any] = {
        "smoothing": model.name,
        "order": config.order,
        "tokens": mode,
        "vocab_size": len(model.vocab),
    }
    if isinstance(model, KneserNeyLM):
        facts["discount"] = "modified (D1, D2, D3+ per order)" if config.discount is None else config.discount
        facts["discounts"] = [list(d) for d in model.discounts[1:]]
    return {
        **result,
        **facts,
        "num_train": len(train_texts),
        "num_test": len(test_texts),
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "data": {"train": config.data, "test": config.test or f"{config.data} (hash split)"},
    }


# ---------------------------------------------------------------------------------------- tagger
def _run_tagger(config: BaselineConfig, say: Progress) -> dict[str, Any]:
    import torch

    from lmforge.baselines.neural import BiLSTMTagger, TrainSettings, fit_model, predict_logits

    train, test = load_tagging_split(config.data, config.test, config.test_fraction, config.on_error)  # type: ignore[arg-type]
    say(f"bilstm-tagger: {len(train)} training / {len(test)} test sentences, tags {train.label_names}")
    tag_index = {t: i for i, t in enumerate(train.label_names)}
    vocab = Vocabulary([e.tokens for e in train.examples], config.min_count, config.max_vocab)
    epochs = config.epochs or _DEFAULT_EPOCHS["bilstm-tagger"]
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    network = BiLSTMTagger(len(vocab), len(train.label_names), config.embed_dim)
    settings = TrainSettings(
        epochs, config.batch_size, config.lr or 2e-3, max_length=config.max_length, seed=config.seed
    )
    losses = fit_model(
        network,
        [vocab.encode(e.tokens) for e in train.examples],
        [[tag_index[t] for t in e.tags] for e in train.examples],
        settings,
    )
    say(f"bilstm-tagger: training loss per epoch {', '.join(f'{x:.4f}' for x in losses)}")
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    logits = predict_logits(
        network, [vocab.encode(e.tokens) for e in test.examples], max_length=config.max_length
    )
    # Tokens past max_length get no prediction: they are tagged O (and count against recall).
    predicted = [
        [train.label_names[i] for i in row.argmax(-1).tolist()] + ["O"] * (len(e.tokens) - row.shape[0])
        for row, e in zip(logits, test.examples)
    ]
    return {
        **evaluate_predictions(
            "token-classification", predictions=predicted, references=[e.tags for e in test.examples]
        ),
        "num_train": len(train),
        "num_test": len(test),
        "label_names": train.label_names,
        "vocab_size": len(vocab),
        "epochs": epochs,
        "train_losses": losses,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "data": {"train": train.source, "test": test.source},
    }
