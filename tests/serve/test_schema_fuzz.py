"""schemathesis against the server's own OpenAPI schema: whatever it sends, no answer is a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2  # noqa: E402
import pytest
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from serving import LiveServer, serving

from lmforge.serve.config import ServeConfig

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
from schemathesis.checks import not_a_server_error  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def fuzz_server(random_dir: Path) -> Iterator[LiveServer]:
    # Short completions keep each generated request cheap; the limits are part of what is fuzzed.
    with serving(random_dir, config=ServeConfig(max_tokens=8, max_n=2, max_prompts=4)) as server:
        yield server


def test_no_request_gets_a_server_error(fuzz_server: LiveServer) -> None:
    # schemathesis' pytest plugin does not follow pytest 9's node API; its strategies drive hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/embeddings"}
    settings = hypothesis.settings(
        max_examples=40,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    for operation in operations:

        @settings
        @hypothesis.given(case=operation.as_strategy())
        def check(case) -> None:
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = "tiny-llama"  # reach generation; unknown names are tested elsewhere
            case.call_and_validate(base_url=fuzz_server.url, checks=[not_a_server_error], timeout=60)

        check()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx2.get(f"{fuzz_server.url}/metrics").text):
        for sample in family.samples:
            if sample.name == "lmforge_requests_total":
                counts[sample.labels["status"]] = counts.get(sample.labels["status"], 0) + sample.value
    assert not any(status.startswith("5") for status in counts)
    assert counts.get("200", 0) >= 30 and counts.get("400", 0) >= 10  # it really sent good and bad requests
