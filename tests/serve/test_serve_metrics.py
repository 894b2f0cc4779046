"""GET /metrics: Prometheus text counting requests by route and status, tokens, first-token times."""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving import serving

from lmforge.serve.config import ServeConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _samples(url: str, **kwargs: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx2.get(f"{url}/metrics", **kwargs)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_what_happened(random_dir: Path) -> None:
    with serving(random_dir, config=ServeConfig(api_key="k")) as server:
        client = server.client(api_key="k")
        whole = client.completions.create(
            model="tiny-llama", prompt=["Hello", "北京"], max_tokens=5, temperature=0
        )
        chunks = list(
            client.chat.completions.create(
                model="tiny-llama",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=4,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="tiny-llama", prompt="hi", max_tokens=10**6)
        assert httpx2.get(f"{server.url}/metrics").status_code == 401  # behind the key like the API
        samples = _samples(server.url, headers={"Authorization": "Bearer k"})
    completions = (("route", "/v1/completions"), ("status", "200"))
    assert samples[("lmforge_requests_total", completions)] == 1
    assert samples[("lmforge_requests_total", (("route", "/v1/completions"), ("status", "400")))] == 1
    assert samples[("lmforge_requests_total", (("route", "/v1/chat/completions"), ("status", "200")))] == 1
    assert samples[("lmforge_requests_total", (("route", "/metrics"), ("status", "401")))] == 1
    generated = whole.usage.completion_tokens + chunks[-1].usage.completion_tokens
    assert samples[("lmforge_generated_tokens_total", ())] == generated
    assert samples[("lmforge_time_to_first_token_seconds_count", ())] == 3  # two prompts, one chat
    assert samples[("lmforge_request_duration_seconds_count", (("route", "/v1/chat/completions"),))] == 1
    assert samples[("lmforge_requests_in_flight", ())] == 0
    assert samples[("lmforge_batch_rows_running", ())] == 0
