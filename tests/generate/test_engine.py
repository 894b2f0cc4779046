"""The generation engine's behaviour, each against a reference: the model itself (teacher-forced
log-probabilities, a fresh recompute), greedy decoding, or a count of what ran.

Models are tiny and random (weights redrawn so that greedy output varies with the prompt), or
"scripted" (tests/generate/scripted.py) where a test must know the tokens in advance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from scripted import chain, scripted_model

from lmforge.generate import GenerationConfig, generate, generate_detailed, stream
from lmforge.generate.session import DecodeSession
from lmforge.models import TransformerModel, preset_config

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 300
PAD = 0


@cache
def _model(preset: str = "llama-tiny") -> TransformerModel:
    """A random model whose greedy continuations vary with the prompt (see test_padding)."""
    seq2seq = preset.startswith("t5")
    overrides: dict[str, object] = (
        {"tie_embeddings": False} if seq2seq else {"num_layers": 2, "bos_token_id": 1, "eos_token_id": 1}
    )
    config = preset_config(
        preset, head="seq2seq_lm" if seq2seq else "causal_lm", vocab_size=VOCAB, pad_token_id=PAD, **overrides
    )
    torch.manual_seed(0)
    model = TransformerModel(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        assert model.lm_head is not None
        if seq2seq:
            model.lm_head.decoder.weight.copy_(torch.randn(VOCAB, config.hidden_size, generator=generator))
        else:
            for parameter in model.parameters():
                if parameter.dim() >= 2:
                    parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def _left_padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, width - length :] = torch.randint(PAD + 1, VOCAB, (length,), generator=generator)
        mask[row, width - length :] = 1
    return ids, mask


def _teacher_forced(model: TransformerModel, prompt: list[int], new: list[int]) -> torch.Tensor:
    """(len(new), V) log-probabilities of the model at the positions that predict ``new``."""
    ids = torch.tensor([prompt + new])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits is not None
    return logits[0, len(prompt) - 1 : len(prompt) + len(new) - 1].float().log_softmax(-1)


@contextmanager
def _count_calls(module: torch.nn.Module, record: list[tuple[int, ...]]) -> Iterator[None]:
    """Append the first input's shape of every call of ``module`` to ``record``."""
    handle = module.register_forward_hook(lambda _m, args, _out: record.append(tuple(args[0].shape)))
    try:
        yield
    finally:
        handle.remove()


