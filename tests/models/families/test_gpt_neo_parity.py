"""GPT-Neo against transformers: every head with prompts longer than the local window, cached
decoding, greedy generation, transformers directories both ways, and bad window settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from parity_utils import head_output, hf_twin, max_diff_on_real_tokens, padded_batch

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import ConfigError
from lmforge.generate import GenerationConfig, generate
from lmforge.models import KVCache, TransformerModel, family, preset_config

TOLERANCE = 1e-4
WINDOW = 5  # every prompt below is longer, so local layers really drop keys
HEADS = ["base", "causal_lm", "sequence_classification", "token_classification", "question_answering"]


def _config(head: str = "causal_lm", **overrides: object) -> ModelConfig:
    fields: dict = {
        "head": head,
        "vocab_size": 300,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "num_labels": 3,
        "max_positions": 64,
        "local_window": WINDOW,
        **overrides,
    }
    return preset_config("gpt-neo-tiny", **fields)


@pytest.mark.parametrize("head", HEADS)
def test_matches_transformers(head: str) -> None:
    config = _config(head)
    hf_model, ours = hf_twin(config)
    ids, mask = padded_batch(config.vocab_size, [20, 13, 6])
    with torch.no_grad():
        expected = head_output(hf_model(input_ids=ids, attention_mask=mask), head)
        actual = head_output(ours(ids, mask), head)
    assert actual.shape == expected.shape
    assert max_diff_on_real_tokens(expected, actual, mask) <= TOLERANCE
    assert expected.abs().mean() > 1e-3


def test_all_local_and_irregular_layer_kinds_match_transformers() -> None:
    config = _config(attention_layers=["local", "local", "global", "local"])
    hf_model, ours = hf_twin(config)
    assert family("gpt_neo").hf_config(config)["attention_types"] == [
        [["local", "local", "global", "local"], 1]
    ]
    ids, mask = padded_batch(config.vocab_size, [24, 17])
    with torch.no_grad():
        diff = max_diff_on_real_tokens(hf_model(input_ids=ids).logits, ours(ids).logits, None)
    assert diff <= TOLERANCE


def test_local_layers_see_only_the_window() -> None:
    """The same weights with a global-only pattern agree on the first WINDOW positions only."""
    _, local = hf_twin(_config())
    everywhere = TransformerModel(_config(attention_layers=["global"])).eval()
    everywhere.load_state_dict(local.state_dict())
    ids, _ = padded_batch(300, [16])
    with torch.no_grad():
        a, b = local(ids).logits, everywhere(ids).logits
    torch.testing.assert_close(a[:, :WINDOW], b[:, :WINDOW], rtol=0, atol=1e-6)
    assert float((a[:, WINDOW:] - b[:, WINDOW:]).abs().max()) > 1e-3


def test_cached_decoding_matches_the_full_forward() -> None:
    """Prefill 9 tokens, then one token at a time past the window: each step's logits are the
    full-sequence logits of transformers at that position."""
    hf_model, ours = hf_twin(_config())
    ids, _ = padded_batch(300, [21], seed=4)
    with torch.no_grad():
        expected = hf_model(input_ids=ids).logits
        cache = KVCache()
        steps = [ours(ids[:, :9], past_key_values=cache).logits]
        for t in range(9, ids.shape[1]):
            steps.append(ours(ids[:, t : t + 1], past_key_values=cache).logits)
    assert float((torch.cat(steps, dim=1) - expected).abs().max()) <= TOLERANCE


def test_greedy_generation_equals_transformers() -> None:
    """A left-padded batch whose prompts are longer than the window, 30 tokens each."""
    hf_model, ours = hf_twin(_config())
    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    ids = ids.masked_fill(mask == 0, 0)
    expected = hf_model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=30,
        min_new_tokens=30,
        pad_token_id=0,
    )[:, ids.shape[1] :]
    actual = generate(ours, ids, mask, GenerationConfig(max_new_tokens=30, ignore_eos=True))
    assert torch.equal(actual, expected)


def test_transformers_directories_both_ways(tmp_path: Path) -> None:
    """transformers save_pretrained -> lmforge.load, and lmforge.save_hf -> from_pretrained."""
    hf_model, _ = hf_twin(_config(), seed=5)
    hf_model.save_pretrained(tmp_path / "theirs")
    loaded = lmforge.load(tmp_path / "theirs")
    assert loaded.config.attention_layers == ["global", "local"] and loaded.config.local_window == WINDOW
    ids, mask = padded_batch(300, [18, 11])
    lmforge.save_hf(loaded.model, tmp_path / "ours")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        expected = hf_model(input_ids=ids, attention_mask=mask).logits
        for actual in (loaded.model(ids, mask).logits, again(input_ids=ids, attention_mask=mask).logits):
            assert max_diff_on_real_tokens(expected, actual, mask) <= TOLERANCE


def test_config_round_trip() -> None:
    spec = family("gpt_neo")
    for name in spec.presets:
        config = spec.preset(name)
        assert spec.config_from_hf(spec.hf_config(config), config.head) == config, name
    # Several attention_types items expand to one kind per layer.
    hf = {**spec.hf_config(spec.preset("gpt-neo-tiny")), "attention_types": [[["global"], 1], [["local"], 3]]}
    assert spec.config_from_hf(hf, None).attention_layers == ["global", "local", "local", "local"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"local_window": 0}, "'local_window' must be a positive integer, got 0"),
        ({"local_window": -3}, "'local_window' must be a positive integer"),
        ({"local_window": 2.5}, "'local_window' must be a positive integer"),
        ({"local_window": 65}, r"larger than the context \(max_positions 64\)"),
        ({"attention_layers": ["global", "local", "global"]}, "does not divide 4 layers"),
        ({"attention_layers": ["global", "sliding"]}, "sliding not global or local"),
        ({"local_window": None}, "local layers but 'local_window' is not set"),
        ({"causal": False}, "causal only"),
    ],
)
def test_bad_window_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(**overrides)
