"""The continuous-batching backend: concurrent requests come out as if each ran alone; cancel frees slots."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from serving import chat_tokenizer, serving

from lmforge.errors import ConfigError, LmforgeWarning
from lmforge.generate import GenerationConfig, TokenStep, stream
from lmforge.models import TransformerModel, preset_config
from lmforge.serve.backend import SerialBackend
from lmforge.serve.scheduler import Scheduler, build_scheduler

VOCAB = 300


@pytest.fixture(scope="module")
def model() -> TransformerModel:
    """A tiny Llama (RoPE + GQA) whose next token depends on its whole context (std 0.2 weights)."""
    torch.manual_seed(0)
    config = preset_config(
        "llama-tiny", head="causal_lm", vocab_size=VOCAB, num_layers=2, eos_token_id=VOCAB - 1
    )
    model = TransformerModel(config).eval()
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.2)
    return model


def _prompt(length: int, seed: int) -> list[int]:
    return torch.randint(1, VOCAB - 1, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def _alone(model: TransformerModel, prompt: list[int], config: GenerationConfig) -> list[TokenStep]:
    return list(stream(model, torch.tensor([prompt]), None, config))


async def _steps(scheduler: Scheduler, prompt: list[int], config: GenerationConfig, delay: float = 0.0):
    await asyncio.sleep(delay)
    return [step async for step in scheduler.submit(prompt, config)]


def _watch_batch_size(scheduler: Scheduler) -> list[int]:
    """Record how many rows each decoding step ran with."""
    sizes: list[int] = []
    step = scheduler.decoder.step

    def counting_step() -> list[tuple[int, TokenStep]]:
        events = step()
        sizes.append(scheduler.decoder.running + sum(e.finished[0] is not None for _, e in events))
        return events

    scheduler.decoder.step = counting_step  # type: ignore[method-assign]
    return sizes


def test_concurrent_requests_give_the_steps_they_get_alone(model: TransformerModel) -> None:
    shapes = [(5, 12), (17, 3), (9, 20), (3, 7), (12, 1), (8, 15), (20, 9)]
    requests = [
        (_prompt(length, seed=i), GenerationConfig(max_new_tokens=new))
        for i, (length, new) in enumerate(shapes)
    ]
    stop = _alone(model, *requests[2])[5].tokens[0][0]  # this one meets a stop id mid-way
    requests[2] = (requests[2][0], GenerationConfig(max_new_tokens=20, stop_token_ids=[stop]))
    requests.append((_prompt(6, seed=99), GenerationConfig(max_new_tokens=10, logprobs=True, top_logprobs=2)))

    async def main() -> tuple[list[list[TokenStep]], list[int]]:
        scheduler = Scheduler(model, max_batch=3)
        sizes = _watch_batch_size(scheduler)
        try:
            delays = [0.0, 0.0, 0.0, 0.0, 0.01, 0.01, 0.02, 0.02]
            got = await asyncio.gather(
                *(_steps(scheduler, p, c, d) for (p, c), d in zip(requests, delays, strict=True))
            )
            return list(got), sizes
        finally:
            await scheduler.close()

    got, sizes = asyncio.run(main())
    for index, (prompt, config) in enumerate(requests):
        expected = _alone(model, prompt, config)
        if config.logprobs:  # log-probabilities agree to float precision, tokens exactly
            assert [s.tokens for s in got[index]] == [s.tokens for s in expected]
            for ours, theirs in zip(got[index], expected, strict=True):
                torch.testing.assert_close(ours.logprobs, theirs.logprobs, atol=1e-4, rtol=0)
                assert [[t for t, _ in alt] for alt in ours.top_logprobs[0]] == [
                    [t for t, _ in alt] for alt in theirs.top_logprobs[0]
                ]
        else:
            assert got[index] == expected, index
    assert got[2][-1].finished == ["stop"]
    assert max(sizes) == 3  # requests really shared the batch


def test_n_samples_are_rows_of_one_submission(model: TransformerModel) -> None:
    config = GenerationConfig(max_new_tokens=8, temperature=1.0, n=3, seed=5, ignore_eos=True)

    async def main() -> list[list[TokenStep]]:
        scheduler = Scheduler(model, max_batch=4)
        try:
            other = GenerationConfig(max_new_tokens=4, temperature=1.0)
            return list(
                await asyncio.gather(
                    _steps(scheduler, _prompt(4, 1), config), _steps(scheduler, _prompt(9, 2), other)
                )
            )
        finally:
            await scheduler.close()

    first, _ = asyncio.run(main())
    again, _ = asyncio.run(main())
    rows = [sum((s.tokens[row] for s in first), []) for row in range(3)]
    assert rows == [sum((s.tokens[row] for s in again), []) for row in range(3)]  # seeded: reproducible
    assert all(len(r) == 8 for r in rows) and len({tuple(r) for r in rows}) == 3  # three different samples
    assert [next(s.finished[r] for s in first if s.finished[r]) for r in range(3)] == ["length"] * 3


def test_cancel_frees_the_slot_for_a_queued_request(model: TransformerModel) -> None:
    short_prompt, short_config = _prompt(7, seed=3), GenerationConfig(max_new_tokens=6)

    async def main() -> tuple[int, list[TokenStep], tuple[int, int]]:
        scheduler = Scheduler(model, max_batch=1)
        try:
            long = scheduler.submit(_prompt(5, seed=4), GenerationConfig(max_new_tokens=120, ignore_eos=True))
            short = asyncio.create_task(_steps(scheduler, short_prompt, short_config))
            seen = 0
            async for _ in long:
                seen += 1
                if seen == 3:
                    long.cancel()
                    long.cancel()  # twice is harmless
            short_steps = await short
            return seen, short_steps, (scheduler.running, scheduler.queued)
        finally:
            await scheduler.close()

    seen, short_steps, after = asyncio.run(main())
    assert 3 <= seen < 120  # the stream ended soon after cancel, without an error
    assert short_steps == _alone(model, short_prompt, short_config)
    assert after == (0, 0)


def test_bad_requests_fail_their_reader_only(model: TransformerModel) -> None:
    async def main() -> list[TokenStep]:
        scheduler = Scheduler(model, max_batch=2, max_length=64)
        try:
            with pytest.raises(ConfigError, match="max_length"):
                await _steps(scheduler, _prompt(40, 1), GenerationConfig(max_new_tokens=30))
            assert await _steps(scheduler, _prompt(4, 2), GenerationConfig(max_new_tokens=0)) == []
            return await _steps(scheduler, _prompt(4, 2), GenerationConfig(max_new_tokens=5))
        finally:
            await scheduler.close()

    assert asyncio.run(main()) == _alone(model, _prompt(4, 2), GenerationConfig(max_new_tokens=5))


def test_beam_search_runs_alone_and_run_calls_wait_for_a_boundary(model: TransformerModel) -> None:
    beams = GenerationConfig(max_new_tokens=6, num_beams=3, ignore_eos=True)

    async def main() -> tuple[list[TokenStep], str]:
        scheduler = Scheduler(model, max_batch=2)
        try:
            beam_steps = await _steps(scheduler, _prompt(5, 1), beams)
            name = await scheduler.run(lambda: threading.current_thread().name)
            return beam_steps, name
        finally:
            await scheduler.close()

    beam_steps, name = asyncio.run(main())
    assert beam_steps == _alone(model, _prompt(5, 1), beams)
    assert name == "lmforge-batcher"


def test_models_it_cannot_batch_get_the_serial_backend() -> None:
    t5 = TransformerModel(preset_config("t5-tiny", head="seq2seq_lm", vocab_size=VOCAB)).eval()
    with pytest.warns(LmforgeWarning, match="one request at a time"):
        assert isinstance(build_scheduler(t5, max_batch=4), SerialBackend)


def test_http_clients_batched_and_a_disconnect_frees_its_slot() -> None:
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = preset_config("llama-tiny", head="causal_lm", vocab_size=tokenizer.vocab_size, max_positions=256)
    model = TransformerModel(config).eval()
    prompts = ["Hello world", "the quick brown fox", "北京是中国的首都", "emoji 🙂"]
    with serving(model, tokenizer=tokenizer) as serial:
        client = serial.client()
        expected = [
            client.completions.create(model="model", prompt=p, max_tokens=12, temperature=0).choices[0].text
            for p in prompts
        ]
    scheduler = Scheduler(model, max_batch=4)
    with serving(model, tokenizer=tokenizer, backend=scheduler) as server:
        client = server.client()
        results: dict[int, str] = {}

        def ask(i: int) -> None:
            reply = client.completions.create(model="model", prompt=prompts[i], max_tokens=12, temperature=0)
            results[i] = reply.choices[0].text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert [results.get(i) for i in range(len(prompts))] == expected

        sizes = _watch_batch_size(scheduler)
        chunks = client.completions.create(
            model="model",
            prompt="Hello",
            max_tokens=200,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        for count, _ in enumerate(chunks):
            if count == 2:
                break
        assert scheduler.running == 1
        chunks.close()  # the client goes away mid-stream
        deadline = time.monotonic() + 10
        while scheduler.running and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scheduler.running == 0 and scheduler.queued == 0
        assert len(sizes) < 100  # decoding stopped long before max_tokens
