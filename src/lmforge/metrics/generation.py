"""Text generation metrics: sacreBLEU BLEU and chrF, METEOR (nltk), ROUGE-1/2/L (rouge-score),
and perplexity.

Each metric calls its reference implementation, so scores are comparable with published ones:

* BLEU and chrF are corpus-level ``sacrebleu.corpus_bleu`` / ``corpus_chrf`` (0-100). BLEU's
  tokenizer defaults to ``13a``; pass ``tokenize="char"`` for Japanese or Chinese without a
  segmenter (sacreBLEU's ``ja-mecab`` needs MeCab), or ``"zh"``. The signature records the choice.
* METEOR is the mean of ``nltk.translate.meteor_score.meteor_score`` over sentences (0-1), on
  whitespace tokens (nltk's ``word_tokenize`` needs the ``punkt`` download). It needs WordNet 3.0:
  :func:`ensure_wordnet` finds it in nltk's data path, or copies Debian's ``wordnet-base`` and ``wordnet-sense-index`` files
  (``/usr/share/wordnet``) into ``<cache>/nltk_data`` (a copy, about 30 MB) with the ``lexnames`` file nltk reads.
* ROUGE is the mean F-measure of ``rouge_score.rouge_scorer.RougeScorer`` over pairs (0-1), with
  the Porter stemmer; with several references the best one counts (``score_multi``). Its default
  tokenizer keeps only ``[a-z0-9]`` words, so pass ``tokenizer="char"`` for CJK text.
* perplexity is ``exp(sum of token NLLs / number of tokens)`` (natural log).

References: one string per example, or a list of strings (several references).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.cache import cache_root
from lmforge.errors import AssetMissingError, EvaluationError

__all__ = [
    "WORDNET_INSTALL",
    "bleu",
    "chrf",
    "ensure_wordnet",
    "generation_metrics",
    "meteor",
    "perplexity",
    "perplexity_metrics",
    "rouge",
]

WORDNET_INSTALL = (
    "apt-get install wordnet-base wordnet-sense-index (Debian/Ubuntu: lmforge then copies /usr/share/wordnet "
    "into its cache itself), or put the WordNet 3.0 database with its lexnames file in $NLTK_DATA/corpora/wordnet/"
)
_WORDNET_DIRS = ("/usr/share/wordnet",)
# WordNet 3.0's lexicographer files (lexnames): number, name, syntactic category.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "  # noqa: SIM905
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather "
    "adj.ppl".split()
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
# nltk reads these (index.sense comes from Debian's wordnet-sense-index).
_WORDNET_FILES = (
    "data.noun",
    "index.noun",
    "data.verb",
    "index.verb",
    "data.adj",
    "index.adj",
    "index.sense",
)


def _check(predictions: Sequence[str], references: Sequence[Any]) -> list[list[str]]:
    """References as a list of lists of strings, checked against the predictions."""
    if len(predictions) != len(references):
        raise EvaluationError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise EvaluationError("no predictions to score")
    if not all(isinstance(p, str) for p in predictions):
        raise EvaluationError("predictions must be strings")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r or not all(isinstance(x, str) for x in r) for r in refs):
        raise EvaluationError("each reference must be a string or a non-empty list of strings")
    return refs


def _streams(refs: list[list[str]]) -> Any:
    """sacreBLEU's layout: one stream per reference position; ``None`` where an example has fewer
    (sacreBLEU's documented way to vary the number of references, though its hints say str)."""
    width = max(map(len, refs))
    return [[r[i] if i < len(r) else None for r in refs] for i in range(width)]


def bleu(predictions: Sequence[str], references: Sequence[Any], *, tokenize: str = "13a") -> dict[str, Any]:
    """Corpus BLEU (0-100) by sacreBLEU: ``bleu``, ``bleu_precisions`` (1-4 gram), ``brevity_penalty``,
    ``bleu_signature``."""
    import sacrebleu

    refs = _check(predictions, references)
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize)
    score = metric.corpus_score(list(predictions), _streams(refs))
    return {
        "bleu": float(score.score),
        "bleu_precisions": [float(p) for p in score.precisions],
        "brevity_penalty": float(score.bp),
        "bleu_signature": str(metric.get_signature()),
    }


def chrf(predictions: Sequence[str], references: Sequence[Any], *, word_order: int = 0) -> dict[str, Any]:
    """Corpus chrF (0-100) by sacreBLEU; ``word_order=2`` gives chrF++."""
    import sacrebleu

    refs = _check(predictions, references)
    metric = sacrebleu.metrics.CHRF(word_order=word_order)
    score = metric.corpus_score(list(predictions), _streams(refs))
    return {"chrf": float(score.score), "chrf_signature": str(metric.get_signature())}


class _CharTokenizer:
    """rouge-score tokenizer for CJK text: every non-space character is a token."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if not ch.isspace()]


def rouge(
    predictions: Sequence[str],
    references: Sequence[Any],
    *,
    tokenizer: str = "default",
    use_stemmer: bool = True,
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measures (0-1) by rouge-score: ``rouge1``, ``rouge2``, ``rougeL``.

    Args:
        predictions: generated texts.
        references: a reference (or a list of them, the best counts) per prediction.
        tokenizer: ``"default"`` (rouge-score's: lower-cased ``[a-z0-9]+`` words) or ``"char"``.
        use_stemmer: Porter-stem words (rouge-score's option; ignored for ``"char"``).
    """
    from rouge_score import rouge_scorer

    refs = _check(predictions, references)
    if tokenizer not in ("default", "char"):
        raise EvaluationError(f"rouge tokenizer {tokenizer!r}: use default or char")
    types = ["rouge1", "rouge2", "rougeL"]
    custom = _CharTokenizer() if tokenizer == "char" else None
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer and custom is None, tokenizer=custom)
    totals = dict.fromkeys(types, 0.0)
    for prediction, golds in zip(predictions, refs):
        scores = (
            scorer.score_multi(golds, prediction) if len(golds) > 1 else scorer.score(golds[0], prediction)
        )
        for name in types:
            totals[name] += scores[name].fmeasure
    return {name: total / len(refs) for name, total in totals.items()}


