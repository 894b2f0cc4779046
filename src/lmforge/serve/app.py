"""The HTTP app: :func:`create_app` wires the routes, limits, authentication and errors around a backend.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``POST /v1/classify``, ``GET /v1/models``
(and ``/v1/models/{id}``), ``POST /tokenize``, ``POST /detokenize``, ``GET /tokenizer_info``,
``GET /health``, ``GET /metrics`` (Prometheus), and ``GET /``, the web playground (:mod:`.playground`).
Everything but ``/health`` and the playground's files needs the API key when one is set.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge.api import CalibratedModel
from lmforge.errors import ConfigError
from lmforge.models import TransformerModel
from lmforge.models.io.checkpoint import LoadedModel
from lmforge.serve.backend import Backend, build_backend
from lmforge.serve.chat import create_chat
from lmforge.serve.classify import create_classification, label_names
from lmforge.serve.completions import create_completion
from lmforge.serve.config import ServeConfig
from lmforge.serve.embeddings import create_embeddings
from lmforge.serve.errors import APIError, bad_request, install_error_handlers
from lmforge.serve.metrics import CONTENT_TYPE, RequestMetrics, ServerMetrics
from lmforge.serve.playground import install_playground
from lmforge.serve.schemas import (
    ChatRequest,
    ClassifyRequest,
    ClassifyResponse,
    CompletionRequest,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from lmforge.serve.state import ServerState
from lmforge.tokenizers import Tokenizer
from lmforge.version import __version__

__all__ = ["create_app", "load_for_serving"]

GENERATING_HEADS = ("causal_lm", "seq2seq_lm")
#: Heads the server can use: LMs generate (and embed); a base encoder (MiniLM) embeds; a sequence
#: classifier classifies (calibrated when its checkpoint has a calibrator) and embeds.
SERVED_HEADS = (*GENERATING_HEADS, "base", "sequence_classification")


def load_for_serving(model: str | Path, device: str = "cpu") -> LoadedModel:
    """Load a checkpoint (any source ``lmforge.load`` reads) and refuse one the server cannot use."""
    import lmforge

    loaded = lmforge.load(model, device=device)
    if loaded.tokenizer is None:
        raise ConfigError(f"{model}: has no tokenizer; the server needs one to read prompts and write text")
    if loaded.config.head not in SERVED_HEADS:
        raise ConfigError(
            f"{model}: its head is {loaded.config.head!r}; serving needs a causal or seq2seq LM "
            "(generation), a base encoder (embeddings) or a sequence classifier"
        )
    return loaded


def create_app(
    model: str | Path | LoadedModel | TransformerModel,
    tokenizer: Tokenizer | None = None,
    config: ServeConfig | None = None,
    backend: Backend | None = None,
) -> FastAPI:
    """An OpenAI-compatible app serving ``model``.

    Args:
        model: a checkpoint path (or asset name), a loaded bundle, or a model object.
        tokenizer: the model's tokenizer (needed with a bare model object).
        config: host, limits, API key, model name (the defaults bind loopback without a key).
        backend: what runs the model (default :func:`build_backend` with ``config.max_batch``).

    Returns:
        A FastAPI app; run it with uvicorn (``lmforge serve`` does) or test it over httpx's ASGI transport.
    """
    config = config or ServeConfig()
    name = config.model_name
    if isinstance(model, str | Path):
        name = name or Path(model).name or str(model)
        model = load_for_serving(model, config.device)
    bundle = model if isinstance(model, LoadedModel) else None
    if isinstance(model, LoadedModel):
        name = name or Path(model.source).name or "model"
        tokenizer = tokenizer or model.tokenizer
        model = model.model
    if tokenizer is None:
        raise ConfigError("create_app needs the model's tokenizer (pass tokenizer=...)")
    if model.config.head not in SERVED_HEADS:
        raise ConfigError(
            f"serving needs a causal or seq2seq LM, a base encoder or a sequence classifier; this model's "
            f"head is {model.config.head!r}"
        )
    generates = model.config.head in GENERATING_HEADS
    state = ServerState(
        model=model.eval(),
        tokenizer=tokenizer,
        backend=backend or build_backend(model, config.max_batch if generates else 1),
        config=config,
        model_name=name or "model",
    )
    state.metrics = ServerMetrics(lambda: state.active, state.backend)
    if model.config.head == "sequence_classification":
        if not isinstance(bundle, CalibratedModel):
            source = bundle.source if bundle is not None else state.model_name
            bundle = CalibratedModel(model, tokenizer, model.config, source)
        state.classifier = bundle
        state.label_names = label_names(bundle, config.labels)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.backend.close()

    app = FastAPI(title="lmforge", version=__version__, lifespan=lifespan)
    app.state.lmforge = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=state.metrics)
    auth = [Depends(_authorize(config.api_key))]
    install_playground(app, needs_key=config.api_key is not None)

    @app.get("/health", tags=["server"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=auth, tags=["server"])
    async def metrics() -> Response:
        return Response(state.metrics.text(), media_type=CONTENT_TYPE)

    @app.get("/v1/models", dependencies=auth, tags=["openai"])
    async def list_models() -> ModelList:
        return ModelList(data=[_card(state)])

    @app.get("/v1/models/{model_id:path}", dependencies=auth, tags=["openai"])
    async def get_model(model_id: str) -> ModelCard:
        state.check_model(model_id)
        return _card(state)

    @app.post("/v1/completions", dependencies=auth, tags=["openai"], response_model=None)
    async def completions(body: CompletionRequest) -> Any:
        return await create_completion(state, body)

    @app.post("/v1/chat/completions", dependencies=auth, tags=["openai"], response_model=None)
    async def chat_completions(body: ChatRequest) -> Any:
        return await create_chat(state, body)

    @app.post("/v1/embeddings", dependencies=auth, tags=["openai"])
    async def embeddings(body: EmbeddingRequest) -> EmbeddingResponse:
        return await create_embeddings(state, body)

    @app.post("/v1/classify", dependencies=auth, tags=["lmforge"])
    async def classify(body: ClassifyRequest) -> ClassifyResponse:
        return await create_classification(state, body)

    @app.post("/tokenize", dependencies=auth, tags=["tokenizer"])
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        if body.model is not None:
            state.check_model(body.model)
        if (body.prompt is None) == (body.messages is None):
            raise bad_request("give exactly one of prompt and messages", "prompt")
        if body.messages is not None:
            text = state.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.text()} for m in body.messages],
                add_generation_prompt=body.add_generation_prompt,
            )
            ids = state.tokenizer.encode(text, add_special_tokens=False)
        else:
            assert body.prompt is not None
            ids = state.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
        return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=state.context_length)

    @app.post("/detokenize", dependencies=auth, tags=["tokenizer"])
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        if body.model is not None:
            state.check_model(body.model)
        vocab = state.model.config.vocab_size
        bad = [i for i in body.tokens if i >= vocab]
        if bad:
            raise bad_request(f"tokens: id {bad[0]} is outside the vocabulary (size {vocab})", "tokens")
        return DetokenizeResponse(prompt=state.tokenizer.decode(body.tokens, skip_special_tokens=False))

    @app.get("/tokenizer_info", dependencies=auth, tags=["tokenizer"])
    async def tokenizer_info() -> TokenizerInfo:
        t = state.tokenizer
        return TokenizerInfo(
            vocab_size=t.vocab_size,
            bos_token=t.bos_token,
            eos_token=t.eos_token,
            pad_token=t.pad_token,
            bos_token_id=t.bos_token_id,
            eos_token_id=t.eos_token_id,
            pad_token_id=t.pad_token_id,
            model_max_length=state.context_length,
            chat_template=t.chat_template,
        )

    return app


def _card(state: ServerState) -> ModelCard:
    return ModelCard(id=state.model_name, created=state.created, max_model_len=state.context_length)


def _authorize(api_key: str | None) -> Any:
    """A dependency checking ``Authorization: Bearer <key>`` in constant time (none without a key)."""
    expected = api_key.encode() if api_key else None

    async def check(request: Request) -> None:
        if expected is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise APIError(
                401,
                "missing or incorrect API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: by ``Content-Length``, or while a chunked
    body is read (an HTTPException there reaches the error handlers like any other)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"the request body is over this server's limit of {self.max_bytes} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await APIError(413, message).response()(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            received = await receive()
            if received["type"] == "http.request":
                seen += len(received.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, message)
            return received

        await self.app(scope, limited_receive, send)
