"""Continuous batching: a request's tokens are those it gets decoded alone, whoever shares the batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from lmforge.errors import ConfigError, UnsupportedError
from lmforge.generate import GenerationConfig, generate_detailed
from lmforge.generate.batch import BatchDecoder, SlotKVCache
from lmforge.models import TransformerModel, preset_config

VOCAB = 300
DECODERS = ["llama-tiny", "gpt2-tiny"]  # llama-tiny: RoPE + GQA (4 query heads, 2 KV heads)


def _model(preset: str, seed: int = 0) -> TransformerModel:
    """A tiny random LM whose next token depends on the whole context: with the default init
    (std 0.02) it repeats one token whatever it attends to, which would hide a wrong mask."""
    torch.manual_seed(seed)
    config = preset_config(preset, head="causal_lm", vocab_size=VOCAB, num_layers=2, eos_token_id=VOCAB - 1)
    model = TransformerModel(config).eval()
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.2)
    return model


def _prompt(length: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB - 1, (length,), generator=generator).tolist()


@dataclass
class Result:
    tokens: list[int] = field(default_factory=list)
    reason: str | None = None
    logprobs: list[float] = field(default_factory=list)
    joined_with: int = 0  # most other requests seen running beside this one


def _alone(model: TransformerModel, prompt: list[int], config: GenerationConfig) -> Result:
    output = generate_detailed(model, torch.tensor([prompt]), config=config)
    return Result(output.sequences[0], output.finish_reasons[0], (output.logprobs or [[]])[0])


def _run(
    decoder: BatchDecoder, arrivals: dict[int, list[tuple[str, list[int], GenerationConfig]]]
) -> dict[str, Result]:
    """Add each request at its step; step until everything finished."""
    results: dict[str, Result] = {}
    names: dict[int, str] = {}
    step = 0
    while arrivals or decoder.has_work():
        for name, prompt, config in arrivals.pop(step, []):
            names[decoder.add(prompt, config)] = name
            results[name] = Result()
        running = decoder.running
        for request_id, event in decoder.step():
            result = results[names[request_id]]
            assert result.reason is None, "an event after the request finished"
            result.tokens.extend(event.tokens[0])
            result.logprobs.extend((event.logprobs or [[]])[0])
            result.reason = event.finished[0]
            result.joined_with = max(result.joined_with, running - 1)
        step += 1
        assert step < 1000
    return results


@pytest.mark.parametrize("preset", DECODERS)
def test_greedy_batched_equals_alone_with_joins_and_leaves(preset: str) -> None:
    model = _model(preset)
    lengths_and_tokens = [(5, 12), (17, 3), (9, 20), (3, 7), (12, 1), (8, 15), (20, 9)]
    requests = [
        (f"r{i}", _prompt(length, seed=i), GenerationConfig(max_new_tokens=new))
        for i, (length, new) in enumerate(lengths_and_tokens)
    ]
    # A stop id this request meets mid-way when alone: it must also stop there in the batch.
    stop_token = _alone(model, requests[2][1], requests[2][2]).tokens[6]
    requests[2] = ("r2", requests[2][1], GenerationConfig(max_new_tokens=20, stop_token_ids=[stop_token]))
    arrivals = {0: requests[:2], 1: requests[2:4], 4: requests[4:5], 6: requests[5:]}
    decoder = BatchDecoder(model, max_batch=3)
    decoder.cache = SlotKVCache(3, decoder.max_length, torch.device("cpu"), initial_width=4)  # widens
    batched = _run(decoder, arrivals)
    for name, prompt, config in requests:
        expected = _alone(model, prompt, config)
        assert (batched[name].tokens, batched[name].reason) == (expected.tokens, expected.reason), name
    assert batched["r2"].reason == "stop"
    assert max(r.joined_with for r in batched.values()) == 2  # the batch really was shared
    assert decoder.running == 0 and decoder.cache.rows == 0
    assert decoder.cache.width >= 32


@pytest.mark.parametrize("preset", DECODERS)
def test_group_prefill_of_different_lengths_equals_alone(preset: str) -> None:
    model = _model(preset, seed=1)
    requests = [
        (f"r{i}", _prompt(3 + 5 * i, seed=10 + i), GenerationConfig(max_new_tokens=10)) for i in range(4)
    ]
    batched = _run(BatchDecoder(model, max_batch=4), {0: requests})
    for name, prompt, config in requests:
        assert batched[name].tokens == _alone(model, prompt, config).tokens, name


def test_per_request_configs_apply_per_row() -> None:
    model = _model("llama-tiny", seed=2)
    configs = {
        "greedy": GenerationConfig(max_new_tokens=12),
        "penalised": GenerationConfig(max_new_tokens=12, repetition_penalty=1.5, no_repeat_ngram_size=2),
        "sampled": GenerationConfig(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.9, seed=7),
        "min_new": GenerationConfig(max_new_tokens=12, min_new_tokens=4, logprobs=True, top_logprobs=2),
    }
    prompts = {name: _prompt(4 + 3 * i, seed=20 + i) for i, name in enumerate(configs)}
    # min_new: make its greedy first token a stop id, so min_new_tokens has to hold it back.
    first = _alone(model, prompts["min_new"], GenerationConfig(max_new_tokens=1)).tokens[0]
    configs["min_new"] = GenerationConfig(
        max_new_tokens=12, min_new_tokens=4, stop_token_ids=[first], logprobs=True, top_logprobs=2
    )
    requests = [(name, prompts[name], config) for name, config in configs.items()]
    batched = _run(BatchDecoder(model, max_batch=4), {0: requests[:2], 2: requests[2:]})
    for name, prompt, config in requests:
        expected = _alone(model, prompt, config)
        assert batched[name].tokens == expected.tokens, name
        assert batched[name].reason == expected.reason, name
    got, want = batched["min_new"].logprobs, _alone(model, prompts["min_new"], configs["min_new"]).logprobs
    assert len(got) == len(want) > 0
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    assert first not in batched["min_new"].tokens[:4]


def test_seeded_sampling_is_reproducible_whatever_the_batch() -> None:
    model = _model("gpt2-tiny", seed=3)
    config = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=123)
    prompt = _prompt(6, seed=30)
    others = [
        (f"o{i}", _prompt(4 + i, seed=40 + i), GenerationConfig(max_new_tokens=8, temperature=1.0))
        for i in range(3)
    ]
    company = _run(
        BatchDecoder(model, max_batch=4), {0: others[:2], 3: [("x", prompt, config)], 5: others[2:]}
    )
    alone = _run(BatchDecoder(model, max_batch=4), {0: [("x", prompt, config)]})
    assert company["x"].tokens == alone["x"].tokens == _alone(model, prompt, config).tokens


def test_cancel_frees_the_slot_for_a_queued_request() -> None:
    model = _model("llama-tiny")
    decoder = BatchDecoder(model, max_batch=1)
    long_id = decoder.add(_prompt(5, seed=1), GenerationConfig(max_new_tokens=50))
    waiting_prompt, waiting_config = _prompt(7, seed=2), GenerationConfig(max_new_tokens=6)
    waiting_id = decoder.add(waiting_prompt, waiting_config)
    for _ in range(3):
        assert {request_id for request_id, _ in decoder.step()} == {long_id}
    assert (decoder.running, decoder.queued) == (1, 1)
    assert decoder.cancel(long_id)
    assert (decoder.running, decoder.queued) == (0, 1)
    tokens: list[int] = []
    while decoder.has_work():
        for request_id, event in decoder.step():
            assert request_id == waiting_id
            tokens.extend(event.tokens[0])
    assert tokens == _alone(model, waiting_prompt, waiting_config).tokens
    assert not decoder.cancel(long_id)  # already gone


def test_cancel_a_queued_request_and_a_middle_row() -> None:
    model = _model("gpt2-tiny")
    decoder = BatchDecoder(model, max_batch=3)
    prompts = [_prompt(4 + 2 * i, seed=50 + i) for i in range(4)]
    config = GenerationConfig(max_new_tokens=10)
    ids = [decoder.add(p, config) for p in prompts]
    tokens: dict[int, list[int]] = {i: [] for i in ids}
    for request_id, event in decoder.step():
        tokens[request_id].extend(event.tokens[0])
    assert decoder.cancel(ids[3])  # still queued
    assert decoder.cancel(ids[1])  # a middle row: the last row moves into its slot
    while decoder.has_work():
        for request_id, event in decoder.step():
            assert request_id in (ids[0], ids[2])
            tokens[request_id].extend(event.tokens[0])
    for i in (0, 2):
        assert tokens[ids[i]] == _alone(model, prompts[i], config).tokens


def test_token_budget_limits_what_one_step_prefills() -> None:
    model = _model("llama-tiny")
    decoder = BatchDecoder(model, max_batch=4, token_budget=12)
    for length in (8, 8, 30):
        decoder.add(_prompt(length, seed=length), GenerationConfig(max_new_tokens=5))
    decoder.step()
    assert (decoder.running, decoder.queued) == (1, 2)  # 8 + 8 > 12
    decoder.step()
    assert (decoder.running, decoder.queued) == (2, 1)
    decoder.step()  # over the budget on its own: admitted alone once it heads the queue
    assert (decoder.running, decoder.queued) == (3, 0)


def test_max_new_tokens_zero_finishes_at_once() -> None:
    decoder = BatchDecoder(_model("gpt2-tiny"), max_batch=2)
    request_id = decoder.add([1, 2, 3], GenerationConfig(max_new_tokens=0))
    events = decoder.step()
    assert [(i, e.tokens, e.finished) for i, e in events] == [(request_id, [[]], ["length"])]
    assert not decoder.has_work()


def test_refusals_name_what_is_wrong() -> None:
    t5 = TransformerModel(preset_config("t5-tiny", head="seq2seq_lm", vocab_size=VOCAB)).eval()
    with pytest.raises(UnsupportedError, match="decoder-only"):
        BatchDecoder(t5)
    decoder = BatchDecoder(_model("gpt2-tiny"), max_batch=2, max_length=64)
    with pytest.raises(ConfigError, match="n=2"):
        decoder.add([1, 2], GenerationConfig(n=2, temperature=1.0))
    with pytest.raises(ConfigError, match="num_beams"):
        decoder.add([1, 2], GenerationConfig(num_beams=2))
    with pytest.raises(ConfigError, match="max_length"):
        decoder.add([1] * 40, GenerationConfig(max_new_tokens=30))
    with pytest.raises(ConfigError, match="empty"):
        decoder.add([], GenerationConfig())
    with pytest.raises(ConfigError, match="vocab_size"):
        decoder.add([VOCAB], GenerationConfig())
    with pytest.raises(ConfigError, match="max_batch"):
        BatchDecoder(_model("gpt2-tiny"), max_batch=0)
