"""Text from a backend's token steps: what every generation route reads.

:func:`run_text` submits one prompt to a :class:`~lmforge.serve.backend.Backend` and turns its
token steps into per-row text with :class:`lmforge.generate.text.IncrementalDecoder` (the text
layer's decoder: never splits a UTF-8 character, matches stop strings across token boundaries,
holds back a tail that could still grow into one). A row that meets a stop string drops the
tokens after it; when every row has finished the request is cancelled, so the backend frees its
slot at once. Leaving the iteration early (a client that went away) cancels it too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from lmforge.generate import GenerationConfig
from lmforge.generate.steps import FinishReason
from lmforge.generate.text import IncrementalDecoder
from lmforge.models import TransformerModel
from lmforge.serve.backend import Backend
from lmforge.tokenizers import Tokenizer

# Prompt tokens decoded before the generated ones, as the text layer does, so that a decoder which
# strips a sequence's leading space (SentencePiece) keeps the first generated word's space.
_CONTEXT_TOKENS = 5


@dataclass
class RowDelta:
    """What one step added to one row: stable text, the tokens that made it and their log-probabilities."""

    row: int
    text: str
    token_ids: list[int]
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: FinishReason | None = None


@dataclass
class RowResult:
    """One row's whole completion."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: FinishReason = "length"

    def add(self, delta: RowDelta) -> None:
        self.text += delta.text
        self.token_ids += delta.token_ids
        self.logprobs += delta.logprobs
        self.top_logprobs += delta.top_logprobs
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason


def with_default_eos(
    config: GenerationConfig, model: TransformerModel, tokenizer: Tokenizer
) -> GenerationConfig:
    """End rows at the tokenizer's EOS when the model's config names none (as the text layer does)."""
    if (
        config.eos_token_id is None
        and model.config.eos_token_id is None
        and tokenizer.eos_token_id is not None
    ):
        return dataclasses.replace(config, eos_token_id=tokenizer.eos_token_id)
    return config


async def run_text(
    backend: Backend,
    model: TransformerModel,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
    timeout_s: float | None = None,
) -> AsyncIterator[list[RowDelta]]:
    """Generate for one prompt; yield each step's row deltas (rows ``0..config.n-1``, only those that changed).

    The last delta of a row carries its ``finish_reason``; every row gets one. After ``timeout_s``
    seconds (queueing included) the request is cancelled and its rows end as if they had reached
    ``max_tokens`` (finish reason "length").
    """
    context = [] if model.config.is_encoder_decoder else list(prompt_ids[-_CONTEXT_TOKENS:])
    decoders = [IncrementalDecoder(tokenizer, context, config.stop) for _ in range(config.n)]
    done = [False] * config.n
    request = backend.submit(prompt_ids, config)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    steps = aiter(request)
    try:
        while True:
            try:
                if deadline is None:
                    step = await anext(steps)
                else:
                    step = await asyncio.wait_for(anext(steps), max(0.0, deadline - time.monotonic()))
            except (StopAsyncIteration, asyncio.TimeoutError):
                break
            deltas = []
            for row, tokens in enumerate(step.tokens):
                if done[row]:
                    continue
                decoder = decoders[row]
                before = decoder.token_count
                decoder.extend(tokens)
                kept = decoder.token_count - before  # tokens after a stop string are dropped
                reason = step.finished[row] or ("stop" if decoder.stopped else None)
                if reason is not None:
                    decoder.finish()
                    done[row] = True
                text = decoder.delta(final=reason is not None)
                if text or kept or reason is not None:
                    deltas.append(
                        RowDelta(
                            row,
                            text,
                            list(tokens[:kept]),
                            list(step.logprobs[row][:kept]) if step.logprobs is not None else [],
                            list(step.top_logprobs[row][:kept]) if step.top_logprobs is not None else [],
                            ("stop" if decoder.stopped else reason) if reason is not None else None,
                        )
                    )
            if deltas:
                yield deltas
            if all(done):
                break
    finally:
        request.cancel()
    leftover = [row for row in range(config.n) if not done[row]]
    if leftover:  # the stream ended without marking these rows (max_new_tokens 0, or cancelled)
        final = []
        for row in leftover:
            decoders[row].finish()
            final.append(RowDelta(row, decoders[row].delta(final=True), [], finish_reason="length"))
        yield final


async def complete_text(
    backend: Backend,
    model: TransformerModel,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    config: GenerationConfig,
) -> list[RowResult]:
    """Every row's whole completion for one prompt (the non-streaming routes)."""
    results = [RowResult() for _ in range(config.n)]
    async for deltas in run_text(backend, model, tokenizer, prompt_ids, config):
        for delta in deltas:
            results[delta.row].add(delta)
    return results
