"""A soak of a few thousand requests (completions, streams, chat, errors) leaves memory flat."""

from __future__ import annotations

import gc
from pathlib import Path

import httpx2
import pytest
from serving import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

#: RSS growth allowed between the warmed-up server and the end of the soak (allocator noise; a
#: leak of even 1 KiB per request would pass 2 MiB over 2000 requests and show in the trend).
BOUND_MIB = 24


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status here")


def _round(http: httpx2.Client, index: int) -> None:
    kind = index % 4
    if kind == 0:
        body = {"model": "tiny-llama", "prompt": f"Hello {index}", "max_tokens": 2, "temperature": 0}
        assert http.post("/v1/completions", json=body).status_code == 200
    elif kind == 1:
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 2, "stream": True, "seed": index}
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200 and b"[DONE]" in b"".join(response.iter_bytes())
    elif kind == 2:
        messages = [{"role": "user", "content": f"message {index}"}]
        body = {"model": "tiny-llama", "messages": messages, "max_tokens": 2}
        assert http.post("/v1/chat/completions", json=body).status_code == 200
    else:
        assert http.post("/v1/completions", json={"model": "tiny-llama", "prompt": 1}).status_code == 400


def test_memory_stays_flat_over_thousands_of_requests(random_server: LiveServer) -> None:
    with httpx2.Client(base_url=random_server.url, timeout=60) as http:
        for index in range(400):  # warm-up: caches, allocator pools, lazily built objects
            _round(http, index)
        gc.collect()
        start = _rss_mib()
        samples = []
        for index in range(2000):
            _round(http, index)
            if index % 500 == 499:
                gc.collect()
                samples.append(_rss_mib())
    growth = samples[-1] - start
    assert growth < BOUND_MIB, (
        f"RSS grew {growth:.1f} MiB over 2000 requests (samples {samples}, start {start:.1f})"
    )
