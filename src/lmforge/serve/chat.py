"""``POST /v1/chat/completions``: messages rendered with the tokenizer's chat template, replies
ended at the template's end-of-turn token (:func:`lmforge.generate.chat.end_of_turn`), streamed
as ``chat.completion.chunk`` objects when asked."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from functools import cache
from typing import Any

from starlette.responses import Response

from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig
from lmforge.generate.chat import end_of_turn
from lmforge.serve.completions import merged_runs
from lmforge.serve.errors import bad_request
from lmforge.serve.runs import RowResult
from lmforge.serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatRequest,
    ChatResponse,
    ChoiceLogprobs,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from lmforge.serve.sse import EventStream, event
from lmforge.serve.state import ServerState
from lmforge.serve.structured import request_grammar
from lmforge.tokenizers import Tokenizer


async def create_chat(state: ServerState, body: ChatRequest) -> Response | ChatResponse:
    state.check_model(body.model)
    state.check_generation()
    if body.tools:
        raise bad_request("tools (function calling) are not supported", "tools")
    if body.logit_bias:
        raise bad_request("logit_bias is not supported", "logit_bias")
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise bad_request("give max_completion_tokens or max_tokens, not both", "max_tokens")
    prompt_ids = render(state, body)
    max_new = state.max_new_tokens(
        body.max_completion_tokens or body.max_tokens, [len(prompt_ids)], default=None
    )
    stop_ids, stop_strings = _end_of_turn(state.tokenizer)
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    config = state.generation_config(body, max_new, logprobs, stop_ids, stop_strings)
    config = dataclasses.replace(config, constraint=await request_grammar(state, body))
    copies = body.n if config.n == 1 else 1
    request_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        state.admit()
        chunks = _stream(state, body, prompt_ids, config, copies, request_id, created, include_usage)
        return EventStream(chunks, state.release)
    with state.admitted():
        rows: dict[int, RowResult] = {}
        async for _, deltas in merged_runs(state, [prompt_ids], config):
            for delta in deltas:
                rows.setdefault(delta.row, RowResult()).add(delta)
    results = [rows[0 if copies > 1 else sample] for sample in range(body.n)]
    choices = [
        ChatChoice(
            index=index,
            message=AssistantMessage(content=result.text),
            logprobs=_logprobs(state, result.token_ids, result.logprobs, result.top_logprobs)
            if body.logprobs
            else None,
            finish_reason=result.finish_reason,
        )
        for index, result in enumerate(results)
    ]
    completion_tokens = sum(len(result.token_ids) for result in results)
    usage = Usage(
        prompt_tokens=len(prompt_ids),
        completion_tokens=completion_tokens,
        total_tokens=len(prompt_ids) + completion_tokens,
    )
    return ChatResponse(id=request_id, created=created, model=state.model_name, choices=choices, usage=usage)


def render(state: ServerState, body: ChatRequest) -> list[int]:
    """The prompt ids of a chat: the template's text with its generation prompt, no extra BOS."""
    if state.tokenizer.chat_template is None:
        raise bad_request("this model's tokenizer has no chat template; use /v1/completions", "messages")
    # Templates know system / user / assistant; OpenAI's newer "developer" role is a system message.
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]
    try:
        text = state.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except ConfigError as error:
        raise bad_request(f"messages: {error}", "messages") from None
    return state.encode(text, add_special_tokens=False, param="messages")


@cache
def _end_of_turn(tokenizer: Tokenizer) -> tuple[list[int], list[str]]:
    try:
        return end_of_turn(tokenizer)
    except ConfigError:  # a template that refuses the probe conversation: end at EOS only
        return ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []), []


def _logprobs(
    state: ServerState,
    token_ids: Sequence[int],
    logprobs: Sequence[float],
    top_logprobs: Sequence[Sequence[tuple[int, float]]],
) -> ChoiceLogprobs:
    def entry(token_id: int, value: float) -> dict[str, Any]:
        text = state.token_text(token_id)
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    tops = list(top_logprobs) if top_logprobs else [[] for _ in token_ids]
    return ChoiceLogprobs(
        content=[
            TokenLogprob(**entry(token, value), top_logprobs=[TopLogprob(**entry(t, v)) for t, v in top])
            for token, value, top in zip(token_ids, logprobs, tops, strict=True)
        ]
    )


async def _stream(
    state: ServerState,
    body: ChatRequest,
    prompt_ids: list[int],
    config: GenerationConfig,
    copies: int,
    request_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    def chunk(choices: list[dict[str, Any]]) -> str:
        payload = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": state.model_name,
            "choices": choices,
        }
        return event({**payload, "usage": None} if include_usage else payload)

    yield chunk(
        [
            {
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
            for i in range(body.n)
        ]
    )
    completion_tokens = 0
    async for _, deltas in merged_runs(state, [prompt_ids], config):
        choices = []
        for delta in deltas:
            logprobs = None
            if body.logprobs and delta.token_ids:
                logprobs = _logprobs(state, delta.token_ids, delta.logprobs, delta.top_logprobs).model_dump()
            for index in range(copies) if copies > 1 else [delta.row]:
                completion_tokens += len(delta.token_ids)
                if not delta.text and delta.finish_reason is None and logprobs is None:
                    continue  # half a UTF-8 character: nothing to send yet
                content = {"content": delta.text} if delta.text else {}
                choices.append(
                    {
                        "index": index,
                        "delta": content,
                        "logprobs": logprobs,
                        "finish_reason": delta.finish_reason,
                    }
                )
        if choices:
            yield chunk(choices)
    if include_usage:
        total = len(prompt_ids) + completion_tokens
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": completion_tokens,
            "total_tokens": total,
        }
        yield event(
            {
                "id": request_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": state.model_name,
                "choices": [],
                "usage": usage,
            }
        )