# -- log-probabilities ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logprobs_equal_teacher_forced_log_softmax(temperature: float) -> None:
    model = _model()
    ids, mask = _left_padded([7, 4])
    n = 2 if temperature else 1
    config = GenerationConfig(
        max_new_tokens=8, temperature=temperature, n=n, seed=3, ignore_eos=True, logprobs=True, top_logprobs=4
    )
    output = generate_detailed(model, ids, mask, config)
    assert output.logprobs is not None and output.top_logprobs is not None
    for row, new in enumerate(output.sequences):
        prompt = ids[row // n][mask[row // n].bool()].tolist()  # rows are prompt-major
        reference = _teacher_forced(model, prompt, new)  # (T, V)
        chosen = reference.gather(1, torch.tensor(new)[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(output.logprobs[row]), chosen, atol=1e-4, rtol=0)
        values, top_ids = reference.topk(4, dim=-1)
        for position, alternatives in enumerate(output.top_logprobs[row]):
            alt_ids = [token for token, _ in alternatives]
            alt_values = [value for _, value in alternatives]
            assert alt_values == sorted(alt_values, reverse=True)
            assert alt_ids == top_ids[position].tolist()
            torch.testing.assert_close(torch.tensor(alt_values), values[position], atol=1e-4, rtol=0)
            assert output.logprobs[row][position] <= alt_values[0] + 1e-6
            if temperature == 0:  # greedy picks the best alternative
                assert new[position] == alt_ids[0]


# -- samples, seeds, stop conditions -------------------------------------------------------------


def test_n_seeded_samples_are_reproducible_and_differ() -> None:
    model = _model()
    ids, mask = _left_padded([6, 3])

    def sample(seed: int) -> list[list[int]]:
        config = GenerationConfig(max_new_tokens=10, temperature=1.5, n=3, seed=seed, ignore_eos=True)
        return generate(model, ids, mask, config).tolist()

    first = sample(7)
    assert len(first) == 2 * 3
    assert sample(7) == first
    assert sample(8) != first
    for prompt in range(2):
        rows = first[prompt * 3 : prompt * 3 + 3]
        assert len({tuple(row) for row in rows}) == 3, "the n samples of a prompt must differ"


def test_overflowing_temperature_or_penalty_still_samples() -> None:
    """Logits divided by 5e-324 overflow to +inf (softmax NaN): sampling still picks a top token."""
    model = _model()
    ids, mask = _left_padded([6, 3])
    greedy = generate(model, ids, mask, GenerationConfig(max_new_tokens=1, ignore_eos=True))
    for fields in ({"temperature": 5e-324}, {"temperature": 1.0, "repetition_penalty": 5e-324}):
        config = GenerationConfig(max_new_tokens=4, seed=0, ignore_eos=True, **fields)  # type: ignore[arg-type]
        tokens = generate(model, ids, mask, config)
        assert tokens.shape == (2, 4)
        if "repetition_penalty" not in fields:
            assert torch.equal(tokens[:, :1], greedy)


def test_each_stop_token_id_ends_its_row() -> None:
    # Prompt [10] continues 11 12 13 40, prompt [20] continues 21 22 41, prompt [30] 31 32 ... 37.
    successor = {**chain([10, 11, 12, 13, 40]), **chain([20, 21, 22, 41]), **chain(range(30, 38))}
    model = scripted_model(64, successor)
    ids = torch.tensor([[10], [20], [30]])
    config = GenerationConfig(max_new_tokens=6, stop_token_ids=[40, 41], ignore_eos=True)
    output = generate_detailed(model, ids, None, config)
    assert output.sequences == [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35, 36]]
    assert output.finish_reasons == ["stop", "stop", "length"]
    # generate() pads an ended row with its first stop id.
    assert generate(model, ids, None, config).tolist() == [
        [11, 12, 13, 40, 40, 40],
        [21, 22, 40, 40, 40, 40],
        [31, 32, 33, 34, 35, 36],
    ]
    # Several EOS ids end rows too; without any, every row runs to the length.
    as_eos = generate_detailed(model, ids, None, GenerationConfig(max_new_tokens=6, eos_token_id=[40, 41]))
    assert as_eos.sequences == output.sequences
    unstopped = generate_detailed(model, ids, None, GenerationConfig(max_new_tokens=6, ignore_eos=True))
    assert unstopped.finish_reasons == ["length"] * 3


def test_min_new_tokens_suppresses_eos() -> None:
    eos = 9
    model = scripted_model(16, {3: eos, 0: eos}, eos_token_id=eos)  # EOS right away, else token 0
    ids = torch.tensor([[3]])
    early = generate_detailed(model, ids, None, GenerationConfig(max_new_tokens=6))
    assert early.sequences == [[]] and early.finish_reasons == ["stop"]
    held = generate_detailed(model, ids, None, GenerationConfig(max_new_tokens=6, min_new_tokens=2))
    assert held.sequences == [[0, 0]] and held.finish_reasons == ["stop"]


def test_stop_predicate_ends_only_its_row() -> None:
    model = _model()
    ids, mask = _left_padded([5, 5])
    seen: list[tuple[int, int]] = []

    def stop(row: int, tokens: object) -> bool:
        assert isinstance(tokens, list | tuple)
        seen.append((row, len(tokens)))
        return row == 0 and len(tokens) == 3

    config = GenerationConfig(max_new_tokens=7, ignore_eos=True)
    full = generate_detailed(model, ids, mask, config)
    cut = generate_detailed(model, ids, mask, config, stop=stop)
    assert cut.sequences == [full.sequences[0][:3], full.sequences[1]]
    assert cut.finish_reasons == ["stop", "length"]
    assert (0, 4) not in seen  # an ended row is not asked again


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stream_yields_the_tokens_of_generate(temperature: float) -> None:
    model = _model()
    ids, mask = _left_padded([6, 2, 4])
    config = GenerationConfig(max_new_tokens=9, temperature=temperature, seed=5, ignore_eos=True)
    steps = list(stream(model, ids, mask, config))
    assert len(steps) == 9 and all(len(tokens) == 1 for step in steps for tokens in step.tokens)
    streamed = [[step.tokens[row][0] for step in steps] for row in range(3)]
    assert streamed == generate(model, ids, mask, config).tolist()
    assert steps[-1].finished == ["length"] * 3 and all(s.finished == [None] * 3 for s in steps[:-1])


# -- prompt-lookup speculative decoding ----------------------------------------------------------


def _forwards(model: TransformerModel, ids: torch.Tensor, config: GenerationConfig) -> tuple[list[int], int]:
    calls: list[tuple[int, ...]] = []
    with _count_calls(model.stack if model.decoder is None else model.decoder, calls):
        tokens = generate(model, ids, None, config)[0].tolist()
    return tokens, len(calls)


def test_prompt_lookup_equals_greedy_with_fewer_forwards_on_repetitive_text() -> None:
    text = list(range(10, 40))
    model = scripted_model(64, chain(text))
    ids = torch.tensor([text + text[:3]])  # the prompt quotes a passage; the model repeats it
    greedy = GenerationConfig(max_new_tokens=24, ignore_eos=True)
    lookup = GenerationConfig(max_new_tokens=24, ignore_eos=True, prompt_lookup_num_tokens=8)
    expected, greedy_forwards = _forwards(model, ids, greedy)
    actual, lookup_forwards = _forwards(model, ids, lookup)
    assert expected == text[3:27]
    assert actual == expected
    assert greedy_forwards == 24  # prefill + one per later token
    assert lookup_forwards <= 6


@pytest.mark.parametrize("preset", ["llama-tiny", "gpt2-tiny", "t5-tiny"])
def test_prompt_lookup_is_exact_when_drafts_are_rejected(preset: str) -> None:
    """A random model rarely follows the drafts: every rejection must roll back exactly."""
    model = _model(preset)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        piece = torch.randint(1, VOCAB, (5,), generator=generator).tolist()
        ids = torch.tensor([piece * 3])
        greedy = GenerationConfig(max_new_tokens=12, ignore_eos=True, logprobs=True)
        lookup = GenerationConfig(
            max_new_tokens=12, ignore_eos=True, logprobs=True, prompt_lookup_num_tokens=4
        )
        expected = generate_detailed(model, ids, None, greedy)
        actual = generate_detailed(model, ids, None, lookup)
        assert actual.sequences == expected.sequences
        assert actual.finish_reasons == expected.finish_reasons
        assert actual.logprobs is not None and expected.logprobs is not None
        torch.testing.assert_close(
            torch.tensor(actual.logprobs), torch.tensor(expected.logprobs), atol=1e-4, rtol=0
        )


# -- the static KV cache, the head, attention ----------------------------------------------------


def test_static_cache_is_written_in_place_and_rolls_back() -> None:
    model = _model()
    prompt = torch.tensor([[5, 17, 99, 4]])
    with torch.inference_mode():
        session = DecodeSession(model, prompt, None, capacity=8)
        session.prefill()
        buffer = session.cache._buffers[0][0]
        pointer = buffer.data_ptr()
        assert buffer.shape[2] == session.cache.capacity
        session.step(torch.tensor([[7]]))
        session.step(torch.tensor([[8, 9, 10]]))  # a draft of three
        assert session.cache.length == 4 + 4
        assert session.cache.self_kv[0][0].data_ptr() == pointer  # attention reads a view
        assert session.cache._buffers[0][0].data_ptr() == pointer
        session.rollback(2)  # keep 8, forget 9 and 10
        assert session.cache.length == 6 and session.cache.self_kv[0][0].shape[2] == 6
        after_rollback = session.step(torch.tensor([[11]]))[:, -1]
        assert session.cache._buffers[0][0].data_ptr() == pointer

        fresh = DecodeSession(model, prompt, None, capacity=8)
        fresh.prefill()
        fresh.step(torch.tensor([[7, 8]]))
        reference = fresh.step(torch.tensor([[11]]))[:, -1]
        recomputed = model(torch.tensor([[5, 17, 99, 4, 7, 8, 11]])).logits[:, -1]
    torch.testing.assert_close(after_rollback, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(after_rollback, recomputed, atol=1e-4, rtol=0)


@pytest.mark.parametrize("preset", ["llama-tiny", "t5-tiny"])
def test_lm_head_sees_one_position_per_row_per_step(preset: str) -> None:
    model = _model(preset)
    ids, mask = _left_padded([9, 5])
    calls: list[tuple[int, ...]] = []
    assert model.lm_head is not None
    with _count_calls(model.lm_head, calls):
        generate(model, ids, mask, GenerationConfig(max_new_tokens=5, ignore_eos=True))
    assert calls == [(2, 1, model.config.hidden_size)] * 5


@contextmanager
def _sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, object]]]:
    calls: list[dict[str, object]] = []
    real: Callable[..., torch.Tensor] = F.scaled_dot_product_attention

    def record(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: object) -> torch.Tensor:
        mask = kwargs.get("attn_mask")
        calls.append(
            {
                "query_heads": query.shape[1],
                "key_heads": key.shape[1],
                "query_length": query.shape[2],
                "mask_dtype": None if mask is None else mask.dtype,  # type: ignore[attr-defined]
                "is_causal": kwargs.get("is_causal", False),
                "enable_gqa": kwargs.get("enable_gqa", False),
            }
        )
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", record)
    yield calls


