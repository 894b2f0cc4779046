"""``lmforge serve`` as a real process: it answers the openai client, and SIGTERM lets a streaming
request finish before the process exits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import openai
import pytest

pytestmark = pytest.mark.slow

SRC = Path(__file__).parents[2] / "src"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_answers_and_shuts_down_gracefully(random_dir: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["LMFORGE_API_KEY"] = "k"
    args = [
        sys.executable,
        "-m",
        "lmforge.cli",
        "serve",
        str(random_dir),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1]
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert 'data-auth="true"' in httpx2.get(f"http://127.0.0.1:{port}/").text  # the playground
        assert client.models.list().data[0].id == "tiny-llama"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0).models.list()
        stream = client.completions.create(
            model="tiny-llama",
            prompt="Hello",
            max_tokens=100,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = iter(stream)
        first = next(chunks)
        process.send_signal(signal.SIGTERM)
        rest = list(chunks)
        assert [c.choices[0].finish_reason for c in [first, *rest] if c.choices][-1] == "length"
        assert rest[-1].usage.completion_tokens == 100  # the whole completion, after SIGTERM
        # a drained SIGTERM is a clean exit (tests/serve/test_shutdown.py tests the drain itself)
        assert process.wait(timeout=60) == 0
        _, err = process.communicate()
        assert "serving tiny-llama on http://127.0.0.1" in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
