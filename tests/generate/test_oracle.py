"""transformers as the oracle of decoding, in fp32: each logits processor on random logits and
histories, sampling on crafted distributions, beam search on tiny random GPT-2 and T5 twins, and
greedy decoding of the real SmolLM2-135M (batched with left padding and alone)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from parity_utils import hf_twin
from transformers.generation import logits_process as hf

from lmforge.errors import AssetMissingError
from lmforge.generate import GenerationConfig, generate, generate_detailed
from lmforge.generate.beam import beam_search
from lmforge.generate.sampling import TokenHistory, apply_penalties, choose, truncate
from lmforge.generate.session import DecodeSession
from lmforge.models import TransformerModel, family, preset_config
from lmforge.models.io.convert import import_weights

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 50
NEG_INF = float("-inf")


def _assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """-inf in the same places, the kept values equal."""
    assert torch.equal(torch.isneginf(actual), torch.isneginf(expected))
    kept = ~torch.isneginf(expected)
    torch.testing.assert_close(actual[kept], expected[kept], rtol=1e-6, atol=1e-6)


def _logits(rows: int = 6, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * scale


def _history(prompt: torch.Tensor, outputs: torch.Tensor, mask: torch.Tensor | None = None) -> TokenHistory:
    """A history as the engine builds it: the prompt (padding masked out), then output tokens one by one."""
    mask = torch.ones_like(prompt) if mask is None else mask
    history = TokenHistory(prompt, mask, VOCAB, track=True)
    for column in outputs.T:
        history.append(column)
    return history


def _ids(rows: int, length: int, seed: int, alphabet: int = VOCAB) -> torch.Tensor:
    """Random ids; a small alphabet makes tokens and n-grams repeat."""
    return torch.randint(0, alphabet, (rows, length), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ penalties


@pytest.mark.parametrize("penalty", [1e308, 1e-300])
def test_extreme_repetition_penalties_saturate_and_keep_masked_tokens_out(penalty: float) -> None:
    """Found by the server's schema fuzzing (repetition_penalty 1.4e308 with guided_choice): the
    penalized logits became -inf / NaN, and a row whose allowed tokens were all seen had nothing
    left to sample (a 500)."""
    logits = _logits(rows=2)
    logits[:, 10:] = NEG_INF  # a grammar allows tokens 0-9 only
    prompt = torch.arange(10).repeat(2, 1)  # every allowed token already seen
    penalized = apply_penalties(
        logits, _history(prompt, prompt[:, :0]), GenerationConfig(repetition_penalty=penalty)
    )
    assert not penalized.isnan().any() and torch.isneginf(penalized[:, 10:]).all()
    assert penalized[:, :10].isfinite().all()
    probs = penalized.softmax(-1)
    assert not probs.isnan().any() and probs[:, 10:].sum() == 0
    generator = torch.Generator().manual_seed(0)
    tokens = choose(
        logits,
        _history(prompt, prompt[:, :0]),
        GenerationConfig(repetition_penalty=penalty, temperature=0.7),
        generator,
    )
    assert (tokens < 10).all()


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_equals_transformers(penalty: float) -> None:
    prompt, outputs, logits = _ids(6, 7, seed=1, alphabet=20), _ids(6, 5, seed=2, alphabet=20), _logits()
    history = _history(prompt, outputs)
    actual = apply_penalties(logits, history, GenerationConfig(repetition_penalty=penalty))
    expected = hf.RepetitionPenaltyLogitsProcessor(penalty)(torch.cat((prompt, outputs), 1), logits.clone())
    _assert_same_logits(actual, expected)
    assert not torch.equal(actual, logits)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_no_repeat_ngram_equals_transformers(size: int) -> None:
    prompt, outputs, logits = _ids(6, 10, seed=3, alphabet=4), _ids(6, 4, seed=4, alphabet=4), _logits()
    history = _history(prompt, outputs)
    actual = apply_penalties(logits, history, GenerationConfig(no_repeat_ngram_size=size))
    expected = hf.NoRepeatNGramLogitsProcessor(size)(torch.cat((prompt, outputs), 1), logits.clone())
    _assert_same_logits(actual, expected)
    assert torch.isneginf(actual).any()


def test_penalties_ignore_padding_as_transformers_does_the_unpadded_row() -> None:
    """A left-padded row is penalised as its real tokens alone (transformers would count the pad id)."""
    prompt, outputs, logits = _ids(3, 8, seed=5, alphabet=6), _ids(3, 3, seed=6, alphabet=6), _logits(3)
    lengths = [8, 5, 2]
    mask = (torch.arange(8)[None] >= 8 - torch.tensor(lengths)[:, None]).long()
    config = GenerationConfig(repetition_penalty=1.5, no_repeat_ngram_size=2)
    actual = apply_penalties(logits, _history(prompt, outputs, mask), config)
    processors = hf.LogitsProcessorList(
        [hf.RepetitionPenaltyLogitsProcessor(1.5), hf.NoRepeatNGramLogitsProcessor(2)]
    )
    for row, length in enumerate(lengths):
        real = torch.cat((prompt[row, 8 - length :], outputs[row]))[None]
        _assert_same_logits(actual[row : row + 1], processors(real, logits[row : row + 1].clone()))


@pytest.mark.parametrize(("frequency", "presence"), [(0.5, 0.0), (0.0, 1.5), (-0.8, 0.3)])
def test_frequency_and_presence_penalties_follow_openais_definition(
    frequency: float, presence: float
) -> None:
    """transformers has no such processor. OpenAI: logit - count * frequency - (count > 0) * presence,
    counting the tokens generated so far (not the prompt)."""
    prompt, outputs, logits = _ids(4, 6, seed=7, alphabet=8), _ids(4, 9, seed=8, alphabet=8), _logits(4)
    config = GenerationConfig(frequency_penalty=frequency, presence_penalty=presence)
    actual = apply_penalties(logits, _history(prompt, outputs), config)
    expected = logits.clone()
    for row in range(4):
        for token in set(outputs[row].tolist()):
            count = outputs[row].tolist().count(token)
            expected[row, token] -= count * frequency + presence
    torch.testing.assert_close(actual, expected)
    prompt_only = set(prompt[0].tolist()) - set(outputs[0].tolist())
    assert all(actual[0, token] == logits[0, token] for token in prompt_only)


# ------------------------------------------------------------------ truncation

WARPERS: list[tuple[dict[str, Any], list[hf.LogitsProcessor]]] = [
    ({"top_k": 1}, [hf.TopKLogitsWarper(1)]),
    ({"top_k": 7}, [hf.TopKLogitsWarper(7)]),
    ({"top_k": VOCAB + 5}, [hf.TopKLogitsWarper(VOCAB + 5)]),
    ({"top_p": 0.3}, [hf.TopPLogitsWarper(0.3)]),
    ({"top_p": 0.9}, [hf.TopPLogitsWarper(0.9)]),
    ({"min_p": 0.05}, [hf.MinPLogitsWarper(0.05)]),
    ({"min_p": 0.4}, [hf.MinPLogitsWarper(0.4)]),
    ({"typical_p": 0.2}, [hf.TypicalLogitsWarper(0.2)]),
    ({"typical_p": 0.9}, [hf.TypicalLogitsWarper(0.9)]),
    ({"temperature": 0.6}, [hf.TemperatureLogitsWarper(0.6)]),
    (
        {"temperature": 1.7, "top_k": 30, "top_p": 0.95, "min_p": 0.02, "typical_p": 0.97},
        [
            hf.TemperatureLogitsWarper(1.7),
            hf.TopKLogitsWarper(30),
            hf.TopPLogitsWarper(0.95),
            hf.MinPLogitsWarper(0.02),
            hf.TypicalLogitsWarper(0.97),
        ],
    ),
]


@pytest.mark.parametrize(("fields", "warpers"), WARPERS, ids=[str(f) for f, _ in WARPERS])
@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_truncation_equals_transformers(fields: dict[str, Any], warpers: list[Any], scale: float) -> None:
    logits = _logits(8, seed=9, scale=scale)
    logits[0, :10] = NEG_INF  # a row already cut by an earlier processor
    actual = truncate(logits, GenerationConfig(**{"temperature": 1.0, **fields}))
    expected = hf.LogitsProcessorList(warpers)(_ids(8, 3, seed=0), logits.clone())
    _assert_same_logits(actual, expected)


# (fields, probabilities, the tokens that may be drawn)
CRAFTED = [0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.05, 0.03, 0.015, 0.005]
ALLOWED: list[tuple[dict[str, Any], list[float], set[int]]] = [
    ({"top_k": 3}, CRAFTED, {0, 1, 2}),
    ({"top_p": 0.6}, CRAFTED, {0, 1, 2}),  # 0.3 + 0.2 < 0.6 <= 0.3 + 0.2 + 0.15
    ({"top_p": 0.7}, CRAFTED, {0, 1, 2, 3}),
    ({"top_p": 0.75}, [0.5, 0.25, 0.125, 0.125], {0, 1}),  # the mass reaches 0.75 exactly: no third token
    ({"top_p": 0.5}, [0.5, 0.25, 0.25], {0}),
    ({"min_p": 0.3}, CRAFTED, {0, 1, 2, 3}),  # p >= 0.3 * 0.3
    ({"min_p": 0.6}, CRAFTED, {0, 1}),  # p >= 0.18
    ({"top_k": 5, "top_p": 0.6, "min_p": 0.6}, CRAFTED, {0, 1}),  # min-p of 0.3, 0.2, 0.15 renormalised
]


@pytest.mark.parametrize(("fields", "probs", "allowed"), ALLOWED, ids=[str(f) for f, _, _ in ALLOWED])
def test_sampling_only_draws_the_allowed_tokens(
    fields: dict[str, Any], probs: list[float], allowed: set[int]
) -> None:
    """4000 seeded draws: every allowed token is drawn, in proportion to its renormalised
    probability, and nothing else ever is."""
    draws = 4000
    logits = torch.tensor(probs).log()[None].expand(draws, -1).contiguous()
    history = TokenHistory(
        logits.new_zeros(draws, 1, dtype=torch.long), torch.ones(draws, 1), len(probs), False
    )
    config = GenerationConfig(temperature=1.0, **fields)
    tokens = choose(logits, history, config, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=len(probs)).float()
    assert {int(t) for t in tokens.unique()} == allowed
    expected = torch.tensor([p if i in allowed else 0.0 for i, p in enumerate(probs)])
    expected = expected / expected.sum() * draws
    assert float((counts - expected).abs().max()) < 5 * draws**0.5  # ~ 5 standard deviations
    hf_list = hf.LogitsProcessorList()
    hf_list += [hf.TopKLogitsWarper(fields["top_k"])] if "top_k" in fields else []
    hf_list += [hf.TopPLogitsWarper(fields["top_p"])] if "top_p" in fields else []
    hf_list += [hf.MinPLogitsWarper(fields["min_p"])] if "min_p" in fields else []
    kept = ~torch.isneginf(hf_list(torch.zeros(1, 1, dtype=torch.long), logits[:1].clone()))[0]
    assert set(kept.nonzero()[:, 0].tolist()) == allowed  # the oracle agrees on the allowed set


@pytest.fixture(scope="module")
def gpt2_twins() -> tuple[torch.nn.Module, TransformerModel]:
    """A tiny random GPT-2 in both libraries; an untied head keeps its continuations varied (a tied
    random head mostly repeats the last token)."""
    config = preset_config(
        "gpt2-tiny", vocab_size=300, head="causal_lm", eos_token_id=2, pad_token_id=0, tie_embeddings=False
    )
    return hf_twin(config)


@pytest.fixture(scope="module")
def t5_twins() -> tuple[torch.nn.Module, TransformerModel]:
    return hf_twin(preset_config("t5-tiny", vocab_size=300, head="seq2seq_lm"))


def test_seeded_sampling_is_reproducible(gpt2_twins: tuple[torch.nn.Module, TransformerModel]) -> None:
    _, model = gpt2_twins
    prompt = _ids(2, 5, seed=11, alphabet=300)

    def sample(seed: int) -> list[list[int]]:
        config = GenerationConfig(
            max_new_tokens=12, temperature=1.0, top_k=50, seed=seed, n=3, ignore_eos=True
        )
        return generate(model, prompt, config=config).tolist()

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first
    assert len({tuple(row) for row in first}) == 6  # the n samples of a prompt differ from each other


# ------------------------------------------------------------------ beam search


def _decoder_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded prompts (real lengths 7, 4, 2) with pad id 0."""
    ids = _ids(3, 7, seed=12, alphabet=297) + 3
    mask = (torch.arange(7)[None] >= 7 - torch.tensor([7, 4, 2])[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def _encoder_sources() -> tuple[torch.Tensor, torch.Tensor]:
    """Three right-padded sources (real lengths 9, 6, 3)."""
    ids = _ids(3, 9, seed=13, alphabet=297) + 3
    mask = (torch.arange(9)[None] < torch.tensor([9, 6, 3])[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def _until_stop(row: list[int], stops: set[int]) -> list[int]:
    end = next((i for i, token in enumerate(row) if token in stops), len(row))
    return row[:end]


BEAM_CASES = [
    {"length_penalty": 1.0, "early_stopping": False, "n": 4},
    {"length_penalty": 2.0, "early_stopping": False, "n": 2},
    {"length_penalty": 0.0, "early_stopping": True, "n": 1},
    {"length_penalty": -1.0, "early_stopping": True, "n": 3},
    {"length_penalty": 1.5, "early_stopping": "never", "n": 4},
    {"length_penalty": 0.0, "early_stopping": "never", "n": 2},
]


@pytest.mark.parametrize("family", ["gpt2", "t5"])
@pytest.mark.parametrize("case", BEAM_CASES, ids=[str(c) for c in BEAM_CASES])
def test_beam_search_equals_transformers(
    family: str, case: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    hf_model, model = request.getfixturevalue(f"{family}_twins")
    ids, mask = _decoder_prompts() if family == "gpt2" else _encoder_sources()
    steps = 14
    settings = {"num_beams": 4, "max_new_tokens": steps, "length_penalty": case["length_penalty"]}
    settings["early_stopping"] = case["early_stopping"]

    def reference(eos: list[int]) -> Any:
        return hf_model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, num_return_sequences=case["n"], eos_token_id=eos,
            pad_token_id=0, return_dict_in_generate=True, output_scores=True, **settings,
        )  # fmt: skip

    # Stop ids the search meets half-way (read off a first search that has none), so hypotheses
    # finish at different lengths and the finished/running bookkeeping matters.
    start = 1 if family == "t5" else ids.shape[1]
    free = reference([299]).sequences[:, start:]
    stops = [int(free[0, 3]), int(free[-1, 6])]
    expected = reference(stops)
    config = GenerationConfig(eos_token_id=stops, n=case["n"], **settings)
    with torch.inference_mode():
        result = beam_search(DecodeSession(model, ids, mask, steps), config, stops)
    expected_rows = [_until_stop(row, set(stops)) for row in expected.sequences[:, start:].tolist()]
    assert result.sequences == expected_rows
    torch.testing.assert_close(torch.tensor(result.scores), expected.sequences_scores, rtol=1e-5, atol=1e-5)
    free_rows = [_until_stop(row, {299}) for row in free.tolist()]
    assert result.sequences != free_rows  # the stop ids changed the search
    if case["length_penalty"] <= 0:  # short hypotheses can win: some finished ones are returned
        assert "stop" in result.finish_reasons and len({len(row) for row in result.sequences}) > 1
    # The engine's entry point returns the same hypotheses.
    assert generate_detailed(model, ids, mask, config).sequences == expected_rows


def _markov_twins(table: torch.Tensor) -> tuple[torch.nn.Module, TransformerModel]:
    """One-layer Llama twins whose next-token logits are ``table[last token]`` (V, V): the blocks
    add nothing, the embeddings are one-hot and the head reads the table (eos 1, pad 0)."""
    vocab = table.shape[0]
    config = preset_config(
        "llama-tiny", head="causal_lm", vocab_size=vocab, hidden_size=vocab, num_layers=1, num_heads=1,
        num_kv_heads=1, intermediate_size=8, tie_embeddings=False, eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    hf_model, ours = hf_twin(config)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hf_model.model.embed_tokens.weight.copy_(torch.eye(vocab))
        hf_model.lm_head.weight.copy_(table.T / vocab**0.5)  # the final RMSNorm scales e_i by sqrt(V)
    spec = family("llama")
    ours.load_state_dict(
        import_weights(hf_model.state_dict(), spec.hf_weight_rules(config), ours.state_dict(), "hf"),
        strict=False,
    )
    return hf_model, ours


def test_beam_early_stopping_modes_equal_transformers_on_a_markov_chain() -> None:
    """A random first-order Markov chain where eos is likely enough that hypotheses finish early,
    so True, False and "never" stop at different times (checked on transformers first)."""
    table = torch.randn(12, 12, generator=torch.Generator().manual_seed(4)) * 2.0
    table[:, 0] = -30.0  # never the pad id
    hf_model, model = _markov_twins(table)
    ids = torch.tensor([[3, 4, 5], [0, 6, 7], [0, 0, 8]])
    mask = (ids != 0).long()
    results: dict[tuple[float, Any], list[list[int]]] = {}
    for length_penalty in (1.0, 2.0, 0.5):
        for early_stopping in (False, True, "never"):
            settings = {"num_beams": 3, "max_new_tokens": 10, "length_penalty": length_penalty}
            settings["early_stopping"] = early_stopping
            expected = hf_model.generate(
                input_ids=ids, attention_mask=mask, do_sample=False, eos_token_id=1, pad_token_id=0,
                num_return_sequences=3, return_dict_in_generate=True, output_scores=True, **settings,
            )  # fmt: skip
            config = GenerationConfig(eos_token_id=1, n=3, **settings)
            with torch.inference_mode():
                result = beam_search(DecodeSession(model, ids, mask, 10), config, [1])
            rows = [_until_stop(row, {1}) for row in expected.sequences[:, 3:].tolist()]
            assert result.sequences == rows, (length_penalty, early_stopping)
            torch.testing.assert_close(torch.tensor(result.scores), expected.sequences_scores)
            results[length_penalty, early_stopping] = rows
    assert results[1.0, False] != results[1.0, True] and results[1.0, False] != results[1.0, "never"]
    assert results[2.0, False] != results[2.0, True]


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_greedy_equals_transformers_on_tiny_twins(family: str, request: pytest.FixtureRequest) -> None:
    hf_model, model = request.getfixturevalue(f"{family}_twins")
    ids, mask = _decoder_prompts() if family == "gpt2" else _encoder_sources()
    start = 1 if family == "t5" else ids.shape[1]
    penalties = {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    for settings in ({}, penalties):
        expected = hf_model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=16, eos_token_id=2,
            pad_token_id=0, **settings,
        )[:, start:].tolist()  # fmt: skip
        config = GenerationConfig(max_new_tokens=16, eos_token_id=2, **settings)
        for row in range(ids.shape[0]):  # one prompt at a time: transformers penalises the pad id
            real = ids[row : row + 1, mask[row].bool()]
            alone = hf_model.generate(
                input_ids=real, do_sample=False, max_new_tokens=16, eos_token_id=2, **settings
            )
            assert generate_detailed(model, real, config=config).sequences[0] == _until_stop(
                alone[0, 1 if family == "t5" else real.shape[1] :].tolist(), {2}
            )
        if not settings:
            assert generate_detailed(model, ids, mask, config).sequences == [
                _until_stop(r, {2}) for r in expected
            ]


# ------------------------------------------------------------------ SmolLM2-135M

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away, there lived a",
    "北京是中国的首都，",
]


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, torch.nn.Module]:
    import lmforge
    from lmforge.assets import asset_path

    try:
        gguf_file = asset_path("smollm2-135m-instruct")
    except AssetMissingError as error:
        pytest.skip(f"smollm2-135m-instruct asset not installed: {error}")
    ours = lmforge.load(gguf_file)
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
    ).eval()
    return ours, reference


@pytest.mark.slow
def test_smollm2_greedy_equals_transformers_generate(smollm2: tuple[Any, torch.nn.Module]) -> None:
    ours, reference = smollm2
    tokenizer, eos = ours.tokenizer, ours.model.config.eos_token_id
    encoded = [tokenizer.encode(prompt) for prompt in PROMPTS]
    width = max(len(ids) for ids in encoded)
    ids = torch.tensor([[0] * (width - len(row)) + row for row in encoded])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in encoded])
    assert len({len(row) for row in encoded}) > 1  # the batch is padded
    settings = {"do_sample": False, "max_new_tokens": 32, "eos_token_id": eos, "pad_token_id": eos}
    config = GenerationConfig(max_new_tokens=32)
    with torch.inference_mode():
        batched = reference.generate(input_ids=ids, attention_mask=mask, **settings)[:, width:].tolist()
        assert generate_detailed(ours.model, ids, mask, config).sequences == [
            _until_stop(r, {eos}) for r in batched
        ]
        for row in encoded:
            alone = reference.generate(input_ids=torch.tensor([row]), **settings)[0, len(row) :].tolist()
            assert generate_detailed(ours.model, torch.tensor([row]), config=config).sequences[
                0
            ] == _until_stop(alone, {eos})
