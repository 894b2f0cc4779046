"""Continuous batching on loopback: concurrent streaming clients vs the same requests one at a time.

A server (``create_app`` with ``ServeConfig(max_batch=N)``, the continuous-batching scheduler)
runs in a child process; this process sends the same greedy streaming completions (different
prompts, ``ignore_eos`` so every request generates ``--max-tokens``) first one at a time, then from
``--clients`` concurrent clients, with the official ``openai`` async client. It reports throughput
(completion tokens / wall time), p50/p95 request latency and time to first token (first streamed
chunk), the concurrent / sequential throughput ratio (goal: >= 4x for 16 clients), and whether
every request's text was the same in both runs (temperature 0: batching must not change it).

Bounded in requests (``--requests``) and time (``--time-limit`` per phase: a phase stops issuing
new requests after it). Writes bench/results/serve.json.

    .venv/bin/python bench/serve.py --requests 16 --clients 16 --max-tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain why the sky is blue to a ten-year-old.",
    "List three ideas for a rainy Sunday afternoon.",
    "What is the capital of France, and what is it famous for?",
    "Describe the smell of fresh bread.",
    "Give me a haiku about autumn leaves.",
    "How do bees make honey?",
    "Summarise the plot of a detective novel in two sentences.",
]


def _serve(args: argparse.Namespace) -> None:
    """The child process: the app on loopback until killed."""
    import torch
    import uvicorn

    from lmforge.serve.app import create_app
    from lmforge.serve.config import ServeConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ServeConfig(port=args.port, max_batch=args.max_batch, model_name="bench", max_queued=1024)
    uvicorn.run(create_app(args.model, config=config), host="127.0.0.1", port=args.port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("the server did not become healthy")


async def _one(client: Any, prompt: str, max_tokens: int) -> dict[str, Any]:
    start = time.perf_counter()
    first: float | None = None
    text, tokens = [], 0
    chunks = await client.completions.create(
        model="bench",
        prompt=prompt,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in chunks:
        if chunk.choices:
            if first is None:
                first = time.perf_counter() - start
            text.append(chunk.choices[0].text)
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return {
        "latency_s": time.perf_counter() - start,
        "ttft_s": first,
        "tokens": tokens,
        "text": "".join(text),
    }


async def _phase(
    url: str, requests: list[str], clients: int, max_tokens: int, limit: float
) -> dict[str, Any]:
    """``clients`` workers take the requests in order until none is left or ``limit`` seconds passed."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=limit + 600)
    pending = list(enumerate(requests))
    results: dict[int, dict[str, Any]] = {}
    start = time.perf_counter()

    async def worker() -> None:
        while pending and time.perf_counter() - start < limit:
            index, prompt = pending.pop(0)
            results[index] = await _one(client, prompt, max_tokens)

    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    await client.close()
    latencies = [r["latency_s"] for r in results.values()]
    ttfts = [r["ttft_s"] for r in results.values() if r["ttft_s"] is not None]
    tokens = sum(r["tokens"] for r in results.values())
    return {
        "clients": clients,
        "requests_done": len(results),
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 3),
        "latency_p50_s": round(_quantile(latencies, 0.5), 3),
        "latency_p95_s": round(_quantile(latencies, 0.95), 3),
        "ttft_p50_s": round(_quantile(ttfts, 0.5), 3),
        "ttft_p95_s": round(_quantile(ttfts, 0.95), 3),
        "texts": {str(i): r["text"] for i, r in sorted(results.items())},
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _cpu() -> dict[str, Any]:
    from lmforge.runtime import machine_info

    info = machine_info()
    return {
        "cpu": info["cpu"],
        "isa": info["cpu_capability"],
        "cores": info["cpus"],
        "machine": info,
        "load_average_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds per phase")
    parser.add_argument("--threads", type=int, default=None, help="the server's torch threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server:
        _serve(args)
        return

    port = _free_port()
    command = [sys.executable, __file__, "--server", "--port", str(port), "--model", args.model]
    command += ["--max-batch", str(args.max_batch)] + (
        ["--threads", str(args.threads)] if args.threads else []
    )
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        machine = _cpu()
        _wait_healthy(url, server)
        requests = [f"{PROMPTS[i % len(PROMPTS)]} (#{i})" for i in range(args.requests)]
        asyncio.run(_phase(url, requests[:1], 1, 4, args.time_limit))  # warm-up
        sequential = asyncio.run(_phase(url, requests, 1, args.max_tokens, args.time_limit))
        concurrent = asyncio.run(_phase(url, requests, args.clients, args.max_tokens, args.time_limit))
    finally:
        server.terminate()
        server.wait(timeout=60)
    both = set(sequential["texts"]) & set(concurrent["texts"])
    same = sum(sequential["texts"][i] == concurrent["texts"][i] for i in both)
    ratio = concurrent["tokens_per_s"] / sequential["tokens_per_s"]
    result = {
        "bench": "serve",
        "model": args.model,
        "max_batch": args.max_batch,
        "max_tokens": args.max_tokens,
        "requests": args.requests,
        **machine,
        "sequential": {k: v for k, v in sequential.items() if k != "texts"},
        "concurrent": {k: v for k, v in concurrent.items() if k != "texts"},
        "throughput_ratio": round(ratio, 3),
        "goal_ratio": 4.0,
        "goal_met": ratio >= 4.0,
        "same_text_in_both_runs": f"{same}/{len(both)}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