def _install_wordnet(source: Path, target: Path) -> None:
    """Copy the database (about 30 MB; nltk refuses symlinks that leave its root) and write lexnames,
    in a staging folder renamed into place so that a concurrent reader never sees half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for file in source.iterdir():
            if file.is_file():
                shutil.copyfile(file, staging / file.name)
        lines = [f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)]
        (staging / "lexnames").write_text("".join(lines), encoding="utf-8")
        os.replace(staging, target)
    except OSError:
        if not (target / "lexnames").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_wordnet() -> None:
    """Make ``nltk.corpus.wordnet`` loadable, or say how to install WordNet.

    Looks in nltk's data path first; then in ``$LMFORGE_WORDNET_DIR`` and ``/usr/share/wordnet``
    (Debian's ``wordnet-base``), whose files are copied once into ``<cache>/nltk_data/corpora/wordnet``
    together with the ``lexnames`` list nltk needs; that folder is added to ``nltk.data.path``.

    Raises:
        AssetMissingError: no WordNet database found (the message has the install command).
    """
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
        return
    except LookupError:
        pass
    data = cache_root() / "nltk_data"
    target = data / "corpora" / "wordnet"
    candidates = [os.environ.get("LMFORGE_WORDNET_DIR", ""), *_WORDNET_DIRS]
    for folder in filter(None, candidates):
        source = Path(folder)
        if all((source / name).is_file() for name in _WORDNET_FILES):
            if not (target / "lexnames").is_file():
                _install_wordnet(source, target)
            if str(data) not in nltk.data.path:
                nltk.data.path.append(str(data))
            return
    raise AssetMissingError(
        f"METEOR needs the WordNet 3.0 database, which was not found; install it with: {WORDNET_INSTALL}"
    )


def meteor(predictions: Sequence[str], references: Sequence[Any]) -> dict[str, float]:
    """Mean sentence METEOR (0-1) by nltk on whitespace tokens: ``{"meteor": ...}``.

    Raises:
        AssetMissingError: WordNet is not installed (see :func:`ensure_wordnet`).
    """
    refs = _check(predictions, references)
    ensure_wordnet()
    from nltk.corpus import wordnet
    from nltk.translate.meteor_score import meteor_score

    total = 0.0
    for prediction, golds in zip(predictions, refs):
        total += meteor_score([g.split() for g in golds], prediction.split(), wordnet=wordnet)
    return {"meteor": total / len(refs)}


def perplexity(nll_sum: float, num_tokens: int) -> float:
    """``exp(nll_sum / num_tokens)``: perplexity from a summed natural-log NLL over tokens."""
    if num_tokens <= 0:
        raise EvaluationError(f"num_tokens must be positive, got {num_tokens}")
    return math.exp(nll_sum / num_tokens)


def perplexity_metrics(nll_sums: Any, token_counts: Any) -> dict[str, float]:
    """Corpus perplexity from per-example summed NLLs (nats) [N] and token counts [N].

    Returns:
        ``perplexity``, ``loss`` (= ``nll_per_token``, nats), ``nll_per_token``, ``bits_per_token``,
        ``num_tokens``.
    """
    nll = np.asarray(nll_sums, dtype=np.float64).reshape(-1)
    counts = np.asarray(token_counts, dtype=np.float64).reshape(-1)
    if nll.shape != counts.shape:
        raise EvaluationError(f"{nll.size} NLL sums but {counts.size} token counts")
    total, tokens = float(nll.sum()), int(counts.sum())
    ppl = perplexity(total, tokens)
    return {
        "perplexity": ppl,
        "loss": total / tokens,
        "nll_per_token": total / tokens,
        "bits_per_token": total / tokens / math.log(2),
        "num_tokens": tokens,
    }


def generation_metrics(
    predictions: Sequence[str],
    references: Sequence[Any],
    *,
    metrics: Sequence[str] = ("bleu", "chrf", "rouge", "meteor"),
    bleu_tokenize: str = "13a",
    rouge_tokenizer: str = "default",
) -> dict[str, Any]:
    """Several generation metrics at once. METEOR is left out, with a note in ``notes``, when
    WordNet is missing (ask for it alone through :func:`meteor` to get the error)."""
    result: dict[str, Any] = {"num_examples": len(predictions)}
    notes = []
    for name in metrics:
        if name == "bleu":
            result.update(bleu(predictions, references, tokenize=bleu_tokenize))
        elif name == "chrf":
            result.update(chrf(predictions, references))
        elif name == "rouge":
            result.update(rouge(predictions, references, tokenizer=rouge_tokenizer))
        elif name == "meteor":
            try:
                result.update(meteor(predictions, references))
            except AssetMissingError as error:
                notes.append(f"meteor skipped: {error}")
        else:
            raise EvaluationError(f"unknown generation metric {name!r}; use bleu, chrf, rouge, meteor")
    if notes:
        result["notes"] = notes
    return result
