"""Structured output: the grammar a generation request asks for, enforced while decoding
(:mod:`lmforge.generate.constrain`), so that a reply that finished (``finish_reason: "stop"``)
always parses.

- ``response_format`` (chat, as OpenAI's): ``{"type": "json_schema", "json_schema": {"name": ...,
  "schema": {...}}}`` or ``{"type": "json_object"}`` (any JSON object); ``"text"`` is no constraint.
- ``guided_json`` (a schema, object or JSON text), ``guided_regex`` (the whole reply matches it),
  ``guided_choice`` (the reply is one of the strings): vLLM's extra fields, on chat and completions
  (the ``openai`` client sends them with ``extra_body``).

At most one of them per request. A schema or regex the grammar engine cannot compile is a 400
naming the field, with the engine's reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from lmforge.errors import ConfigError
from lmforge.generate.constrain import Grammar
from lmforge.serve.errors import bad_request
from lmforge.serve.schemas import ChatRequest, CompletionRequest
from lmforge.serve.state import ServerState

__all__ = ["request_grammar"]


async def request_grammar(state: ServerState, body: ChatRequest | CompletionRequest) -> Grammar | None:
    """The request's constraint, compiled for the served tokenizer (None: free text)."""
    asked: list[tuple[str, Callable[[], Grammar]]] = []
    tokenizer, vocab = state.tokenizer, state.model.config.vocab_size
    response_format = body.response_format if isinstance(body, ChatRequest) else None
    if response_format is not None and response_format.type == "json_object":
        asked.append(("response_format", lambda: Grammar.json_object(tokenizer, vocab)))
    elif response_format is not None and response_format.type == "json_schema":
        spec = response_format.json_schema
        if spec is None:
            raise bad_request(
                'response_format type "json_schema" needs json_schema: {"name": ..., "schema": {...}}',
                "response_format.json_schema",
            )
        schema = spec.schema_ if spec.schema_ is not None else {"type": "object"}
        asked.append(
            ("response_format.json_schema.schema", lambda: Grammar.json_schema(tokenizer, schema, vocab))
        )
    if body.guided_json is not None:
        schema_text = body.guided_json
        asked.append(("guided_json", lambda: Grammar.json_schema(tokenizer, _schema(schema_text), vocab)))
    if body.guided_regex is not None:
        pattern = body.guided_regex
        asked.append(("guided_regex", lambda: Grammar.regex(tokenizer, pattern, vocab)))
    if body.guided_choice is not None:
        choices = body.guided_choice
        asked.append(("guided_choice", lambda: Grammar.choice(tokenizer, choices, vocab)))
    if not asked:
        return None
    if len(asked) > 1:
        names = ", ".join(name.split(".")[0] for name, _ in asked)
        raise bad_request(f"give one structured-output constraint, not several ({names})", asked[1][0])
    param, build = asked[0]
    try:
        # Compiling a large schema (and, once per tokenizer, its token table) takes a while: not
        # on the event loop.
        return await asyncio.to_thread(build)
    except ConfigError as error:
        raise bad_request(f"{param}: {error}", param) from None


def _schema(value: dict[str, Any] | str) -> dict[str, Any] | bool:
    if isinstance(value, dict):
        return value
    try:
        schema = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigError(f"not a JSON schema: the text is not JSON ({error})") from None
    if not isinstance(schema, dict | bool):
        raise ConfigError(f"a JSON schema is an object, got {type(schema).__name__}")
    return schema
