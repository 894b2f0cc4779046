"""``POST /v1/completions``: text or token-id prompts, sampling, stop strings, logprobs, echo, streaming.

With ``echo`` and ``logprobs`` the prompt's own tokens are scored by one teacher-forced forward
pass (the first token has no log-probability), which is what log-likelihood evaluation reads;
``max_tokens: 0`` then returns the prompt's scores alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from starlette.responses import Response

from lmforge.generate import GenerationConfig
from lmforge.serve.backend import PromptScores, prompt_logprobs
from lmforge.serve.errors import bad_request
from lmforge.serve.runs import RowDelta, RowResult, run_text
from lmforge.serve.schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
from lmforge.serve.sse import EventStream, event
from lmforge.serve.state import ServerState
from lmforge.serve.structured import request_grammar


@dataclass
class _Prompt:
    text: str | None  # as sent, for echo (None: token ids)
    ids: list[int]
    scores: PromptScores | None = None


async def create_completion(state: ServerState, body: CompletionRequest) -> Response | CompletionResponse:
    state.check_model(body.model)
    state.check_generation()
    if body.best_of not in (None, body.n):
        raise bad_request("best_of is not supported (only best_of == n)", "best_of")
    if body.logit_bias:
        raise bad_request("logit_bias is not supported", "logit_bias")
    if body.suffix:
        raise bad_request("suffix (insertion) is not supported", "suffix")
    raw = _prompt_list(body.prompt)
    if not raw:
        raise bad_request("prompt: give at least one prompt", "prompt")
    if len(raw) > state.config.max_prompts:
        raise bad_request(
            f"prompt: {len(raw)} prompts in one request, over this server's limit of {state.config.max_prompts}",
            "prompt",
        )
    prompts = [
        _Prompt(
            p if isinstance(p, str) else None,
            state.encode(p, param="prompt" if len(raw) == 1 else f"prompt[{i}]"),
        )
        for i, p in enumerate(raw)
    ]
    max_new = state.max_new_tokens(body.max_tokens, [len(p.ids) for p in prompts], default=16)
    config = state.generation_config(body, max_new, body.logprobs)
    config = dataclasses.replace(config, constraint=await request_grammar(state, body))
    if body.echo and body.logprobs is not None and state.model.config.is_encoder_decoder:
        raise bad_request("echo with logprobs needs a decoder-only model", "echo")
    request_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    copies = body.n if config.n == 1 else 1

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": state.model_name,
            "choices": choices,
        }

    state.admit()
    handed_over = False
    try:
        if body.echo and body.logprobs is not None:
            for prompt in prompts:
                prompt.scores = await state.backend.run(
                    partial(prompt_logprobs, state.model, prompt.ids, body.logprobs)
                )
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage
            response = EventStream(
                _stream(state, body, prompts, config, copies, chunk, include_usage, max_new > 0),
                state.release,
            )
            handed_over = True
            return response
        results: dict[tuple[int, int], RowResult] = {}
        async for index, deltas in merged_runs(state, [p.ids for p in prompts], config, generate=max_new > 0):
            for delta in deltas:
                results.setdefault((index, delta.row), RowResult()).add(delta)
    finally:
        if not handed_over:
            state.release()
    choices: list[CompletionChoice] = []
    for index, prompt in enumerate(prompts):
        for sample in range(body.n):
            result = results[(index, 0 if copies > 1 else sample)]
            choices.append(_choice(state, body, prompt, result, len(choices)))
    usage = _usage(
        prompts,
        sum(
            len(results[(i, 0 if copies > 1 else s)].token_ids)
            for i in range(len(prompts))
            for s in range(body.n)
        ),
    )
    return CompletionResponse(
        id=request_id, created=created, model=state.model_name, choices=choices, usage=usage
    )


def _prompt_list(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def _usage(prompts: Sequence[_Prompt], completion_tokens: int) -> Usage:
    prompt_tokens = sum(len(p.ids) for p in prompts)
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _choice(
    state: ServerState, body: CompletionRequest, prompt: _Prompt, result: RowResult, index: int
) -> CompletionChoice:
    text = result.text
    logprobs = None
    if body.echo:
        text = _prompt_text(state, prompt) + text
    if body.logprobs is not None:
        logprobs = _logprobs(
            state, body, prompt if body.echo else None, result.token_ids, result.logprobs, result.top_logprobs
        )
    return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=result.finish_reason)


def _prompt_text(state: ServerState, prompt: _Prompt) -> str:
    return (
        prompt.text
        if prompt.text is not None
        else state.tokenizer.decode(prompt.ids, skip_special_tokens=False)
    )


def _logprobs(
    state: ServerState,
    body: CompletionRequest,
    prompt: _Prompt | None,
    token_ids: Sequence[int],
    logprobs: Sequence[float],
    top_logprobs: Sequence[Sequence[tuple[int, float]]],
    offset: int = 0,
) -> CompletionLogprobs:
    """OpenAI's legacy logprobs object; with ``prompt`` (echo) its scored tokens come first."""
    ids: list[int] = []
    values: list[float | None] = []
    tops: list[Sequence[tuple[int, float]] | None] = []
    if prompt is not None:
        assert prompt.scores is not None
        ids += prompt.ids
        values += prompt.scores.logprobs
        tops += prompt.scores.top_logprobs
    ids += token_ids
    values += logprobs
    tops += list(top_logprobs) if top_logprobs else [[] for _ in token_ids]
    tokens = [state.token_text(i) for i in ids]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    top_dicts: list[dict[str, float] | None] | None = None
    if body.logprobs:
        top_dicts = [None if top is None else {state.token_text(t): v for t, v in top} for top in tops]
    return CompletionLogprobs(
        tokens=tokens, token_logprobs=values, top_logprobs=top_dicts, text_offset=offsets
    )