def test_sdpa_gets_boolean_masks_and_native_gqa(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()  # 4 query heads, 2 key/value heads
    config = GenerationConfig(max_new_tokens=3, ignore_eos=True)
    with _sdpa_calls(monkeypatch) as calls:
        generate(model, torch.tensor([[5, 6, 7, 8]]), None, config)
    layers = model.config.num_layers
    assert len(calls) == 3 * layers
    prefill, decode = calls[:layers], calls[layers:]
    for call in calls:
        assert call["query_heads"] == 4 and call["key_heads"] == 2 and call["enable_gqa"] is True
    # Unpadded prefill: is_causal or a boolean causal mask (never a float one, never neither).
    assert all(
        (call["mask_dtype"] is None and call["is_causal"] is True)
        or (call["mask_dtype"] == torch.bool and call["is_causal"] is False)
        for call in prefill
    )
    assert all(call["query_length"] == 4 for call in prefill)
    # A one-token decode step sees every key: no mask at all.
    assert all(call["mask_dtype"] is None and call["query_length"] == 1 for call in decode)

    ids, mask = _left_padded([6, 3])
    with _sdpa_calls(monkeypatch) as calls:
        generate(model, ids, mask, config)
    assert calls and all(call["mask_dtype"] == torch.bool for call in calls)  # padding: boolean masks
    assert all(call["key_heads"] == 2 and call["enable_gqa"] is True for call in calls)


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=6, ignore_eos=True),
        GenerationConfig(max_new_tokens=6, temperature=1.0, n=2, seed=1, ignore_eos=True),
        GenerationConfig(max_new_tokens=6, num_beams=3, ignore_eos=True),
    ],
    ids=["greedy", "n-samples", "beams"],
)
def test_t5_encoder_and_cross_attention_kv_run_once(config: GenerationConfig) -> None:
    model = _model("t5-tiny")
    assert model.decoder is not None
    ids, mask = _left_padded([7, 4])
    encoder: list[tuple[int, ...]] = []
    decoder: list[tuple[int, ...]] = []
    cross_keys: list[tuple[int, ...]] = []
    cross_values: list[tuple[int, ...]] = []
    layers = model.decoder.layers
    with _count_calls(model.stack, encoder), _count_calls(model.decoder, decoder):
        hooks = [
            block.cross_attn.k_proj.register_forward_hook(lambda _m, a, _o: cross_keys.append(a[0].shape))
            for block in layers
            if block.cross_attn is not None
        ] + [
            block.cross_attn.v_proj.register_forward_hook(lambda _m, a, _o: cross_values.append(a[0].shape))
            for block in layers
            if block.cross_attn is not None
        ]
        try:
            generate(model, ids, mask, config)
        finally:
            for hook in hooks:
                hook.remove()
    assert len(encoder) == 1
    assert len(decoder) == 6  # one decoder step per new token
    assert len(cross_keys) == len(cross_values) == len(layers)  # once per layer, then cached
