"""A plugged-in Backend (here a slow fake) behind the app; the per-request timeout cancels it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from serving import serving

import lmforge
from lmforge.generate import GenerationConfig, TokenStep
from lmforge.serve.config import ServeConfig

T = TypeVar("T")


class SlowStream:
    def __init__(self, token: int) -> None:
        self.token, self.cancelled = token, False

    async def __aiter__(self) -> AsyncIterator[TokenStep]:
        while not self.cancelled:
            await asyncio.sleep(0.05)
            yield TokenStep(tokens=[[self.token]], finished=[None])

    def cancel(self) -> None:
        self.cancelled = True


class SlowBackend:
    """One token every 50 ms, forever: only a cancel ends it."""

    def __init__(self, token: int) -> None:
        self.token = token
        self.streams: list[SlowStream] = []

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> SlowStream:
        self.streams.append(SlowStream(self.token))
        return self.streams[-1]

    async def run(self, fn: Callable[[], T]) -> T:
        return fn()

    async def close(self) -> None:
        pass


def test_a_slow_generation_ends_at_the_timeout(random_dir: Path) -> None:
    loaded = lmforge.load(random_dir)
    token = loaded.tokenizer.encode("a", add_special_tokens=False)[0]
    backend = SlowBackend(token)
    with serving(loaded, config=ServeConfig(request_timeout_s=0.5), backend=backend) as server:
        client = server.client()
        response = client.completions.create(
            model="tiny-llama", prompt="Hello", max_tokens=100, temperature=0
        )
        (choice,) = response.choices
        assert choice.finish_reason == "length" and 2 <= len(choice.text) < 20
        assert set(choice.text) == {"a"} and backend.streams[-1].cancelled
        chunks = list(
            client.chat.completions.create(
                model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=100, stream=True
            )
        )
        assert chunks[-1].choices[0].finish_reason == "length" and backend.streams[-1].cancelled


@pytest.mark.parametrize("value", [0, -1.0, "10s", True])
def test_bad_timeouts_are_refused(value: object) -> None:
    with pytest.raises(lmforge.LmforgeError, match="request_timeout_s"):
        ServeConfig(request_timeout_s=value)  # type: ignore[arg-type]
