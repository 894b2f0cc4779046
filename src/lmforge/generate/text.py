"""Text in, text out: the engine of :mod:`lmforge.generate.engine` over a :class:`Tokenizer`.

:func:`stream_text` yields, step by step, what each row's text gained; :func:`generate_text`
returns whole completions. Two things happen on decoded text rather than on tokens:

- Incremental detokenization. A byte-level BPE token may hold half of a UTF-8 character (an
  emoji is often two or three tokens), so a token decoded alone gives U+FFFD. Each row decodes a
  short window of its recent ids and hands out only the text that no later token can change; a
  trailing U+FFFD waits for the bytes that complete it. The deltas of a row join to its text.
- Stop strings (``config.stop``), matched on the decoded text, so a stop string split over two
  tokens still ends the row. As in OpenAI's API the text ends before the stop string, and a
  stream holds back a tail that could still grow into one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from lmforge.errors import ConfigError
from lmforge.generate.config import GenerationConfig
from lmforge.generate.engine import stream
from lmforge.generate.steps import FinishReason
from lmforge.models import TransformerModel
from lmforge.tokenizers import Tokenizer

__all__ = [
    "IncrementalDecoder",
    "TextCompletion",
    "TextStep",
    "encode_prompts",
    "generate_text",
    "stream_text",
]

# Prompt tokens decoded in front of the generated ones, so that a decoder which strips the
# leading space of a sequence (SentencePiece) keeps the space of the first generated word.
_CONTEXT_TOKENS = 5
_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """One row's text, grown token by token without ever splitting a UTF-8 character.

    Decodes ``ids[prefix:]`` and keeps what it adds to ``ids[prefix:read]`` (the window that was
    already stable), unless it ends in U+FFFD: then the last token's bytes are incomplete and the
    text waits. ``stop`` strings are searched in the text as it grows.

    Args:
        tokenizer: decodes the ids.
        context: ids decoded before the row's own (the prompt's tail); not part of :attr:`text`.
        stop: stop strings.
    """

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = (), stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self._ids: list[int] = list(context)
        self._context = len(self._ids)
        self._prefix, self._read = 0, len(self._ids)
        self.text = ""
        #: Generated ids pushed so far (not counting those after a stop string).
        self.token_count = 0
        #: Where the stop string starts in :attr:`text`, once one was met.
        self.stop_at: int | None = None
        self._emitted = 0

    @property
    def stopped(self) -> bool:
        """A stop string was met; later tokens are ignored."""
        return self.stop_at is not None

    def push(self, token: int) -> bool:
        """Add one generated token; True when the text now holds a stop string."""
        if self.stopped:
            return True
        self._ids.append(token)
        self.token_count += 1
        before = self.tokenizer.decode(self._ids[self._prefix : self._read])
        after = self.tokenizer.decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(_REPLACEMENT):
            self._grow(after[len(before) :])
            self._prefix, self._read = self._read, len(self._ids)
        return self.stopped

    def extend(self, tokens: Sequence[int]) -> bool:
        """Push several tokens (stopping at a stop string); True when stopped."""
        for token in tokens:
            if self.push(token):
                break
        return self.stopped

    def finish(self) -> None:
        """The row ended: take the text still held back (bytes that never completed show as U+FFFD)."""
        if self.stopped:
            return
        before = self.tokenizer.decode(self._ids[self._prefix : self._read])
        after = self.tokenizer.decode(self._ids[self._prefix :])
        if len(after) > len(before):
            self._grow(after[len(before) :])
        self._prefix = self._read = len(self._ids)

    def delta(self, final: bool = False) -> str:
        """The text not handed out yet that is safe to hand out now.

        Until ``final`` a tail that is the start of a stop string is held back; the text of a
        stopped row ends before its stop string.
        """
        if self.stop_at is not None:
            end = self.stop_at
        elif final:
            end = len(self.text)
        else:
            end = len(self.text) - self._stop_prefix_length()
        if end <= self._emitted:
            return ""
        piece = self.text[self._emitted : end]
        self._emitted = end
        return piece

    @property
    def final_text(self) -> str:
        """The row's text, cut before its stop string."""
        return self.text if self.stop_at is None else self.text[: self.stop_at]

    def _grow(self, piece: str) -> None:
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0) + 1)
        self.text += piece
        hits = [index for s in self.stop if (index := self.text.find(s, start)) >= 0]
        if hits:
            self.stop_at = min(hits)

    def _stop_prefix_length(self) -> int:
        """Length of the longest tail of the unsent text that begins some stop string."""
        tail = self.text[self._emitted :]
        longest = min(len(tail), max((len(s) for s in self.stop), default=1) - 1)
        for length in range(longest, 0, -1):
            if any(s.startswith(tail[-length:]) for s in self.stop):
                return length
        return 0


