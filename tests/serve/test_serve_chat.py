"""POST /v1/chat/completions (streamed and not) and the tokenizer routes, with the openai client."""

from __future__ import annotations

from pathlib import Path

import httpx2
import openai
import pytest
from serving import REPLY, LiveServer

import lmforge
from lmforge.generate import GenerationConfig
from lmforge.generate.chat import ChatSession

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]


def test_reply_ends_at_the_templates_end_of_turn(scripted_server: LiveServer, scripted_dir: Path) -> None:
    response = scripted_server.client().chat.completions.create(
        model="scripted", messages=MESSAGES, temperature=0
    )
    (choice,) = response.choices
    assert choice.message.role == "assistant" and choice.message.content == REPLY
    assert choice.finish_reason == "stop" and response.object == "chat.completion"
    reply_ids = lmforge.load(scripted_dir).tokenizer.encode(REPLY, add_special_tokens=False)
    assert response.usage.completion_tokens == len(reply_ids)  # <|im_end|> is not part of the reply


def test_streamed_chunks_in_openai_format(scripted_server: LiveServer) -> None:
    stream = scripted_server.client().chat.completions.create(
        model="scripted",
        messages=MESSAGES,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == REPLY and len(pieces) == len(REPLY)  # one whole character per piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_greedy_reply_is_the_chat_sessions(random_server: LiveServer, random_dir: Path) -> None:
    loaded = lmforge.load(random_dir)
    session = ChatSession(
        loaded.model, loaded.tokenizer, GenerationConfig(max_new_tokens=10), system="Be brief."
    )
    expected = session.send("hello")
    response = random_server.client().chat.completions.create(
        model="tiny-llama", messages=MESSAGES, temperature=0, max_tokens=10, logprobs=True, top_logprobs=2
    )
    choice = response.choices[0]
    assert choice.message.content == expected
    assert response.usage.prompt_tokens == len(session.last_prompt_ids)
    content = choice.logprobs.content
    assert all(len(entry.top_logprobs) == 2 for entry in content)
    assert all(entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-5) for entry in content)
    streamed = random_server.client().chat.completions.create(
        model="tiny-llama", messages=MESSAGES, temperature=0, max_tokens=10, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected


def test_chat_errors(random_server: LiveServer) -> None:
    client = random_server.client()
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="tiny-llama", messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, response_format={"type": "json_schema"}
        )
    with pytest.raises(openai.BadRequestError) as long:
        client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "hi " * 200}]
        )
    assert long.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES)


def test_no_chat_template_is_a_400(tmp_path: Path, random_dir: Path) -> None:
    from serving import serving

    loaded = lmforge.load(random_dir)
    loaded.tokenizer.chat_template = None
    with serving(loaded) as server, pytest.raises(openai.BadRequestError, match="no chat template"):
        server.client().chat.completions.create(model="tiny-llama", messages=MESSAGES)


def test_tokenizer_routes(random_server: LiveServer, random_dir: Path) -> None:
    tokenizer = lmforge.load(random_dir).tokenizer
    url = random_server.url
    tokens = httpx2.post(f"{url}/tokenize", json={"prompt": "Hello world"}).json()
    assert tokens["tokens"] == tokenizer.encode("Hello world") and tokens["count"] == len(tokens["tokens"])
    assert tokens["max_model_len"] == 128
    chat = httpx2.post(f"{url}/tokenize", json={"messages": MESSAGES}).json()
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True)
    assert chat["tokens"] == tokenizer.encode(rendered, add_special_tokens=False)
    text = httpx2.post(f"{url}/detokenize", json={"tokens": chat["tokens"]}).json()["prompt"]
    assert text == rendered
    info = httpx2.get(f"{url}/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>" and info["vocab_size"] == tokenizer.vocab_size
    assert "im_start" in info["chat_template"]
    assert httpx2.post(f"{url}/tokenize", json={}).status_code == 400
    assert httpx2.post(f"{url}/detokenize", json={"tokens": [10**6]}).status_code == 400
    assert httpx2.post(f"{url}/tokenize", json={"prompt": "x", "model": "nope"}).status_code == 404
