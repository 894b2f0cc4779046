"""How the server runs the model: the :class:`Backend` protocol and its serial implementation.

The HTTP layer (:mod:`lmforge.serve.app`) turns a request into prompt ids and a
:class:`GenerationConfig`, hands them to a backend with :meth:`Backend.submit`, and reads back one
:class:`~lmforge.generate.TokenStep` per decoding step. Everything textual stays in the HTTP layer;
a backend deals in tokens only. What a backend must do:

- One submission is one prompt with ``config.n`` rows (samples); each step's lists are per row,
  exactly as :func:`lmforge.generate.stream` yields them for a one-prompt batch, and with
  temperature 0 the tokens are the ones :func:`lmforge.generate.generate` gives for that prompt.
- Rows end at EOS, ``config.stop_token_ids`` and ``config.max_new_tokens`` (the step that ends a
  row sets ``finished[row]``). ``config.stop`` (stop strings) a backend may ignore: the HTTP layer
  matches them on decoded text and cancels the request once every row has met one.
- :meth:`RequestStream.cancel` (the client went away, or every row stopped) frees the request's
  slot at the next token boundary; the stream then ends without error.
- A failure inside the model surfaces as an exception raised by the stream's iteration.
- :meth:`Backend.run` runs any other blocking model call (prompt scoring for ``echo``,
  embeddings) so that it never overlaps a decoding step of this backend.

:class:`SerialBackend` runs one request at a time in a worker thread, over
:func:`lmforge.generate.stream`. The continuous batcher (``lmforge.serve.scheduler``) implements
the same protocol: :func:`build_backend` calls its ``build_scheduler(model, max_batch=N)`` for
``max_batch > 1``.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

import torch

from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig, TokenStep, stream
from lmforge.models import TransformerModel

__all__ = [
    "Backend",
    "PromptScores",
    "RequestStream",
    "SerialBackend",
    "build_backend",
    "prompt_logprobs",
]

T = TypeVar("T")


class RequestStream(Protocol):
    """One submitted request: iterate it (``async for step in stream``) for its token steps."""

    def __aiter__(self) -> AsyncIterator[TokenStep]: ...

    def cancel(self) -> None:
        """Stop generating for this request (safe to call more than once, or after it ended)."""
        ...


class Backend(Protocol):
    """What the HTTP layer needs from whatever runs the model (see the module docstring)."""

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> RequestStream:
        """Queue one prompt for generation; call from the event loop's thread."""
        ...

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking model call (no decoding) without overlapping this backend's decoding."""
        ...

    async def close(self) -> None:
        """Cancel what is queued and release the worker(s)."""
        ...


_END = object()


@dataclass
class _Failure:
    error: BaseException


class _SerialStream:
    """A :class:`RequestStream` fed from the worker thread through the event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancelled = threading.Event()

    def put(self, item: object) -> None:
        """Hand an item to the event loop (called from the worker thread)."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()

    async def __aiter__(self) -> AsyncIterator[TokenStep]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            assert isinstance(item, TokenStep)
            yield item


class SerialBackend:
    """One request at a time, in submission order, on one worker thread.

    Args:
        model: a causal or seq2seq LM (put in eval mode here).
    """

    def __init__(self, model: TransformerModel) -> None:
        self.model = model.eval()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmforge-serve")
        self._streams: set[_SerialStream] = set()
        #: Rows decoding now (the current request's samples); read by the metrics.
        self.running = 0

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> _SerialStream:
        request = _SerialStream(asyncio.get_running_loop())
        self._streams.add(request)
        self._executor.submit(self._generate, request, list(prompt_ids), config)
        return request

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def close(self) -> None:
        for request in list(self._streams):
            request.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def _generate(self, request: _SerialStream, prompt_ids: list[int], config: GenerationConfig) -> None:
        try:
            if request.cancelled.is_set():
                return
            device = next(self.model.parameters()).device
            input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            self.running = config.n
            steps = stream(self.model, input_ids, None, config)
            try:
                for step in steps:
                    request.put(step)
                    if request.cancelled.is_set():
                        break
            finally:
                if isinstance(steps, Generator):  # release the KV cache now, not at garbage collection
                    steps.close()
        except Exception as error:  # handed to the request's reader, which reports it
            request.put(_Failure(error))
        finally:
            self.running = 0
            request.put(_END)
            self._streams.discard(request)


def build_backend(model: TransformerModel, max_batch: int = 1) -> Backend:
    """The backend for ``max_batch`` concurrent sequences: serial for 1, the continuous batcher above."""
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    if max_batch == 1:
        return SerialBackend(model)
    try:
        scheduler = importlib.import_module("lmforge.serve.scheduler")
    except ModuleNotFoundError:
        raise ConfigError(
            f"max_batch={max_batch} needs continuous batching (lmforge.serve.scheduler), which this "
            "version does not have; use max_batch 1"
        ) from None
    backend: Backend = scheduler.build_scheduler(model, max_batch=max_batch)
    return backend


@dataclass
class PromptScores:
    """Teacher-forced log-probabilities of a prompt's tokens under the model.

    ``logprobs[i]`` is log p(token i | tokens < i) for i >= 1 (the first token has none: ``None``);
    ``top_logprobs[i]`` the ``top`` most likely ``(token_id, logprob)`` at position i (``None`` for i = 0).
    """

    logprobs: list[float | None]
    top_logprobs: list[list[tuple[int, float]] | None]


def prompt_logprobs(model: TransformerModel, prompt_ids: Sequence[int], top: int = 0) -> PromptScores:
    """Score a prompt with one forward pass (``echo`` with ``logprobs``; log-likelihood evaluation)."""
    if model.config.is_encoder_decoder:
        raise ConfigError("prompt log-probabilities (echo) need a decoder-only model")
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)  # (1, T)
    with torch.inference_mode():
        logits = model(ids).logits
        assert logits is not None
        log_probs = logits[0, :-1].float().log_softmax(-1)  # (T-1, V): position i predicts token i+1
        chosen = log_probs.gather(1, ids[0, 1:, None])[:, 0]  # (T-1,)
        alternatives: list[list[tuple[int, float]] | None] = [None]
        if top:
            values, top_ids = log_probs.topk(top, dim=-1)  # (T-1, top)
            alternatives += [
                list(zip(i, v, strict=True)) for i, v in zip(top_ids.tolist(), values.tolist(), strict=True)
            ]
        else:
            alternatives += [[] for _ in range(ids.shape[1] - 1)]
    return PromptScores(logprobs=[None, *chosen.tolist()], top_logprobs=alternatives)
