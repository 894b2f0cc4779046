"""Bad input is a 4xx with an OpenAI-style JSON error, raised by the openai client as its own types."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2
import openai
import pytest
from serving import LiveServer, serving

from lmforge.errors import ConfigError
from lmforge.serve.config import ServeConfig

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny-llama"


def _post(server: LiveServer, path: str, body: object, **kwargs: object) -> httpx2.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx2.post(
        f"{server.url}{path}", content=content, headers={"content-type": "application/json"}, **kwargs
    )


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": MODEL, "prompt": "hi", "max_tokens": "ten"}, "max_tokens", "integer"),
        ({"model": MODEL, "prompt": "hi", "temperature": "hot"}, "temperature", "number"),
        ({"model": MODEL, "prompt": "hi", "temperature": 3}, "temperature", "less than or equal to 2"),
        ({"model": MODEL, "prompt": 5}, "prompt", ""),
        ({"model": MODEL, "prompt": []}, "prompt", "at least one"),
        ({"model": MODEL, "prompt": ""}, "prompt", "no tokens"),
        ({"model": MODEL, "prompt": [1, 99999]}, "prompt", "outside the vocabulary"),
        ({"model": MODEL, "prompt": "hi", "n": 0}, "n", "greater than or equal to 1"),
        ({"model": MODEL, "prompt": "hi", "stop": [""]}, "stop", "non-empty"),
        ({"model": MODEL, "prompt": "hi", "logprobs": 50}, "logprobs", "20"),
        ({"model": MODEL, "prompt": "hi", "bogus": 1}, "bogus", "Extra inputs"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 100000}, "max_tokens", "limit"),
        ({"prompt": "hi"}, "model", "Field required"),
    ],
)
def test_bad_fields_are_400_naming_the_field(
    random_server: LiveServer, body: dict, param: str, fragment: str
) -> None:
    response = _post(random_server, "/v1/completions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert fragment in error["message"]


def test_the_client_raises_its_own_exceptions(random_server: LiveServer) -> None:
    client = random_server.client()
    with pytest.raises(openai.BadRequestError) as error:
        client.completions.create(model=MODEL, prompt="hi " * 100, max_tokens=100)
    assert error.value.code == "context_length_exceeded" and "128" in error.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="gpt-5", prompt="hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model=MODEL, prompt="hi", best_of=3, n=2)


def test_malformed_bodies_and_routes(random_server: LiveServer) -> None:
    broken = _post(random_server, "/v1/completions", b'{"model": ')
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    assert _post(random_server, "/v1/completions", [1, 2]).status_code == 400
    unknown = httpx2.get(f"{random_server.url}/v1/nothing")
    assert unknown.status_code == 404 and "no route" in unknown.json()["error"]["message"]
    wrong_method = httpx2.get(f"{random_server.url}/v1/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_limits(random_dir: Path) -> None:
    config = ServeConfig(max_body_bytes=200, max_prompt_tokens=8, max_tokens=4)
    with serving(random_dir, config=config) as server:
        too_big = _post(server, "/v1/completions", {"model": MODEL, "prompt": "x" * 300})
        assert too_big.status_code == 413 and "200 bytes" in too_big.json()["error"]["message"]
        chunked = httpx2.post(
            f"{server.url}/v1/completions",
            content=iter([b'{"model": "tiny-llama", "prompt": "', b"x" * 300, b'"}']),
        )
        assert chunked.status_code == 413
        client = server.client()
        with pytest.raises(openai.BadRequestError) as long_prompt:
            client.completions.create(model=MODEL, prompt="Hello world, the quick brown fox jumps")
        assert (
            long_prompt.value.code == "context_length_exceeded" and "limit of 8" in long_prompt.value.message
        )
        with pytest.raises(openai.BadRequestError, match="limit of 4"):
            client.completions.create(model=MODEL, prompt="Hello", max_tokens=5)
        assert (
            len(client.completions.create(model=MODEL, prompt="Hello").choices) == 1
        )  # default max_tokens fits


def test_a_full_queue_answers_429_with_retry_after(random_dir: Path) -> None:
    with serving(random_dir, config=ServeConfig(max_queued=1)) as server:

        async def main() -> list[httpx2.Response]:
            body = {"model": MODEL, "prompt": "Hello", "max_tokens": 100, "temperature": 0}
            async with httpx2.AsyncClient(base_url=server.url, timeout=60) as http:
                return list(
                    await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(4)))
                )

        statuses = sorted(r.status_code for r in asyncio.run(main()))
        assert statuses[0] == 200 and 429 in statuses
        busy = next(r for r in asyncio.run(main()) if r.status_code == 429)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "rate_limit_error"
        client = server.client()
        assert client.completions.create(model=MODEL, prompt="Hello", max_tokens=2).choices  # slot given back


def test_api_key(random_dir: Path) -> None:
    with serving(random_dir, config=ServeConfig(api_key="s3cret")) as server:
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="wrong").models.list()
        with pytest.raises(openai.AuthenticationError):
            server.client(api_key="s3cret-and-more").completions.create(
                model=MODEL, prompt="hi", max_tokens=1
            )
        assert httpx2.get(f"{server.url}/v1/models").status_code == 401
        assert server.client(api_key="s3cret").models.list().data[0].id == MODEL
        assert httpx2.get(f"{server.url}/health").status_code == 200  # open, for load balancers


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMFORGE_API_KEY", "from-env")
    assert ServeConfig().api_key == "from-env"
    assert ServeConfig(api_key="given").api_key == "given"
    monkeypatch.delenv("LMFORGE_API_KEY")
    assert ServeConfig().api_key is None and ServeConfig().host == "127.0.0.1" and ServeConfig().is_loopback


@pytest.mark.parametrize(
    ("field", "value"), [("port", 70000), ("max_queued", 0), ("api_key", " "), ("max_body_bytes", "1MB")]
)
def test_bad_serve_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        ServeConfig(**{field: value})