@dataclass
class TextStep:
    """What one decoding step added to each row's text (rows prompt-major, ``n`` per prompt).

    ``deltas[r]`` is ``""`` when nothing new is stable yet; ``finished[r]`` is set on the step that
    ends row ``r`` (its last delta is in the same step).
    """

    deltas: list[str]
    finished: list[FinishReason | None]


@dataclass
class TextCompletion:
    """One row's result: its text (without the stop string or stop token), the token ids that made
    it, why it finished, and the ids' log-probabilities when ``config.logprobs`` asked for them."""

    prompt_index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


def encode_prompts(
    tokenizer: Tokenizer, prompts: Sequence[str] | Sequence[Sequence[int]], add_special_tokens: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of the prompts, left-padded: ``(input_ids, attention_mask)``, each (B, T).

    Prompts may be texts or id lists. Padding uses the pad token, else EOS, else 0: the mask hides it.
    """
    if not prompts:
        raise ConfigError("no prompts: give at least one")
    rows = [
        tokenizer.encode(p, add_special_tokens=add_special_tokens) if isinstance(p, str) else list(p)
        for p in prompts
    ]
    for index, ids in enumerate(rows):
        if not ids:
            raise ConfigError(f"prompt {index} encodes to no tokens; give a non-empty prompt")
    width = max(len(ids) for ids in rows)
    pad = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    return input_ids, mask


class TextRun:
    """The engine's stream of one batch, turned into text per row."""

    def __init__(
        self,
        model: TransformerModel,
        tokenizer: Tokenizer,
        prompts: Sequence[str] | Sequence[Sequence[int]],
        config: GenerationConfig,
        add_special_tokens: bool,
    ) -> None:
        if (
            config.eos_token_id is None
            and model.config.eos_token_id is None
            and tokenizer.eos_token_id is not None
        ):
            config = dataclasses.replace(config, eos_token_id=tokenizer.eos_token_id)
        self.model, self.config = model, config
        self.input_ids, self.mask = encode_prompts(tokenizer, prompts, add_special_tokens)
        device = next(model.parameters()).device
        self.input_ids, self.mask = self.input_ids.to(device), self.mask.to(device)
        self.prompt_lengths = [int(n) for n in self.mask.sum(-1).tolist()]
        with_context = not model.config.is_encoder_decoder
        self.rows: list[IncrementalDecoder] = []
        for prompt in range(len(prompts)):
            ids = self.input_ids[prompt, self.input_ids.shape[1] - self.prompt_lengths[prompt] :].tolist()
            context = ids[-_CONTEXT_TOKENS:] if with_context else []
            self.rows += [IncrementalDecoder(tokenizer, context, config.stop) for _ in range(config.n)]
        rows = len(self.rows)
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.logprobs: list[list[float]] = [[] for _ in range(rows)]
        self.top_logprobs: list[list[list[tuple[int, float]]]] = [[] for _ in range(rows)]
        self.reasons: list[FinishReason | None] = [None] * rows

    def _stop(self, row: int, generated: Sequence[int]) -> bool:
        decoder = self.rows[row]
        return decoder.extend(generated[decoder.token_count :]) if not decoder.stopped else True

    def steps(self) -> Iterator[TextStep]:
        stop = self._stop if self.config.stop else None
        for step in stream(self.model, self.input_ids, self.mask, self.config, stop):
            deltas = [""] * len(self.rows)
            finished: list[FinishReason | None] = [None] * len(self.rows)
            for row, tokens in enumerate(step.tokens):
                if self.reasons[row] is not None:
                    continue
                self.ids[row].extend(tokens)
                if step.logprobs is not None:
                    self.logprobs[row].extend(step.logprobs[row])
                if step.top_logprobs is not None:
                    self.top_logprobs[row].extend(step.top_logprobs[row])
                decoder = self.rows[row]
                # Beam search never calls the stop predicate: its stop strings are found here.
                decoder.extend(self.ids[row][decoder.token_count :])
                reason = step.finished[row] or ("stop" if decoder.stopped else None)
                if reason is not None:
                    finished[row] = self._finish(row, reason)
                deltas[row] = decoder.delta(final=reason is not None)
            yield TextStep(deltas, finished)
        leftover = [row for row, reason in enumerate(self.reasons) if reason is None]
        if leftover:  # a stream that ended without marking a row (max_new_tokens == 0)
            finished = [
                self._finish(row, "length") if row in leftover else None for row in range(len(self.rows))
            ]
            yield TextStep([self.rows[row].delta(final=True) for row in range(len(self.rows))], finished)

    def _finish(self, row: int, reason: FinishReason) -> FinishReason:
        decoder = self.rows[row]
        decoder.finish()
        if decoder.stopped:
            reason = "stop"
            # Tokens after the one that completed the stop string (speculative or beam steps).
            del self.ids[row][decoder.token_count :]
            del self.logprobs[row][decoder.token_count :]
            del self.top_logprobs[row][decoder.token_count :]
        self.reasons[row] = reason
        return reason

    def completions(self) -> list[TextCompletion]:
        return [
            TextCompletion(
                prompt_index=row // self.config.n,
                text=decoder.final_text,
                token_ids=self.ids[row],
                finish_reason=self.reasons[row] or "length",
                prompt_tokens=self.prompt_lengths[row // self.config.n],
                logprobs=self.logprobs[row] if self.config.logprobs else None,
                top_logprobs=self.top_logprobs[row]
                if self.config.logprobs and self.config.top_logprobs
                else None,
            )
            for row, decoder in enumerate(self.rows)
        ]


def stream_text(
    model: TransformerModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    add_special_tokens: bool = True,
) -> Iterator[TextStep]:
    """Generate for a batch of prompts, yielding each step's text deltas per row.

    Args:
        model: a causal or seq2seq LM.
        tokenizer: encodes the prompts and decodes the output.
        prompts: texts (or token id lists, e.g. a rendered chat prompt), one row each (``n`` rows
            with ``config.n``).
        config: how to decode; ``config.stop`` strings end a row and are cut from its text.
        add_special_tokens: let the tokenizer add BOS and the like to text prompts.

    Yields:
        One :class:`TextStep` per decoding step; a row's deltas join to its completion's text.
    """
    yield from TextRun(model, tokenizer, prompts, config or GenerationConfig(), add_special_tokens).steps()


def generate_text(
    model: TransformerModel,
    tokenizer: Tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    config: GenerationConfig | None = None,
    add_special_tokens: bool = True,
) -> list[TextCompletion]:
    """Generate for a batch of prompts; one :class:`TextCompletion` per row (prompt-major, ``n`` each).

    Same arguments as :func:`stream_text`.
    """
    run = TextRun(model, tokenizer, prompts, config or GenerationConfig(), add_special_tokens)
    for _ in run.steps():
        pass
    return run.completions()
