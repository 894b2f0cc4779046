"""``lmforge serve``: an OpenAI-compatible HTTP server for a model (uvicorn over :mod:`lmforge.serve`)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer

from lmforge.cli.options import comma_list, err_console
from lmforge.errors import LmforgeError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def serve_cmd(
    model: Annotated[str, typer.Argument(help="Checkpoint dir, transformers dir, .gguf file or asset name.")],
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="Require 'Authorization: Bearer KEY' (default: $LMFORGE_API_KEY)."),
    ] = None,
    model_name: Annotated[
        str | None,
        typer.Option("--model-name", help="The id clients send as 'model' (default: the dir name)."),
    ] = None,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Sequences decoded together (1: one request at a time).")
    ] = 1,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most new tokens per completion.")] = 2048,
    max_prompt_tokens: Annotated[int | None, typer.Option("--max-prompt-tokens")] = None,
    max_queued: Annotated[
        int, typer.Option("--max-queued", help="Requests queued or running at once; more get 429.")
    ] = 64,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes")] = 1 << 20,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Seconds a generation may take; 0: no limit.")
    ] = 600.0,
    labels: Annotated[
        str | None, typer.Option("--labels", help="A classifier's class names in order: neg,pos.")
    ] = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's: critical ... debug.")] = "info",
    graceful_timeout: Annotated[
        int, typer.Option("--graceful-timeout", help="Seconds in-flight requests get to finish on SIGTERM.")
    ] = 30,
) -> None:
    """Serve MODEL over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions, /v1/embeddings,
    /v1/models) and /v1/classify for a fine-tuned classifier."""
    from lmforge.serve.config import ServeConfig

    config = ServeConfig(
        host=host,
        port=port,
        api_key=api_key,
        model_name=model_name,
        max_batch=max_batch,
        device=device,
        max_body_bytes=max_body_bytes,
        max_prompt_tokens=max_prompt_tokens,
        max_tokens=max_tokens,
        max_queued=max_queued,
        labels=comma_list(labels) if labels is not None else None,
        request_timeout_s=request_timeout if request_timeout != 0 else None,
    )
    if log_level not in LOG_LEVELS:
        raise LmforgeError(f"--log-level {log_level!r}: use one of {', '.join(LOG_LEVELS)}")
    if graceful_timeout < 0:
        raise LmforgeError(f"--graceful-timeout must be >= 0, got {graceful_timeout}")
    try:
        import uvicorn

        from lmforge.serve.app import create_app
    except ModuleNotFoundError as error:
        raise LmforgeError(
            f"lmforge serve needs the serve extra ({error.name} is missing): pip install 'lmforge[serve]'"
        ) from None
    if not config.is_loopback and config.api_key is None:
        err_console.print(
            f"warning: {host} is reachable from other machines and no --api-key is set", highlight=False
        )
    app = create_app(model, config=config)
    err_console.print(
        f"serving {app.state.lmforge.model_name} on http://{host}:{port}/v1, playground on "
        f"http://{host}:{port}/ (Ctrl-C to stop)",
        highlight=False,
    )
    # On SIGTERM uvicorn stops accepting connections, lets the requests in flight finish (up to
    # --graceful-timeout), shuts the app down (the decode thread drains), then re-raises the signal
    # to the handler it found. A requested stop that drained is a clean exit: that handler is a no-op,
    # so the process exits 0 rather than dying of the signal.
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        uvicorn.run(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=graceful_timeout
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """SIGTERM after uvicorn's graceful shutdown: nothing left to do."""
