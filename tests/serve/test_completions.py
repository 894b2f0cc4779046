"""POST /v1/completions through the official openai client against a real server."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from serving import SCRIPT, LiveServer

import lmforge
from lmforge.generate import GenerationConfig
from lmforge.generate.text import generate_text

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def loaded(random_dir: Path) -> lmforge.LoadedModel:
    return lmforge.load(random_dir)


def test_greedy_text_is_the_engines(random_server: LiveServer, loaded: lmforge.LoadedModel) -> None:
    client = random_server.client()
    prompts = ["Hello world", "北京是"]
    response = client.completions.create(model=MODEL, prompt=prompts, max_tokens=12, temperature=0)
    expected = generate_text(loaded.model, loaded.tokenizer, prompts, GenerationConfig(max_new_tokens=12))
    assert [c.text for c in response.choices] == [e.text for e in expected]
    assert [c.index for c in response.choices] == [0, 1]
    assert [c.finish_reason for c in response.choices] == [e.finish_reason for e in expected]
    assert response.usage.prompt_tokens == sum(e.prompt_tokens for e in expected)
    assert response.usage.completion_tokens == sum(len(e.token_ids) for e in expected)
    assert response.model == MODEL and response.object == "text_completion"
    # Token-id prompts are the same prompts.
    ids = [loaded.tokenizer.encode(p) for p in prompts]
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=12, temperature=0)
    assert [c.text for c in by_ids.choices] == [e.text for e in expected]
    single = client.completions.create(model=MODEL, prompt=ids[1], max_tokens=12, temperature=0)
    assert single.choices[0].text == expected[1].text


def test_greedy_n_copies_and_seeded_samples(random_server: LiveServer) -> None:
    client = random_server.client()
    greedy = client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, temperature=0, n=3)
    assert len({c.text for c in greedy.choices}) == 1 and [c.index for c in greedy.choices] == [0, 1, 2]
    kwargs = dict(model=MODEL, prompt=["Hello", "the quick"], max_tokens=8, temperature=1.0, n=2, seed=3)
    first, again = (client.completions.create(**kwargs) for _ in range(2))
    assert [c.index for c in first.choices] == [0, 1, 2, 3]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]


def test_logprobs_of_generated_tokens(random_server: LiveServer, loaded: lmforge.LoadedModel) -> None:
    response = random_server.client().completions.create(
        model=MODEL, prompt="Hello world", max_tokens=5, temperature=0, logprobs=3
    )
    (expected,) = generate_text(
        loaded.model,
        loaded.tokenizer,
        ["Hello world"],
        GenerationConfig(max_new_tokens=5, logprobs=True, top_logprobs=3),
    )
    logprobs = response.choices[0].logprobs
    assert logprobs.token_logprobs == pytest.approx(expected.logprobs, abs=1e-4)
    assert logprobs.tokens == [
        loaded.tokenizer.decode([i], skip_special_tokens=False) for i in expected.token_ids
    ]
    assert all(len(top) <= 3 for top in logprobs.top_logprobs)
    # Greedy: the chosen token is the best alternative.
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert max(top.values()) == pytest.approx(value, abs=1e-5) and token in top
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(5)]


def test_echo_scores_the_prompt_teacher_forced(
    random_server: LiveServer, loaded: lmforge.LoadedModel
) -> None:
    text = "Hello world, the quick brown fox"
    response = random_server.client().completions.create(
        model=MODEL, prompt=text, max_tokens=0, echo=True, logprobs=2, temperature=0
    )
    choice = response.choices[0]
    assert choice.text == text and choice.finish_reason == "length"
    ids = loaded.tokenizer.encode(text)
    with torch.no_grad():
        log_probs = loaded.model(torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = [None] + [log_probs[i - 1, ids[i]].item() for i in range(1, len(ids))]
    got = choice.logprobs.token_logprobs
    assert got[0] is None and got[1:] == pytest.approx(expected[1:], abs=1e-4)
    assert choice.logprobs.top_logprobs[0] is None
    best = log_probs[:-1].max(-1).values.tolist()
    assert [max(top.values()) for top in choice.logprobs.top_logprobs[1:]] == pytest.approx(best, abs=1e-4)
    assert "".join(choice.logprobs.tokens) == text
    assert response.usage.completion_tokens == 0 and response.usage.prompt_tokens == len(ids)
    # echo with generation: the prompt's scores, then the new tokens'.
    more = random_server.client().completions.create(
        model=MODEL, prompt=text, max_tokens=3, echo=True, logprobs=0, temperature=0
    )
    assert more.choices[0].text.startswith(text) and len(more.choices[0].logprobs.tokens) == len(ids) + 3
    assert more.choices[0].logprobs.token_logprobs[1 : len(ids)] == pytest.approx(expected[1:], abs=1e-4)
    assert more.choices[0].logprobs.top_logprobs is None


def test_streamed_text_joins_to_the_whole(random_server: LiveServer) -> None:
    client = random_server.client()
    kwargs = dict(model=MODEL, prompt=["北京是", "emoji 🙂"], max_tokens=10, temperature=0)
    whole = client.completions.create(**kwargs)
    texts, reasons, usage = {}, {}, None
    for chunk in client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert [texts[i] for i in range(2)] == [c.text for c in whole.choices]
    assert [reasons[i] for i in range(2)] == [c.finish_reason for c in whole.choices]
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_stop_strings_cut_the_text(scripted_server: LiveServer) -> None:
    client = scripted_server.client()
    plain = client.completions.create(model="scripted", prompt="OP", max_tokens=20, temperature=0)
    assert plain.choices[0].text == SCRIPT and plain.choices[0].finish_reason == "stop"  # EOS
    cut = client.completions.create(
        model="scripted", prompt="OP", max_tokens=20, temperature=0, stop=["ther", "zz"]
    )
    assert cut.choices[0].text == " END " and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model="scripted", prompt="OP", max_tokens=20, temperature=0, stop="ther", stream=True
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == " END "
    assert chunks[-1].choices[0].finish_reason == "stop"
    echo = client.completions.create(model="scripted", prompt="OP", max_tokens=2, temperature=0, echo=True)
    assert echo.choices[0].text == "OP" + " END there"[: len(echo.choices[0].text) - 2]
    assert echo.choices[0].finish_reason == "length"


def test_models_route(random_server: LiveServer) -> None:
    client = random_server.client()
    (card,) = client.models.list().data
    assert card.id == MODEL and card.owned_by == "lmforge"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(Exception) as error:
        client.models.retrieve("gpt-4")
    assert type(error.value).__name__ == "NotFoundError"
    assert math.isfinite(card.created)


def test_streamed_echo_with_no_new_tokens(random_server: LiveServer) -> None:
    chunks = list(
        random_server.client().completions.create(
            model=MODEL, prompt="Hello world", max_tokens=0, echo=True, logprobs=1, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == "Hello world"
    assert chunks[0].choices[0].logprobs.token_logprobs[0] is None
    assert chunks[-1].choices[0].finish_reason == "length"
