"""Structured output through the server: ``response_format`` (json_schema, json_object) and vLLM's
``guided_json`` / ``guided_regex`` / ``guided_choice``, sent by the ``openai`` client to a random
tiny model sampling at temperature 1 (whose free text is garbage), serial and continuously
batched; a schema the grammar engine refuses is a 400 naming the field."""

from __future__ import annotations

import json
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

pytest.importorskip("llguidance")

sys.path.insert(0, str(Path(__file__).parents[1] / "generate"))
from schema_check import validate  # noqa: E402
from serving import LiveServer, serving  # noqa: E402

from lmforge.assets import check_asset  # noqa: E402
from lmforge.serve.config import ServeConfig  # noqa: E402

MESSAGES = [{"role": "user", "content": "Who are you?"}]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
REGEX = r"[0-9]{3}-[a-z]{2,4}"
CHOICES = ["yes", "no", "maybe so"]
SEEDS = range(4)


@pytest.fixture(scope="module")
def batched_server(random_dir: Path) -> Any:
    with serving(random_dir, config=ServeConfig(max_batch=4)) as server:
        yield server


def _chat(server: LiveServer, seed: int, **kwargs: Any) -> Any:
    fields: dict[str, Any] = {"temperature": 1.0, "max_tokens": 90, **kwargs}
    return server.client().chat.completions.create(model="tiny-llama", messages=MESSAGES, seed=seed, **fields)


def test_free_text_of_the_random_model_is_not_json(random_server: LiveServer) -> None:
    for seed in SEEDS:
        with pytest.raises(ValueError):
            json.loads(_chat(random_server, seed, max_tokens=30).choices[0].message.content)


@pytest.mark.parametrize("server_name", ["random_server", "batched_server"])
def test_json_schema_reply_parses_and_validates(server_name: str, request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue(server_name)
    for seed in SEEDS:
        choice = _chat(server, seed, response_format=RESPONSE_FORMAT).choices[0]
        assert choice.finish_reason == "stop"
        validate(SCHEMA, json.loads(choice.message.content))


def test_json_object_and_streamed_json_schema(random_server: LiveServer) -> None:
    reply = _chat(random_server, 0, response_format={"type": "json_object"}, extra_body={"top_k": 40})
    if reply.choices[0].finish_reason == "stop":  # an open-ended object may need more tokens
        assert isinstance(json.loads(reply.choices[0].message.content), dict)
    chunks = _chat(random_server, 1, response_format=RESPONSE_FORMAT, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    validate(SCHEMA, json.loads(text))


def test_n_samples_each_follow_the_schema(batched_server: LiveServer) -> None:
    reply = _chat(batched_server, 5, response_format=RESPONSE_FORMAT, n=3)
    assert len(reply.choices) == 3
    for choice in reply.choices:
        validate(SCHEMA, json.loads(choice.message.content))


def test_guided_regex_and_choice_on_completions_and_chat(random_server: LiveServer) -> None:
    client = random_server.client()
    for seed in SEEDS:
        completion = client.completions.create(
            model="tiny-llama",
            prompt="The code is",
            temperature=1.0,
            max_tokens=40,
            seed=seed,
            extra_body={"guided_regex": REGEX},
        )
        assert re.fullmatch(REGEX, completion.choices[0].text), completion.choices[0].text
        reply = _chat(random_server, seed, extra_body={"guided_choice": CHOICES})
        assert reply.choices[0].message.content in CHOICES
    completion = client.completions.create(
        model="tiny-llama",
        prompt=["a", "b"],
        temperature=1.0,
        max_tokens=90,
        seed=3,
        extra_body={"guided_json": json.dumps(SCHEMA)},
    )
    for choice in completion.choices:
        validate(SCHEMA, json.loads(choice.text))


def test_constrained_and_free_requests_share_the_batch(
    batched_server: LiveServer, random_server: LiveServer
) -> None:
    """Concurrent requests, some constrained: the constrained replies parse, the free greedy ones
    are the serial server's text."""
    client = batched_server.client()

    def free(seed: int) -> str:
        return str(
            client.completions.create(model="tiny-llama", prompt=f"text {seed}", temperature=0, max_tokens=12)
            .choices[0]
            .text
        )

    def constrained(seed: int) -> str:
        return str(_chat(batched_server, seed, response_format=RESPONSE_FORMAT).choices[0].message.content)

    with ThreadPoolExecutor(6) as pool:
        structured = [pool.submit(constrained, seed) for seed in range(3)]
        plain = [pool.submit(free, seed) for seed in range(3)]
        for future in structured:
            validate(SCHEMA, json.loads(future.result()))
        texts = [future.result() for future in plain]
    serial = random_server.client()
    for seed, text in enumerate(texts):
        alone = serial.completions.create(
            model="tiny-llama", prompt=f"text {seed}", temperature=0, max_tokens=12
        )
        assert text == alone.choices[0].text


@pytest.mark.parametrize(
    ("fields", "param", "match"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "strin"}},
                }
            },
            "response_format.json_schema.schema",
            "strin",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"$ref": "#/no"}},
                }
            },
            "response_format.json_schema.schema",
            "does not exist",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "json_schema"),
        ({"extra_body": {"guided_regex": "a(b"}}, "guided_regex", "unclosed group"),
        ({"extra_body": {"guided_json": "{not json"}}, "guided_json", "not JSON"),
        ({"extra_body": {"guided_choice": []}}, "guided_choice", "at least 1"),
        (
            {"response_format": {"type": "json_object"}, "extra_body": {"guided_regex": "a+"}},
            "guided_regex",
            "one structured-output constraint",
        ),
    ],
    ids=["bad-type", "bad-ref", "no-json-schema", "bad-regex", "json-text", "no-choices", "two"],
)
def test_bad_constraints_are_400s_naming_the_field(
    random_server: LiveServer, fields: dict[str, Any], param: str, match: str
) -> None:
    with pytest.raises(openai.BadRequestError, match=match) as error:
        random_server.client().chat.completions.create(model="tiny-llama", messages=MESSAGES, **fields)
    assert error.value.param == param


@pytest.mark.slow
@pytest.mark.skipif(not check_asset("smollm2-135m-instruct")["ok"], reason="SmolLM2 asset not installed")
def test_smollm2_json_schema_chat() -> None:
    """The real tokenizer (49k byte-level BPE, ChatML template ending at <|im_end|>) under a schema."""
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "country": {"type": "string", "maxLength": 20},
            "population_millions": {"type": "integer", "minimum": 0, "maximum": 100},
        },
        "required": ["city", "country", "population_millions"],
        "additionalProperties": False,
    }
    messages = [
        {"role": "user", "content": "Describe Paris as JSON with city, country, population_millions."}
    ]
    with serving("smollm2-135m-instruct", config=ServeConfig(model_name="smollm2")) as server:
        start = time.perf_counter()
        reply = server.client().chat.completions.create(
            model="smollm2",
            messages=messages,
            temperature=0,
            max_tokens=60,
            response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        )
        elapsed = time.perf_counter() - start
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", (choice.message.content, elapsed)
    value = json.loads(choice.message.content)
    validate(schema, value)
    assert "paris" in value["city"].lower()
