"""Continuous batching behind the server's :class:`~lmforge.serve.backend.Backend` protocol.

One decode thread owns a :class:`~lmforge.generate.batch.BatchDecoder`. The event loop posts
submissions, cancellations and :meth:`Scheduler.run` calls to it; between two decoding steps (a
token boundary) the thread takes them in, admits queued requests into free slots (within the
max batch and the token budget), runs one step over every running request and hands each
request's :class:`~lmforge.generate.TokenStep` back to the event loop. A cancelled request (its
client went away, or every row met a stop string) leaves the batch at the next boundary.

A submission with ``config.n`` rows becomes ``n`` rows of the batch (sampled rows get seeds
``seed, seed + 1, ...`` when a seed is given, so they differ from each other and are reproducible
whatever else runs, though not the samples :func:`lmforge.generate.stream` draws from one shared
generator). Beam search and prompt-lookup requests cannot share a batch: the thread runs them
alone, between two steps. Models the batcher refuses (T5, sliding windows) get the serial backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from concurrent.futures import Future
from typing import TypeVar

import torch

from lmforge.errors import LmforgeWarning, UnsupportedError
from lmforge.generate import GenerationConfig, TokenStep, stream
from lmforge.generate.batch import BatchDecoder
from lmforge.models import TransformerModel
from lmforge.serve.backend import Backend, SerialBackend

__all__ = ["Scheduler", "build_scheduler"]

T = TypeVar("T")
_END = object()


class _Request:
    """One submission's :class:`~lmforge.serve.backend.RequestStream`, fed by the decode thread."""

    def __init__(
        self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop, config: GenerationConfig
    ) -> None:
        self._scheduler, self._loop, self.config = scheduler, loop, config
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.live: set[int] = set()  # the decoder's ids of this submission's unfinished rows
        self.ended = False

    def put(self, item: object) -> None:
        """Hand a step (or the end, or an error) to the event loop; called from the decode thread."""
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop closed: nobody reads this request any more
            self.cancel()

    def end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended = True
            self.put(error if error is not None else _END)

    def blank_step(self) -> TokenStep:
        rows, config = self.config.n, self.config
        return TokenStep(
            tokens=[[] for _ in range(rows)],
            finished=[None] * rows,
            logprobs=[[] for _ in range(rows)] if config.logprobs else None,
            top_logprobs=[[] for _ in range(rows)] if config.logprobs and config.top_logprobs else None,
        )

    def cancel(self) -> None:
        if not self.cancelled.is_set():
            self.cancelled.set()
            self._scheduler._post(("cancel", self))

    async def __aiter__(self) -> AsyncIterator[TokenStep]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, TokenStep)
            yield item


