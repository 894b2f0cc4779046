"""The prompt scorer: templates and label words in, class scores out, with one causal or masked LM.

**Tokenization boundaries.** The scored sequence is ``ids(prefix) + ids(query) + ids(label)``,
each piece tokenized on its own (the tokenizer's BOS, if it adds one, goes first). Pieces are cut
*before* whitespace: the separator between demonstrations starts the next piece and the space
before a label word belongs to the label (``" positive"``), because byte-level BPE and WordPiece
start a new word at whitespace. For those tokenizers the concatenation then equals tokenizing
the whole text at once; where it does not, cached and full scoring still see identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import KVCache, TransformerModel
from lmforge.prompting.scoring import (
    SCORINGS,
    Scoring,
    causal_label_logprobs,
    encode_prefix,
    masked_label_logprobs,
    reduce_label_logprobs,
    shift_last_prefix_token,
)
from lmforge.prompting.templates import EncodedPrompt, PromptSegments, PromptTemplate
from lmforge.tokenizers import Tokenizer

__all__ = ["PromptScorer"]

_CHAT_PLACEHOLDER = "\u0000lmforge-prompt\u0000"


def _special_frame(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Special ids the tokenizer puts before and after a text (BOS; or [CLS] and [SEP])."""
    bare, full = tokenizer.encode("a", add_special_tokens=False), tokenizer.encode("a")
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start], full[start + len(bare) :]
    return [], []


