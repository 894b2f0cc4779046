"""Constrained decoding: every generated row follows a grammar (a JSON schema, a regex, a list of
choices, a Lark grammar), enforced as a logits mask at each decoding step.

The engine's hook is small. ``GenerationConfig.constraint`` holds a :class:`ConstraintSpec`
(immutable, shared by every row and request that uses it); each row :meth:`~ConstraintSpec.start`\\ s
its own :class:`Constraint`, whose :meth:`~Constraint.allowed` mask is applied to the row's logits
before penalties, temperature and truncation (:func:`mask_logits`), and which
:meth:`~Constraint.advance`\\ s on the chosen token. A row's stop tokens are allowed only where the
grammar accepts the text so far, and a row ends ("stop") as soon as its grammar can take no
further token, so a finished row's text always parses.

:class:`Grammar` implements it with llguidance (a Rust grammar engine, in the ``serve`` extra):
the lmforge tokenizer's ``tokenizers`` JSON is handed to llguidance as is, so each token id's bytes (byte-level BPE, byte fallback, added tokens) are the tokenizer's own::

    grammar = Grammar.json_schema(tokenizer, {"type": "object", ...}, vocab_size=model.config.vocab_size)
    config = GenerationConfig(max_new_tokens=64, temperature=1.0, constraint=grammar)
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.tokenizers import Tokenizer

if TYPE_CHECKING:
    from llguidance import LLMatcher, LLTokenizer

__all__ = ["Constraint", "ConstraintSpec", "Grammar", "GrammarConstraint", "mask_logits"]


class Constraint(Protocol):
    """One row's constraint state."""

    def allowed(self, vocab_size: int) -> Tensor:
        """(V,) bool: the tokens the row may take next (its stop tokens only where it may end)."""
        ...

    def advance(self, token: int) -> None:
        """Take the chosen (non-stop) token."""
        ...

    def is_finished(self) -> bool:
        """True when no further token can follow: the row ends here."""
        ...


class ConstraintSpec(Protocol):
    """What ``GenerationConfig.constraint`` holds: starts one :class:`Constraint` per row."""

    def start(self, stop_ids: Sequence[int]) -> Constraint:
        """A fresh constraint for a row that ends at any of ``stop_ids``."""
        ...


def mask_logits(logits: Tensor, constraints: Sequence[Constraint | None]) -> Tensor:
    """``logits`` (B, V) with the tokens each row's constraint refuses set to -inf (a copy; rows
    whose constraint is None are unchanged)."""
    vocab = logits.shape[-1]
    allowed = torch.ones(logits.shape, dtype=torch.bool)  # (B, V)
    for row, constraint in enumerate(constraints):
        if constraint is not None:
            allowed[row] = constraint.allowed(vocab)
    return logits.masked_fill(~allowed.to(logits.device), float("-inf"))


# ----------------------------------------------------------------------------- llguidance


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise UnsupportedError(
            "structured output (a JSON schema, regex or choice constraint) needs llguidance: "
            "pip install 'lmforge[serve]' (or 'llguidance>=1.9,<2')"
        ) from None
    return llguidance


# Building llguidance's token table takes ~0.2 s for a 49k vocabulary: once per tokenizer and width.
_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, dict[int, LLTokenizer]] = weakref.WeakKeyDictionary()

# Compact JSON: a model may not pad its output with whitespace (a schema can ask otherwise with
# "x-guidance": {"whitespace_flexible": true}).
_JSON_DEFAULTS = {"whitespace_flexible": False}


def grammar_tokenizer(tokenizer: Tokenizer, vocab_size: int | None = None) -> LLTokenizer:
    """llguidance's view of ``tokenizer``, ``vocab_size`` ids wide (the model's logits; at least
    the tokenizer's own size: ids beyond it are never allowed)."""
    width = max(vocab_size or 0, tokenizer.vocab_size)
    cached = _TOKENIZERS.setdefault(tokenizer, {})
    if width not in cached:
        llguidance = _llguidance()
        try:
            cached[width] = llguidance.LLTokenizer(
                tokenizer.backend.to_str(), n_vocab=width, eos_token=tokenizer.eos_token_id
            )
        except Exception as error:  # llguidance refuses a tokenizer layout it cannot map to bytes
            raise ConfigError(f"this tokenizer cannot be used for structured output: {error}") from None
    return cached[width]


