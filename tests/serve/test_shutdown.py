"""Graceful shutdown: ``lmforge serve`` as a real process gets SIGTERM while streams are running.

The requests in flight (decoding, and one waiting for a free slot) finish
with every token and ``[DONE]``; a new connection is refused as soon as the signal is taken; the
scheduler's decode thread drains and the process exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import torch
from serving import chat_tokenizer

import lmforge
from lmforge.models import TransformerModel, preset_config

pytestmark = pytest.mark.slow

SRC = Path(__file__).parents[2] / "src"
TOKENS = 400  # per stream: long enough to be running when the signal comes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(params=[1, 2], ids=["serial", "batched"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    """``lmforge serve`` on a tiny Llama: serial (max batch 1) or the continuous batcher (2)."""
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = preset_config("llama-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size, max_positions=512)
    path = lmforge.save(TransformerModel(config).eval(), tmp_path / "tiny", tokenizer)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("LMFORGE_API_KEY", None)
    max_batch = request.param
    args = ["serve", str(path), "--port", str(port), "--max-batch", str(max_batch), "--log-level", "warning"]
    process = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx2.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        yield process, url, max_batch
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class Stream(threading.Thread):
    """A streaming completion read to its end in a thread: its SSE events, in order."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.events, self.error = url, [], None
        self.started_streaming = threading.Event()

    def run(self) -> None:
        body = {
            "model": "tiny",
            "prompt": "Hello",
            "max_tokens": TOKENS,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            with httpx2.stream("POST", f"{self.url}/v1/completions", json=body, timeout=120) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[len("data: ") :])
                        self.started_streaming.set()
        except BaseException as error:  # reported by the test
            self.error = error
            self.started_streaming.set()


def test_sigterm_drains_in_flight_streams_and_exits_0(server: tuple[subprocess.Popen[str], str, int]) -> None:
    process, url, max_batch = server
    running = [Stream(url) for _ in range(max_batch)]  # every slot decoding
    for stream in running:
        stream.start()
    for stream in running:
        assert stream.started_streaming.wait(60) and stream.error is None
    queued = Stream(url)
    queued.start()
    time.sleep(0.3)  # it reaches the server and waits for a slot
    streams = [*running, queued]
    assert all(s.is_alive() for s in streams), "the streams ended before the signal"
    process.send_signal(signal.SIGTERM)

    refused_at = None  # a new connection is refused while the streams still run
    deadline = time.monotonic() + 10
    while refused_at is None and time.monotonic() < deadline:
        try:
            httpx2.get(f"{url}/health", timeout=1)
            time.sleep(0.05)
        except httpx2.TransportError:
            refused_at = time.monotonic()
    assert refused_at is not None, "the server still accepts connections 10 s after SIGTERM"
    alive_when_refused = queued.is_alive()

    for stream in streams:
        stream.join(timeout=120)
        assert not stream.is_alive() and stream.error is None, stream.error
        assert stream.events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in stream.events[:-1]]
        assert not any("error" in c for c in chunks), chunks[-3:]
        assert chunks[-1]["usage"]["completion_tokens"] == TOKENS  # every token, after the signal
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finishes[-1] == "length"
    assert alive_when_refused, "the queued stream was not in flight when new connections were refused"
    assert process.wait(timeout=60) == 0, process.communicate()[1]
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{url}/health", timeout=1)