class Scheduler:
    """A :class:`~lmforge.serve.backend.Backend` decoding every running request in one batch.

    Args:
        model: a decoder-only causal LM (put in eval mode here).
        max_batch: most rows decoded together (a request with ``n`` samples takes ``n``).
        token_budget: most tokens one step processes (running rows + prompts admitted then);
            None: unbounded.
        max_length: positions per row (prompt + new tokens); default the model's ``max_positions``.
    """

    def __init__(
        self,
        model: TransformerModel,
        max_batch: int = 8,
        token_budget: int | None = None,
        max_length: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.decoder = BatchDecoder(self.model, max_batch, max_length, token_budget)
        self._inbox: deque[tuple[object, ...]] = deque()
        self._wake = threading.Condition()
        self._rows: dict[int, tuple[_Request, int]] = {}  # decoder id -> (submission, row)
        self._requests: set[_Request] = set()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lmforge-batcher", daemon=True)
        self._thread.start()

    # -- the Backend protocol (event loop's thread) ---------------------------------------------

    def submit(self, prompt_ids: Sequence[int], config: GenerationConfig) -> _Request:
        request = _Request(self, asyncio.get_running_loop(), config)
        self._post(("submit", request, list(prompt_ids), config))
        return request

    async def run(self, fn: Callable[[], T]) -> T:
        future: Future[T] = Future()
        self._post(("run", fn, future))
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        self._post(("close",))
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    @property
    def running(self) -> int:
        """Rows decoding now (read from any thread; a snapshot)."""
        return self.decoder.running

    @property
    def queued(self) -> int:
        """Rows waiting for a slot (a snapshot)."""
        return self.decoder.queued

    def _post(self, message: tuple[object, ...]) -> None:
        with self._wake:
            self._inbox.append(message)
            self._wake.notify()

    # -- the decode thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._inbox and not self.decoder.has_work():
                    self._wake.wait()
                messages = list(self._inbox)
                self._inbox.clear()
            for message in messages:
                self._handle(message)
            if self._closed:
                return
            if self.decoder.has_work():
                try:
                    events = self.decoder.step()
                except Exception as error:  # every running request learns of it; the batch restarts
                    self._fail_all(error)
                    continue
                self._dispatch(events)

    def _handle(self, message: tuple[object, ...]) -> None:
        kind = message[0]
        if kind == "submit":
            request, prompt_ids, config = message[1:]
            assert isinstance(request, _Request) and isinstance(config, GenerationConfig)
            assert isinstance(prompt_ids, list)
            self._admit(request, prompt_ids, config)
        elif kind == "cancel":
            request = message[1]
            assert isinstance(request, _Request)
            self._drop(request)
            request.end()
        elif kind == "run":
            fn, future = message[1:]
            assert isinstance(future, Future) and callable(fn)
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as error:
                    future.set_exception(error)
        elif kind == "close":
            self._closed = True
            for request in list(self._requests):
                self._drop(request)
                request.end()

    def _admit(self, request: _Request, prompt_ids: list[int], config: GenerationConfig) -> None:
        if request.cancelled.is_set() or self._closed:
            request.end()
            return
        if config.max_new_tokens == 0:  # as lmforge.generate.stream: no step at all
            request.end()
            return
        if config.num_beams > 1 or config.prompt_lookup_num_tokens:
            self._run_alone(request, prompt_ids, config)
            return
        single = dataclasses.replace(config, n=1)
        try:
            for row in range(config.n):
                seed = None if config.seed is None else config.seed + row
                request_id = self.decoder.add(prompt_ids, dataclasses.replace(single, seed=seed))
                self._rows[request_id] = (request, row)
                request.live.add(request_id)
        except Exception as error:  # a bad request: its reader gets the error, the batch goes on
            self._drop(request)
            request.end(error)
            return
        self._requests.add(request)

    def _run_alone(self, request: _Request, prompt_ids: list[int], config: GenerationConfig) -> None:
        """Beam search / prompt lookup: the engine's own loop, while the batch waits."""
        try:
            device = next(self.model.parameters()).device
            steps = stream(self.model, torch.tensor([prompt_ids], device=device), None, config)
            try:
                for step in steps:
                    request.put(step)
                    if request.cancelled.is_set():
                        break
            finally:
                if isinstance(steps, Generator):  # release its KV cache now
                    steps.close()
        except Exception as error:
            request.end(error)
        request.end()

    def _dispatch(self, events: list[tuple[int, TokenStep]]) -> None:
        """Fold one-row events into each submission's steps; a row's k-th event of this call goes
        to its k-th step (an admitted row gets two: its prefill token and its first decoded one)."""
        steps: dict[_Request, list[TokenStep]] = {}
        seen: dict[int, int] = {}
        for request_id, event in events:
            if request_id not in self._rows:
                continue
            request, row = self._rows[request_id]
            phase = seen[request_id] = seen.get(request_id, -1) + 1
            pending = steps.setdefault(request, [])
            while len(pending) <= phase:
                pending.append(request.blank_step())
            step = pending[phase]
            step.tokens[row] = event.tokens[0]
            step.finished[row] = event.finished[0]
            if step.logprobs is not None and event.logprobs is not None:
                step.logprobs[row] = event.logprobs[0]
            if step.top_logprobs is not None and event.top_logprobs is not None:
                step.top_logprobs[row] = event.top_logprobs[0]
            if event.finished[0] is not None:
                del self._rows[request_id]
                request.live.discard(request_id)
        for request, pending in steps.items():
            for step in pending:
                request.put(step)
            if not request.live:
                self._requests.discard(request)
                request.end()

    def _drop(self, request: _Request) -> None:
        for request_id in request.live:
            self.decoder.cancel(request_id)
            self._rows.pop(request_id, None)
        request.live.clear()
        self._requests.discard(request)

    def _fail_all(self, error: BaseException) -> None:
        for request in list(self._requests):
            self._drop(request)
            request.end(error)
        self.decoder = BatchDecoder(
            self.model, self.decoder.max_batch, self.decoder.max_length, self.decoder.token_budget
        )


def build_scheduler(
    model: TransformerModel,
    max_batch: int = 8,
    token_budget: int | None = None,
    max_length: int | None = None,
) -> Backend:
    """The continuous batcher for ``model``, or the serial backend (with a warning) for a model it
    cannot batch (encoder-decoder, relative positions, sliding windows)."""
    try:
        return Scheduler(model, max_batch, token_budget, max_length)
    except UnsupportedError as error:
        warnings.warn(LmforgeWarning(f"{error}; serving one request at a time"), stacklevel=2)
        return SerialBackend(model)