async def merged_runs(
    state: ServerState, prompts: Sequence[Sequence[int]], config: GenerationConfig, generate: bool = True
) -> AsyncIterator[tuple[int, list[RowDelta]]]:
    """Run every prompt at once (the backend decides what runs together); yield ``(prompt index, deltas)``.

    ``generate=False`` (``max_tokens: 0``) ends every row at once, empty, with finish reason "length".
    Tokens generated and each prompt's time to first token go to the server's metrics.
    """
    start, started = time.perf_counter(), set()
    async for index, deltas in _runs(state, prompts, config, generate):
        tokens = sum(len(delta.token_ids) for delta in deltas)
        if tokens:
            state.metrics.tokens.inc(tokens)
            if index not in started:
                started.add(index)
                state.metrics.first_token.observe(time.perf_counter() - start)
        yield index, deltas


async def _runs(
    state: ServerState, prompts: Sequence[Sequence[int]], config: GenerationConfig, generate: bool
) -> AsyncIterator[tuple[int, list[RowDelta]]]:
    if not generate:
        for index in range(len(prompts)):
            yield index, [RowDelta(row, "", [], finish_reason="length") for row in range(config.n)]
        return
    if len(prompts) == 1:
        async for deltas in run_text(
            state.backend, state.model, state.tokenizer, prompts[0], config, state.config.request_timeout_s
        ):
            yield 0, deltas
        return
    queue: asyncio.Queue[tuple[int, list[RowDelta] | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, ids: Sequence[int]) -> None:
        try:
            async for deltas in run_text(
                state.backend, state.model, state.tokenizer, ids, config, state.config.request_timeout_s
            ):
                queue.put_nowait((index, deltas))
            queue.put_nowait((index, None))
        except Exception as error:
            queue.put_nowait((index, error))

    tasks = [asyncio.create_task(pump(index, ids)) for index, ids in enumerate(prompts)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _stream(
    state: ServerState,
    body: CompletionRequest,
    prompts: Sequence[_Prompt],
    config: GenerationConfig,
    copies: int,
    chunk: Any,
    include_usage: bool,
    generate: bool,
) -> AsyncIterator[str]:
    offsets: dict[int, int] = {}  # where each choice's next token starts in its text (text_offset)

    def choice(
        index: int, text: str, logprobs: CompletionLogprobs | None, reason: str | None
    ) -> dict[str, Any]:
        if logprobs is not None:
            offsets[index] = offsets.get(index, 0) + sum(len(token) for token in logprobs.tokens)
        dumped = logprobs.model_dump() if logprobs is not None else None
        return {"index": index, "text": text, "logprobs": dumped, "finish_reason": reason}

    if body.echo:
        for index, prompt in enumerate(prompts):
            scored = _logprobs(state, body, prompt, [], [], []) if body.logprobs is not None else None
            text = _prompt_text(state, prompt)
            yield event(
                chunk([choice(index * body.n + sample, text, scored, None) for sample in range(body.n)])
            )
    completion_tokens = 0
    async for index, deltas in merged_runs(state, [p.ids for p in prompts], config, generate):
        choices = []
        for delta in deltas:
            for sample in range(copies) if copies > 1 else [delta.row]:
                at = index * body.n + sample
                logprobs = None
                if body.logprobs is not None:
                    logprobs = _logprobs(
                        state,
                        body,
                        None,
                        delta.token_ids,
                        delta.logprobs,
                        delta.top_logprobs,
                        offsets.get(at, 0),
                    )
                completion_tokens += len(delta.token_ids)
                choices.append(choice(at, delta.text, logprobs, delta.finish_reason))
        yield event(chunk(choices))
    if include_usage:
        yield event({**chunk([]), "usage": _usage(prompts, completion_tokens).model_dump()})
