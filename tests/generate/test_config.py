"""GenerationConfig validation: every bad field value is a ConfigError naming the field, before any
decoding; check_generation refuses what the model cannot do; from_dict refuses unknown keys."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig, check_generation, generate, generate_detailed
from lmforge.models import TransformerModel, preset_config

# (field named in the message, the bad fields). Each row is one mistake on otherwise valid values.
BAD: list[tuple[str, dict[str, Any]]] = [
    ("max_new_tokens", {"max_new_tokens": -3}),
    ("max_new_tokens", {"max_new_tokens": 2.5}),
    ("max_new_tokens", {"max_new_tokens": "8"}),
    ("min_new_tokens", {"min_new_tokens": -1}),
    ("min_new_tokens", {"min_new_tokens": 9, "max_new_tokens": 8}),
    ("temperature", {"temperature": -0.5}),
    ("temperature", {"temperature": math.nan}),
    ("temperature", {"temperature": math.inf}),
    ("temperature", {"temperature": "hot"}),
    ("top_k", {"temperature": 1.0, "top_k": 0}),
    ("top_k", {"temperature": 1.0, "top_k": -5}),
    ("top_k", {"temperature": 1.0, "top_k": 2.0}),
    ("top_k", {"temperature": 1.0, "top_k": True}),
    ("top_p", {"temperature": 1.0, "top_p": 0.0}),
    ("top_p", {"temperature": 1.0, "top_p": -0.1}),
    ("top_p", {"temperature": 1.0, "top_p": 1.01}),
    ("top_p", {"temperature": 1.0, "top_p": math.nan}),
    ("top_p", {"temperature": 1.0, "top_p": "0.9"}),
    ("min_p", {"temperature": 1.0, "min_p": -0.01}),
    ("min_p", {"temperature": 1.0, "min_p": 1.5}),
    ("min_p", {"temperature": 1.0, "min_p": "0.1"}),
    ("typical_p", {"temperature": 1.0, "typical_p": 0.0}),
    ("typical_p", {"temperature": 1.0, "typical_p": 2.0}),
    ("repetition_penalty", {"repetition_penalty": 0.0}),
    ("repetition_penalty", {"repetition_penalty": -1.2}),
    ("repetition_penalty", {"repetition_penalty": "1.2"}),
    ("repetition_penalty", {"repetition_penalty": math.nan}),
    ("frequency_penalty", {"frequency_penalty": 2.5}),
    ("frequency_penalty", {"frequency_penalty": -3.0}),
    ("frequency_penalty", {"frequency_penalty": None}),
    ("presence_penalty", {"presence_penalty": -2.01}),
    ("presence_penalty", {"presence_penalty": "0.5"}),
    ("no_repeat_ngram_size", {"no_repeat_ngram_size": -1}),
    ("no_repeat_ngram_size", {"no_repeat_ngram_size": 1.5}),
    ("num_beams", {"num_beams": 0}),
    ("num_beams", {"num_beams": 2.0}),
    ("length_penalty", {"num_beams": 2, "length_penalty": math.inf}),
    ("length_penalty", {"num_beams": 2, "length_penalty": "long"}),
    ("early_stopping", {"num_beams": 2, "early_stopping": "always"}),
    ("early_stopping", {"num_beams": 2, "early_stopping": 1}),
    ("num_beams", {"num_beams": 4, "temperature": 0.7}),  # beam sampling is refused
    ("n", {"n": 0, "temperature": 1.0}),
    ("n", {"n": -2, "temperature": 1.0}),
    ("n", {"n": 1.0, "temperature": 1.0}),
    ("n", {"n": 5, "num_beams": 4}),  # more sequences than beams
    ("n", {"n": 3}),  # greedy samples would all be identical
    ("eos_token_id", {"eos_token_id": -1}),
    ("eos_token_id", {"eos_token_id": 1.0}),
    ("eos_token_id", {"eos_token_id": "2"}),
    ("eos_token_id", {"eos_token_id": True}),
    ("eos_token_id", {"eos_token_id": [2, "3"]}),
    ("eos_token_id", {"eos_token_id": [2, -3]}),
    ("eos_token_id", {"eos_token_id": []}),
    ("stop_token_ids", {"stop_token_ids": 5}),
    ("stop_token_ids", {"stop_token_ids": [5, 6.0]}),
    ("stop_token_ids", {"stop_token_ids": [-1]}),
    ("stop_token_ids", {"stop_token_ids": None}),
    ("stop", {"stop": ""}),
    ("stop", {"stop": ["END", ""]}),
    ("stop", {"stop": [3]}),
    ("stop", {"stop": 3}),
    ("seed", {"seed": -1}),
    ("seed", {"seed": "42"}),
    ("logprobs", {"logprobs": "yes"}),
    ("ignore_eos", {"ignore_eos": 1}),
    ("top_logprobs", {"logprobs": True, "top_logprobs": -1}),
    ("top_logprobs", {"logprobs": True, "top_logprobs": 21}),
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": -1}),
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": 2.0}),
    ("prompt_lookup_max_ngram", {"prompt_lookup_max_ngram": 0}),
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": 4, "temperature": 0.8}),  # greedy only
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": 4, "num_beams": 2}),
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": 4, "repetition_penalty": 1.3}),
    ("prompt_lookup_num_tokens", {"prompt_lookup_num_tokens": 4, "min_new_tokens": 2}),
    ("constraint", {"constraint": "a+"}),  # a spec with start(), e.g. generate.constrain.Grammar
]


@pytest.mark.parametrize(("name", "values"), BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_bad_value_is_a_config_error_naming_the_field(name: str, values: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=name):
        GenerationConfig(**values)


@pytest.mark.parametrize(("name", "values"), BAD[:12], ids=[n for n, _ in BAD[:12]])
def test_validate_catches_a_field_changed_after_construction(name: str, values: dict[str, Any]) -> None:
    config = GenerationConfig(temperature=1.0)
    for key, value in values.items():
        setattr(config, key, value)
    with pytest.raises(ConfigError, match=name):
        config.validate()


def test_every_field_has_a_bad_value_row() -> None:
    """A field added later without a row here is a field nobody checked."""
    assert {f.name for f in fields(GenerationConfig)} == {name for name, _ in BAD}


GOOD: list[dict[str, Any]] = [
    {},
    {"max_new_tokens": 0},  # no new token: serve's echo with max_tokens 0
    {"max_new_tokens": 1},
    {"min_new_tokens": 8, "max_new_tokens": 8},
    {"temperature": 0.7, "top_k": 1, "top_p": 1.0, "min_p": 0.0, "typical_p": 0.5},
    {"temperature": 1.0, "min_p": 1.0, "n": 4, "seed": 0},
    {
        "repetition_penalty": 0.5,
        "frequency_penalty": -2.0,
        "presence_penalty": 2.0,
        "no_repeat_ngram_size": 1,
    },
    {"num_beams": 4, "n": 4, "length_penalty": -1.0, "early_stopping": True},
    {"num_beams": 2, "early_stopping": "never"},
    {"eos_token_id": 0},
    {"eos_token_id": [2, 7, 9], "stop_token_ids": [11, 12]},
    {"eos_token_id": (2, 7)},
    {"stop": "END"},
    {"stop": ["\n\n", "###"], "stop_token_ids": []},
    {"logprobs": True, "top_logprobs": 20},
    {"prompt_lookup_num_tokens": 8, "prompt_lookup_max_ngram": 1},
]


@pytest.mark.parametrize("values", GOOD, ids=[str(i) for i in range(len(GOOD))])
def test_good_values_are_accepted(values: dict[str, Any]) -> None:
    GenerationConfig(**values).validate()


def test_several_stop_ids_are_all_kept() -> None:
    config = GenerationConfig(eos_token_id=[2, 7], stop_token_ids=[9, 2])
    assert config.stop_ids(preset_config("gpt2-tiny", vocab_size=50, eos_token_id=1)) == [2, 7, 9]
    default = GenerationConfig(stop_token_ids=[9])
    assert default.stop_ids(preset_config("gpt2-tiny", vocab_size=50, eos_token_id=1)) == [1, 9]
    ignored = GenerationConfig(ignore_eos=True, eos_token_id=[2], stop_token_ids=[9])
    assert ignored.stop_ids(preset_config("gpt2-tiny", vocab_size=50, eos_token_id=1)) == [9]
    assert GenerationConfig(stop="END").stop == ["END"]
    assert GenerationConfig(stop=None).stop == []  # type: ignore[arg-type]


def _favourite_token_model(vocab: int, favourites: list[int]) -> TransformerModel:
    """A tiny GPT-2 whose next token is always one of ``favourites`` (in that order of preference)."""
    model = TransformerModel(preset_config("gpt2-tiny", vocab_size=vocab, head="causal_lm", max_positions=64))
    with torch.no_grad():
        model.lm_head.decoder.bias = torch.nn.Parameter(torch.zeros(vocab))
        for rank, token in enumerate(favourites):
            model.lm_head.decoder.bias[token] = 100.0 - rank
    return model.eval()


def test_each_of_several_eos_ids_ends_generation() -> None:
    """Rows stop on whichever listed eos id they produce; the ids are honoured, not only the first."""
    model = _favourite_token_model(40, [7, 9])
    prompt = torch.tensor([[3, 4, 5]])
    endless = generate(model, prompt, config=GenerationConfig(max_new_tokens=5, ignore_eos=True))
    assert endless[0].tolist() == [7] * 5
    for config in (
        GenerationConfig(max_new_tokens=5, eos_token_id=[2, 7]),
        GenerationConfig(max_new_tokens=5, eos_token_id=2, stop_token_ids=[9, 7]),
    ):
        ended = generate_detailed(model, prompt, config=config)
        assert (ended.sequences, ended.finish_reasons) == ([[]], ["stop"])
    # Before min_new_tokens every stop id is forbidden, not only the first.
    forbidden = GenerationConfig(max_new_tokens=3, min_new_tokens=3, eos_token_id=[7], stop_token_ids=[9])
    tokens = generate(model, prompt, config=forbidden)[0].tolist()
    assert len(tokens) == 3 and not {7, 9} & set(tokens)


@pytest.fixture
def gpt2_config() -> Any:
    return preset_config("gpt2-tiny", vocab_size=100, head="causal_lm", max_positions=64)


def test_prompt_plus_new_tokens_over_max_positions_is_refused(gpt2_config: Any) -> None:
    check_generation(GenerationConfig(max_new_tokens=54), gpt2_config, prompt_length=10)  # exactly 64
    expected = r"prompt \(10 tokens\) \+ max_new_tokens \(55\).*max_positions \(64\)"
    with pytest.raises(ConfigError, match=expected):
        check_generation(GenerationConfig(max_new_tokens=55), gpt2_config, prompt_length=10)
    with pytest.raises(ConfigError, match="prompt_lookup_num_tokens"):
        check_generation(
            GenerationConfig(max_new_tokens=50, prompt_lookup_num_tokens=8), gpt2_config, prompt_length=10
        )


def test_generate_checks_before_decoding(gpt2_config: Any) -> None:
    model = TransformerModel(gpt2_config).eval()
    prompt = torch.randint(0, 100, (2, 20))
    with pytest.raises(ConfigError, match="max_positions"):
        generate(model, prompt, config=GenerationConfig(max_new_tokens=45))
    # Padding does not count: the longest real prompt is 10 tokens.
    mask = torch.ones_like(prompt)
    mask[:, :10] = 0
    longest = GenerationConfig(max_new_tokens=54, ignore_eos=True)
    assert generate(model, prompt, mask, longest).shape == (2, 54)
    assert generate(model, prompt, config=GenerationConfig(max_new_tokens=0)).shape == (2, 0)
    config = GenerationConfig()
    config.top_k = 0  # changed after construction: generate validates again
    with pytest.raises(ConfigError, match="top_k"):
        generate(model, prompt, config=config)


def test_stop_ids_outside_the_vocabulary_are_refused(gpt2_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"stop_token_ids \[100\].*vocab_size 100"):
        check_generation(GenerationConfig(stop_token_ids=[5, 100]), gpt2_config, prompt_length=3)
    with pytest.raises(ConfigError, match=r"eos_token_id \[250\]"):
        check_generation(GenerationConfig(eos_token_id=[250]), gpt2_config, prompt_length=3)


@pytest.mark.parametrize("head", ["base", "sequence_classification", "token_classification"])
def test_models_without_an_lm_head_are_refused(head: str) -> None:
    config = preset_config("gpt2-tiny", vocab_size=100, head=head, num_labels=3)
    with pytest.raises(ConfigError, match=f"LM head.*{head}"):
        check_generation(GenerationConfig(), config, prompt_length=3)
    model = TransformerModel(config).eval()
    with pytest.raises(ConfigError, match="LM head"):
        generate(model, torch.tensor([[1, 2, 3]]))


def test_encoder_decoder_models_are_not_bounded_by_positions() -> None:
    """T5's relative positions have no maximum: a long source is not refused."""
    config = preset_config("t5-tiny", vocab_size=100, head="seq2seq_lm")
    check_generation(GenerationConfig(max_new_tokens=500), config, prompt_length=4000)


def test_from_dict_builds_and_refuses_unknown_keys() -> None:
    config = GenerationConfig.from_dict(
        {"max_new_tokens": 5, "temperature": 0.5, "stop": "x", "eos_token_id": [1]}
    )
    assert (config.max_new_tokens, config.temperature, config.stop, config.eos_ids()) == (5, 0.5, ["x"], [1])
    with pytest.raises(ConfigError, match=r"\['max_tokens', 'topk'\]"):
        GenerationConfig.from_dict({"max_tokens": 5, "topk": 3, "temperature": 0.5})
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig.from_dict({"temperature": 1.0, "top_p": 0})
