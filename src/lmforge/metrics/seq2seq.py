"""Seq2seq metrics: which ones suit the target language.

BLEU needs a tokenizer that fits the target language, and the choice changes the score, so it is
picked here once and written into ``metrics.json`` (``bleu_tokenize`` and sacreBLEU's signature):

* Japanese: sacreBLEU's ``ja-mecab`` when MeCab and its dictionary are installed
  (``pip install mecab-python3 ipadic``), else ``char`` (each character a token, what most work on
  unsegmented Japanese falls back to); Chinese: ``zh``; Korean: ``ko-mecab`` or ``char``;
* a target language not given: ``char`` when at least 30% of the references' characters are CJK
  (kana, hangul, ideographs), else ``13a``, sacreBLEU's default.

chrF needs no tokenizer. ROUGE-1/2/L and METEOR count English words (rouge-score keeps only
``[a-z0-9]``, METEOR uses the English WordNet), so they are reported for English targets and left
out, with the reason under ``notes``, for the others.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from lmforge.metrics.generation import generation_metrics

__all__ = ["bleu_tokenize_for", "is_cjk_text", "seq2seq_metrics"]

_CJK_RANGES = (
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xF900, 0xFAFF),  # compatibility ideographs (the Meiji Bible has many)
    (0xFF66, 0xFF9F),  # half-width katakana
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(low <= code <= high for low, high in _CJK_RANGES)


def is_cjk_text(texts: Sequence[str], threshold: float = 0.3) -> bool:
    """True when at least ``threshold`` of the non-space characters of ``texts`` are CJK."""
    chars = [c for text in texts for c in text if not c.isspace()]
    return bool(chars) and sum(map(_is_cjk, chars)) / len(chars) >= threshold


def _mecab_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("MeCab", "ipadic"))


def bleu_tokenize_for(target_language: str | None, references: Sequence[str] = ()) -> str:
    """The sacreBLEU tokenizer for a target language (see the module notes)."""
    language = (target_language or "").lower().split("-")[0]
    if language == "ja":
        return "ja-mecab" if _mecab_installed() else "char"
    if language == "zh":
        return "zh"
    if language == "ko":
        return "ko-mecab" if _mecab_installed() else "char"
    if not language and is_cjk_text(list(references)[:2000]):
        return "char"
    return "13a"


def _english_target(target_language: str | None, references: Sequence[str]) -> bool:
    if target_language:
        return target_language.lower().split("-")[0] == "en"
    return not is_cjk_text(list(references)[:2000])


def seq2seq_metrics(
    predictions: Sequence[str],
    references: Sequence[Any],
    *,
    target_language: str | None = None,
    full: bool = True,
) -> dict[str, Any]:
    """BLEU and chrF (0-100, sacreBLEU), plus ROUGE-1/2/L and METEOR (0-1) for English targets.

    Args:
        predictions: generated strings [N].
        references: a reference string (or a list of them) per prediction.
        target_language: ISO code such as ``"ja"``; ``None``: guessed from the references.
        full: False computes only BLEU and chrF (cheap enough for validation during training).

    Returns:
        ``bleu``, ``chrf`` (with signatures), ``bleu_tokenize``, ``target_language`` and, for
        English targets with ``full``, ``rouge1``, ``rouge2``, ``rougeL`` and ``meteor``.
    """
    flat = [r if isinstance(r, str) else r[0] for r in references]
    tokenize = bleu_tokenize_for(target_language, flat)
    english = _english_target(target_language, flat)
    names = ["bleu", "chrf"] + (["rouge", "meteor"] if full and english else [])
    metrics = generation_metrics(list(predictions), list(references), metrics=names, bleu_tokenize=tokenize)
    metrics.update(bleu_tokenize=tokenize, target_language=target_language)
    if full and not english:
        note = "rouge and meteor skipped: they count English words and the target is not English"
        metrics["notes"] = [*metrics.get("notes", []), note]
    return metrics