@dataclass(frozen=True, eq=False)
class Grammar:
    """A grammar compiled for one tokenizer (a :class:`ConstraintSpec`).

    Build it with :meth:`json_schema`, :meth:`json_object`, :meth:`regex`, :meth:`choice` or
    :meth:`lark`; each raises :class:`ConfigError` with llguidance's message when the grammar
    does not compile (an unsupported schema keyword, a bad regex).
    """

    kind: str
    source: str  # what was asked for, as text (a schema's JSON, the regex ...)
    tokenizer_info: LLTokenizer
    grammar: str  # llguidance's grammar

    @classmethod
    def json_schema(
        cls, tokenizer: Tokenizer, schema: dict[str, Any] | bool, vocab_size: int | None = None
    ) -> Grammar:
        """JSON text valid under ``schema`` (Draft 2020-12 as llguidance supports it)."""
        llguidance = _llguidance()
        source = json.dumps(schema)
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(source, defaults=_JSON_DEFAULTS)
        except ValueError as error:
            raise ConfigError(f"the JSON schema is not valid: {error}") from None
        return cls._compiled("json_schema", source, grammar, tokenizer, vocab_size)

    @classmethod
    def json_object(cls, tokenizer: Tokenizer, vocab_size: int | None = None) -> Grammar:
        """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return cls.json_schema(tokenizer, {"type": "object"}, vocab_size)

    @classmethod
    def regex(cls, tokenizer: Tokenizer, pattern: str, vocab_size: int | None = None) -> Grammar:
        """Text that fully matches ``pattern`` (Rust ``regex`` syntax: no look-around, no backreferences)."""
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"the regex must be a non-empty string, got {pattern!r}")
        grammar = _llguidance().LLMatcher.grammar_from_regex(pattern)
        return cls._compiled("regex", pattern, grammar, tokenizer, vocab_size)

    @classmethod
    def choice(cls, tokenizer: Tokenizer, choices: Sequence[str], vocab_size: int | None = None) -> Grammar:
        """Exactly one of ``choices``."""
        if not choices or not all(isinstance(c, str) and c for c in choices):
            raise ConfigError(f"choices must be a non-empty list of non-empty strings, got {choices!r}")
        lark = "start: " + " | ".join(json.dumps(c) for c in choices)
        grammar = _llguidance().LLMatcher.grammar_from_lark(lark)
        return cls._compiled("choice", json.dumps(list(choices)), grammar, tokenizer, vocab_size)

    @classmethod
    def lark(cls, tokenizer: Tokenizer, text: str, vocab_size: int | None = None) -> Grammar:
        """Text of a Lark grammar (llguidance's dialect, rule ``start``)."""
        grammar = _llguidance().LLMatcher.grammar_from_lark(text)
        return cls._compiled("lark", text, grammar, tokenizer, vocab_size)

    @classmethod
    def _compiled(
        cls, kind: str, source: str, grammar: str, tokenizer: Tokenizer, vocab_size: int | None
    ) -> Grammar:
        info = grammar_tokenizer(tokenizer, vocab_size)
        try:
            is_error, messages = _llguidance().LLMatcher.validate_grammar_with_warnings(grammar, info)
        except Exception as error:  # llguidance's own refusals come back as messages; be safe
            is_error, messages = True, [str(error)]
        if is_error:
            what = kind.replace("_", " ")
            raise ConfigError(f"the {what} does not compile: {messages[0] if messages else 'unknown error'}")
        return cls(kind, source, info, grammar)

    def start(self, stop_ids: Sequence[int]) -> GrammarConstraint:
        matcher = _llguidance().LLMatcher(self.tokenizer_info, self.grammar, log_level=0)
        return GrammarConstraint(matcher, self.tokenizer_info, stop_ids)


# Bit j of a 32-bit mask word is token 32 * word + j (llguidance's layout).
_BITS = torch.tensor([1 << j for j in range(31)] + [-(1 << 31)], dtype=torch.int32)


class GrammarConstraint:
    """One row's llguidance matcher (a :class:`Constraint`)."""

    def __init__(self, matcher: LLMatcher, info: LLTokenizer, stop_ids: Sequence[int]) -> None:
        self.matcher = matcher
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self.grammar_eos = torch.tensor(info.eos_tokens, dtype=torch.long)
        self._words = torch.zeros((info.vocab_size + 31) // 32, dtype=torch.int32)  # (W,)
        self._check()

    def allowed(self, vocab_size: int) -> Tensor:
        words = self._words
        self.matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * 4)
        self._check()
        bits = ((words[:, None] & _BITS) != 0).flatten()  # (32 W,)
        if bits.numel() < vocab_size:
            bits = torch.cat((bits, bits.new_zeros(vocab_size - bits.numel())))
        allowed = bits[:vocab_size].clone()
        # The grammar's own EOS stands for "may end here": the row's stop tokens take its place.
        allowed[self.grammar_eos[self.grammar_eos < vocab_size]] = False
        stops = self.stop_ids[self.stop_ids < vocab_size]
        if self.matcher.is_accepting() or not allowed.any():
            allowed[stops] = True
        if not allowed.any():
            raise RuntimeError("the grammar allows no next token and the row has no stop token to end it")
        return allowed

    def advance(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"token {token} broke the grammar: {self.matcher.get_error()}")

    def is_finished(self) -> bool:
        return self.matcher.is_stopped()

    def _check(self) -> None:
        if self.matcher.is_error():
            raise RuntimeError(f"grammar matcher failed: {self.matcher.get_error()}")
