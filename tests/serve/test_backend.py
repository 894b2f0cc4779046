"""The serial backend: the engine's tokens for one prompt, cancellation, errors, prompt scoring."""

from __future__ import annotations

import asyncio

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig, generate_detailed
from lmforge.models import TransformerModel, preset_config
from lmforge.serve import SerialBackend, build_backend
from lmforge.serve.backend import prompt_logprobs

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = [5, 17, 3, 99, 42]


@pytest.fixture(scope="module")
def model() -> TransformerModel:
    torch.manual_seed(0)
    return TransformerModel(preset_config("llama-tiny", head="causal_lm", vocab_size=128)).eval()


async def _collect(backend: SerialBackend, prompt: list[int], config: GenerationConfig):
    rows = [[] for _ in range(config.n)]
    reasons = [None] * config.n
    async for step in backend.submit(prompt, config):
        for row, tokens in enumerate(step.tokens):
            rows[row] += tokens
            reasons[row] = step.finished[row] or reasons[row]
    return rows, reasons


def test_tokens_are_the_engines(model: TransformerModel) -> None:
    greedy = GenerationConfig(max_new_tokens=12, ignore_eos=True)
    sampled = GenerationConfig(max_new_tokens=12, temperature=1.0, n=3, seed=7, ignore_eos=True)

    async def main():
        backend = SerialBackend(model)
        try:
            # Submitted together, served one after the other, each as if alone.
            return await asyncio.gather(
                _collect(backend, PROMPT, greedy), _collect(backend, PROMPT[:3], sampled)
            )
        finally:
            await backend.close()

    (greedy_rows, greedy_reasons), (sampled_rows, _) = asyncio.run(main())
    expected = generate_detailed(model, torch.tensor([PROMPT]), config=greedy)
    assert greedy_rows == expected.sequences and greedy_reasons == ["length"]
    assert sampled_rows == generate_detailed(model, torch.tensor([PROMPT[:3]]), config=sampled).sequences


def test_cancel_stops_at_a_token_boundary(model: TransformerModel) -> None:
    config = GenerationConfig(max_new_tokens=200, ignore_eos=True)

    async def main() -> int:
        backend = SerialBackend(model)
        steps = 0
        request = backend.submit(PROMPT, config)
        async for _ in request:
            steps += 1
            if steps == 3:
                request.cancel()
        after = await _collect(backend, PROMPT, GenerationConfig(max_new_tokens=2, ignore_eos=True))
        await backend.close()
        assert after[1] == ["length"]  # the worker is free again
        return steps

    assert asyncio.run(main()) < 10


def test_errors_reach_the_reader(model: TransformerModel) -> None:
    too_long = GenerationConfig(max_new_tokens=model.config.max_positions)

    async def main() -> None:
        backend = SerialBackend(model)
        try:
            with pytest.raises(ConfigError, match="max_positions"):
                await _collect(backend, PROMPT, too_long)
        finally:
            await backend.close()

    asyncio.run(main())


def test_prompt_logprobs_are_teacher_forced_log_softmax(model: TransformerModel) -> None:
    scores = prompt_logprobs(model, PROMPT, top=3)
    with torch.no_grad():
        log_probs = model(torch.tensor([PROMPT])).logits[0].log_softmax(-1)
    assert scores.logprobs[0] is None and scores.top_logprobs[0] is None
    for i in range(1, len(PROMPT)):
        assert scores.logprobs[i] == pytest.approx(log_probs[i - 1, PROMPT[i]].item(), abs=1e-5)
        best = log_probs[i - 1].topk(3)
        assert [t for t, _ in scores.top_logprobs[i]] == best.indices.tolist()


def test_build_backend_refuses_a_bad_batch_size(model: TransformerModel) -> None:
    with pytest.raises(ConfigError, match="max_batch"):
        build_backend(model, max_batch=0)
    assert isinstance(build_backend(model, max_batch=1), SerialBackend)
