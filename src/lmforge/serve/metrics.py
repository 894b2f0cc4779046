"""``GET /metrics``: Prometheus text (``prometheus-client``), one registry per app.

Requests by route and status, request latency and time-to-first-token histograms, tokens
generated, requests in flight (queued or running) and the backend's running / queued rows (the
batch size, when the backend reports ``running`` / ``queued``, as the continuous batcher does).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Routes named as templates, so that labels stay few whatever paths clients send.
_ROUTES = (
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/classify",
    "/v1/models",
    "/tokenize",
    "/detokenize",
    "/tokenizer_info",
    "/health",
    "/metrics",
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServerMetrics:
    """The server's instruments; ``in_flight`` and ``backend`` are read when scraped."""

    def __init__(self, in_flight: Any, backend: Any) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmforge_requests", "HTTP requests answered.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lmforge_request_duration_seconds",
            "Time from request to the end of the response (streams included).",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "lmforge_time_to_first_token_seconds",
            "Time from a generation's start to its first token.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter("lmforge_generated_tokens", "Tokens generated.", registry=self.registry)
        queue = Gauge("lmforge_requests_in_flight", "Requests queued or running.", registry=self.registry)
        queue.set_function(in_flight)
        running = Gauge("lmforge_batch_rows_running", "Rows decoding together now.", registry=self.registry)
        running.set_function(lambda: float(getattr(backend, "running", 0)))
        waiting = Gauge("lmforge_batch_rows_queued", "Rows waiting for a batch slot.", registry=self.registry)
        waiting.set_function(lambda: float(getattr(backend, "queued", 0)))

    def text(self) -> bytes:
        return generate_latest(self.registry)


def route_label(path: str) -> str:
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return path if path in _ROUTES else "other"


class RequestMetrics:
    """ASGI middleware counting every answered request and timing it to its last body byte."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500
        route = route_label(scope.get("path", ""))

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
