"""Server-sent events as OpenAI streams them: ``data: {json}`` per chunk, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lmforge.errors import LmforgeError
from lmforge.serve.errors import APIError

logger = logging.getLogger("lmforge.serve")

DONE = "data: [DONE]\n\n"


def event(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


async def guarded(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """The chunks, then ``[DONE]``; a failure after the headers went out becomes an error event."""
    try:
        async for chunk in chunks:
            yield chunk
    except LmforgeError as error:
        yield event(APIError(400, str(error)).body())
    except APIError as error:
        yield event(error.body())
    except Exception as error:  # the status line is sent: the error can only travel in the stream
        logger.exception("generation failed while streaming")
        yield event(
            APIError(500, f"internal error: {type(error).__name__}: {error}", type="server_error").body()
        )
    yield DONE


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that calls ``on_close`` however it ends (done, failed,
    client gone), so the request's queue slot is always given back."""

    def __init__(self, chunks: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(
            guarded(chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
