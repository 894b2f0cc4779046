"""What every route shares: the model, its tokenizer, the backend, the limits, and the checks that
turn a request's fields into prompt ids and a :class:`GenerationConfig` (or a 4xx)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from lmforge.api import CalibratedModel
from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig
from lmforge.models import TransformerModel
from lmforge.serve.backend import Backend
from lmforge.serve.config import ServeConfig
from lmforge.serve.errors import APIError, bad_request
from lmforge.serve.metrics import ServerMetrics
from lmforge.serve.runs import with_default_eos
from lmforge.serve.schemas import _Sampling
from lmforge.tokenizers import Tokenizer


@dataclass
class ServerState:
    model: TransformerModel
    tokenizer: Tokenizer
    backend: Backend
    config: ServeConfig
    model_name: str
    created: int = field(default_factory=lambda: int(time.time()))
    active: int = 0
    metrics: ServerMetrics = field(init=False)
    #: The model with its calibrator when it is a sequence classifier (``/v1/classify``).
    classifier: CalibratedModel | None = None
    label_names: list[str] = field(default_factory=list)

    @property
    def context_length(self) -> int | None:
        """Longest prompt + completion, or None when positions are unbounded (relative buckets)."""
        config = self.model.config
        if config.is_encoder_decoder or config.positions == "relative":
            return None
        return config.max_positions

    def check_generation(self) -> None:
        """Refuse a generation route on a model without an LM head (a base encoder serves embeddings)."""
        if self.model.config.head not in ("causal_lm", "seq2seq_lm"):
            raise bad_request(
                f"the model {self.model_name!r} (head {self.model.config.head!r}) does not generate text; "
                "it serves /v1/embeddings",
                "model",
            )

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server has {self.model_name!r} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request as queued or running for its duration; 429 when ``max_queued`` are."""
        self.admit()
        try:
            yield
        finally:
            self.release()

    def admit(self) -> None:
        """Count one more request queued or running (pair with :meth:`release`); 429 when full."""
        if self.active >= self.config.max_queued:
            raise APIError(
                429,
                f"the server is busy ({self.active} requests queued or running, the limit is "
                f"{self.config.max_queued}); retry after {self.config.retry_after_s} s",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(self.config.retry_after_s)},
            )
        self.active += 1

    def release(self) -> None:
        self.active -= 1

    def encode(
        self, prompt: str | Sequence[int], add_special_tokens: bool = True, param: str = "prompt"
    ) -> list[int]:
        """Prompt ids, refusing an empty prompt, unknown ids and one over ``max_prompt_tokens``."""
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
        else:
            ids = list(prompt)
            vocab = self.model.config.vocab_size
            bad = [i for i in ids if i >= vocab]
            if bad:
                raise bad_request(
                    f"{param}: token id {bad[0]} is outside the vocabulary (size {vocab})", param
                )
        if not ids:
            raise bad_request(f"{param}: the prompt encodes to no tokens; give a non-empty prompt", param)
        limit = self.config.max_prompt_tokens
        if limit is not None and len(ids) > limit:
            raise bad_request(
                f"{param}: the prompt has {len(ids)} tokens, over this server's limit of {limit}",
                param,
                "context_length_exceeded",
            )
        return ids

    def max_new_tokens(
        self, requested: int | None, prompt_lengths: Sequence[int], default: int | None
    ) -> int:
        """The completion length: ``requested`` checked against the limits, else ``default`` (None:
        as long as the context allows) cut to fit."""
        context = self.context_length
        room = None if context is None else context - max(prompt_lengths)
        if room is not None and room < 0:
            raise bad_request(
                f"the prompt has {max(prompt_lengths)} tokens; this model's context length is {context}",
                "prompt",
                "context_length_exceeded",
            )
        if requested is None:
            value = self.config.max_tokens if default is None else min(default, self.config.max_tokens)
            return value if room is None else min(value, room)
        if requested > self.config.max_tokens:
            raise bad_request(
                f"max_tokens is {requested}, over this server's limit of {self.config.max_tokens}",
                "max_tokens",
            )
        if room is not None and requested > room:
            raise bad_request(
                f"this model's context length is {context} tokens; the prompt has {max(prompt_lengths)} "
                f"and max_tokens asks for {requested} more ({max(prompt_lengths) + requested}); "
                "shorten the prompt or lower max_tokens",
                "max_tokens",
                "context_length_exceeded",
            )
        return requested

    def generation_config(
        self,
        request: _Sampling,
        max_new_tokens: int,
        logprobs: int | None,
        extra_stop_ids: Sequence[int] = (),
        extra_stop: Sequence[str] = (),
    ) -> GenerationConfig:
        """The engine's settings for a request (one sample per row; ``n`` handled by the caller)."""
        if request.n > self.config.max_n:
            raise bad_request(f"n is {request.n}, over this server's limit of {self.config.max_n}", "n")
        stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if any(not s for s in stop):
            raise bad_request("stop strings must be non-empty", "stop")
        temperature = 1.0 if request.temperature is None else request.temperature
        greedy = temperature == 0
        try:
            config = GenerationConfig(
                # max_tokens 0 (echo-only scoring) never reaches the engine: see merged_runs.
                max_new_tokens=max(1, max_new_tokens),
                temperature=temperature,
                top_p=None if request.top_p in (None, 1.0) else request.top_p,
                top_k=request.top_k,
                min_p=request.min_p,
                repetition_penalty=request.repetition_penalty or 1.0,
                presence_penalty=request.presence_penalty or 0.0,
                frequency_penalty=request.frequency_penalty or 0.0,
                # Greedy samples are identical: decode once, copy (OpenAI accepts n > 1 at temperature 0).
                n=1 if greedy else request.n,
                seed=request.seed,
                stop=list(dict.fromkeys([*stop, *extra_stop])),
                stop_token_ids=list(extra_stop_ids),
                ignore_eos=request.ignore_eos,
                logprobs=logprobs is not None,
                top_logprobs=logprobs or 0,
            )
        except ConfigError as error:
            raise bad_request(str(error)) from None
        return with_default_eos(config, self.model, self.tokenizer)

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)