class PromptScorer:
    """Scores label words after prompts with one causal or masked LM.

    Args:
        model: a decoder-only causal LM or a masked LM.
        tokenizer: its tokenizer.
        scoring: how label-token log-probabilities become a class score.
        chat: wrap the whole prompt in the tokenizer's chat template as one user message; the
            label is the start of the assistant's answer (instruct models; causal LMs only).
        batch_size: inputs per forward pass.
        cached: reuse the prefix (and input) KV caches; False re-scores every pair in full.
    """

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        scoring: Scoring = "sum",
        chat: bool = False,
        batch_size: int = 16,
        cached: bool = True,
    ) -> None:
        if scoring not in SCORINGS:
            raise ConfigError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        head: str = model.config.head
        if head == "causal_lm" and model.decoder is None:
            self.kind = "causal"
        elif head in ("masked_lm", "pretraining"):
            self.kind = "masked"
        else:
            raise UnsupportedError(
                f"prompted classification needs a causal LM or a masked LM, got a {head!r} model"
            )
        self.model, self.tokenizer = model.eval(), tokenizer
        self.scoring: Scoring = scoring
        self.batch_size, self.cached = batch_size, cached
        self.chat_frame: tuple[str, str] | None = None
        if chat:
            if self.kind != "causal":
                raise ConfigError("chat-template prompting needs a causal (instruct) LM")
            rendered = tokenizer.apply_chat_template([{"role": "user", "content": _CHAT_PLACEHOLDER}])
            head, _, tail = rendered.partition(_CHAT_PLACEHOLDER)
            self.chat_frame = (head, tail)
        self.special_start, self.special_end = _special_frame(tokenizer)
        self._prefix_memo: tuple[tuple[int, ...], KVCache] | None = None

    def segments(
        self, template: PromptTemplate, texts: Sequence[str], demos: Sequence[tuple[str, str]] = ()
    ) -> PromptSegments:
        """The prompt's text pieces for these inputs and (text, label word) demonstrations."""
        blocks = [template.instruction] if template.instruction else []
        blocks += [template.demonstration(text, word) for text, word in demos]
        prefix = template.separator.join(blocks)
        lead = template.separator if blocks else ""
        queries = [lead + template.query(text) for text in texts]
        label_lead = template.label_lead
        if self.chat_frame is not None:
            head, tail = self.chat_frame
            prefix, queries, label_lead = head + prefix, [q + tail for q in queries], ""
        return PromptSegments(prefix, queries, label_lead)

    def encode(self, segments: PromptSegments, label_words: Sequence[str], suffix: str = "") -> EncodedPrompt:
        """Token ids of the pieces, each tokenized on its own (see the module docstring)."""

        def enc(text: str) -> list[int]:
            return self.tokenizer.encode(text, add_special_tokens=False) if text else []

        label_ids = [enc(segments.label_lead + word) for word in label_words]
        for word, ids in zip(label_words, label_ids):
            if not ids:
                raise ConfigError(f"label word {word!r} encodes to no tokens")
        return EncodedPrompt(
            prefix_ids=self.special_start + enc(segments.prefix),
            query_ids=[enc(q) for q in segments.queries],
            label_ids=label_ids,
            suffix_ids=enc(suffix) + self.special_end,
        )

    def label_logprobs(
        self,
        template: PromptTemplate,
        texts: Sequence[str],
        label_words: Sequence[str],
        demos: Sequence[tuple[str, str]] = (),
    ) -> tuple[Tensor, list[int]]:
        """Per-token log-probabilities (N, C, L) of each label word for each input, and label lengths."""
        if len(label_words) < 2:
            raise ConfigError(f"need at least two label words, got {list(label_words)}")
        segments = self.segments(template, texts, demos)
        encoded = self.encode(segments, label_words, template.tail)
        if self.kind == "causal" and encoded.prefix_ids and any(not q for q in encoded.query_ids):
            encoded.prefix_ids, encoded.query_ids = shift_last_prefix_token(
                encoded.prefix_ids, encoded.query_ids
            )
        lengths = [len(ids) for ids in encoded.label_ids]
        if self.kind == "masked":
            mask_id = self.tokenizer.backend.token_to_id(self.tokenizer.special_tokens.get("mask_token", ""))
            if mask_id is None:
                raise ConfigError("this tokenizer has no mask token; cloze scoring needs one")
            before = [encoded.prefix_ids + q for q in encoded.query_ids]
            logprobs = masked_label_logprobs(
                self.model, mask_id, before, encoded.suffix_ids, encoded.label_ids, self.batch_size
            )
            return logprobs, lengths
        return (
            causal_label_logprobs(
                self.model,
                encoded.prefix_ids,
                encoded.query_ids,
                encoded.label_ids,
                self.batch_size,
                self.cached,
                self._prefix_cache(encoded.prefix_ids) if self.cached else None,
            ),
            lengths,
        )

    def _prefix_cache(self, prefix_ids: list[int]) -> KVCache:
        """The KV cache of the last prefix seen, kept so that content-free inputs, the test set and
        the calibration set scored under one prompt share a single prefix pass."""
        key = tuple(prefix_ids)
        if self._prefix_memo is None or self._prefix_memo[0] != key:
            self._prefix_memo = (key, encode_prefix(self.model, prefix_ids))
        return self._prefix_memo[1]

    def score(
        self,
        template: PromptTemplate,
        texts: Sequence[str],
        label_words: Sequence[str],
        demos: Sequence[tuple[str, str]] = (),
    ) -> np.ndarray:
        """Class scores [N, C] (float64): reduced label log-probabilities; softmax gives probabilities."""
        logprobs, lengths = self.label_logprobs(template, texts, label_words, demos)
        return reduce_label_logprobs(logprobs, lengths, self.scoring).double().numpy()

    def score_premise(self, template: PromptTemplate, label_words: Sequence[str]) -> np.ndarray:
        """Label scores [C] given only the domain premise (PMI): the template's answer cue, no demonstrations."""
        premise = template.premise()
        if not premise and self.chat_frame is None and not self.special_start and self.kind == "causal":
            raise ConfigError(
                f"template {template.template!r} has no text after {{text}} to serve as the PMI domain premise"
            )
        bare = PromptTemplate("{text}" + template.label_lead + "{label}" + template.tail, separator="")
        return self.score(bare, [premise], label_words)[0]
