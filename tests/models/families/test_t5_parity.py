"""T5 against transformers: seq2seq and base heads, the encoder alone, configs and export round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from parity_utils import hf_twin, max_diff_on_real_tokens, padded_batch

import lmforge
from lmforge.config import ModelConfig
from lmforge.models import TransformerModel, family, preset_config
from lmforge.models.io.convert import import_weights

VOCAB = 300
VARIANTS = {
    "relu-tied": {},
    "relu-untied": {"tie_embeddings": False},
    "gated-gelu-untied": {"activation": "gelu_tanh", "gated_mlp": True, "tie_embeddings": False},
    # Inner attention width (3 * 16) != hidden size (64) and a deeper decoder than encoder.
    "gated-gelu-tied-uneven": {
        "activation": "gelu_tanh",
        "gated_mlp": True,
        "num_heads": 3,
        "num_decoder_layers": 3,
        "relative_buckets": 8,
        "relative_max_distance": 16,
    },
}
CASES = [(name, head) for name in VARIANTS for head in ("seq2seq_lm", "base")]


def _config(variant: str, head: str = "seq2seq_lm") -> ModelConfig:
    return preset_config("t5-tiny", vocab_size=VOCAB, head=head, **VARIANTS[variant])


def _twin(config: ModelConfig) -> tuple[torch.nn.Module, TransformerModel]:
    """transformers + lmforge twins; an untied LM head gets its own random weight first.

    transformers 5 builds T5 with ``lm_head`` tied to ``shared`` whatever the config says (it
    unties only when a checkpoint holds both with different values), so an untied twin would
    otherwise not show whether ``lm_head.weight`` is mapped at all.
    """
    hf_model, ours = hf_twin(config)
    if config.head == "seq2seq_lm" and not config.tie_embeddings:
        torch.manual_seed(1)
        hf_model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.hidden_size))
        spec = family("t5")
        weights = import_weights(hf_model.state_dict(), spec.hf_weight_rules(config), ours.state_dict(), "hf")
        ours.load_state_dict(weights, strict=False)
        assert not torch.equal(ours.lm_head.decoder.weight, ours.embeddings.token.weight)
    return hf_model, ours


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded encoder ids (3, 12) and decoder ids (3, 7) starting with the start token 0."""
    ids, mask = padded_batch(VOCAB, [12, 9, 5])
    decoder_ids, decoder_mask = padded_batch(VOCAB, [7, 4, 6], seed=1)
    decoder_ids[:, 0] = 0
    return ids, mask, decoder_ids, decoder_mask


@pytest.mark.parametrize(("variant", "head"), CASES, ids=[f"{v}-{h}" for v, h in CASES])
def test_matches_transformers(variant: str, head: str) -> None:
    config = _config(variant, head)
    hf_model, ours = _twin(config)
    ids, mask, decoder_ids, decoder_mask = _batch()
    with torch.no_grad():
        expected = hf_model(
            input_ids=ids,
            attention_mask=mask,
            decoder_input_ids=decoder_ids,
            decoder_attention_mask=decoder_mask,
        )
        actual = ours(ids, mask, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask)
    key = "logits" if head == "seq2seq_lm" else "last_hidden_state"
    want, got = getattr(expected, key), getattr(actual, key)
    assert got.shape == want.shape
    assert max_diff_on_real_tokens(want, got, decoder_mask) <= 1e-4
    assert want.abs().mean() > 1e-3  # a vacuous comparison of zeros would pass too
    encoder_diff = max_diff_on_real_tokens(
        expected.encoder_last_hidden_state, actual.encoder_last_hidden_state, mask
    )
    assert encoder_diff <= 1e-4


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-tied-uneven"])
def test_encoder_matches_t5_encoder_model(variant: str) -> None:
    """Encoder output with no decoder ids (base head), and an encoder-only config, vs T5EncoderModel."""
    config = _config(variant, "base")
    hf_model, ours = _twin(config)
    hf_encoder = transformers.T5EncoderModel(hf_model.config).eval()
    hf_encoder.load_state_dict(hf_model.state_dict(), strict=False)
    encoder_config = config.replace(num_decoder_layers=None)
    spec = family("t5")
    encoder_only = TransformerModel(encoder_config).eval()
    weights = import_weights(
        hf_encoder.state_dict(), spec.hf_weight_rules(encoder_config), encoder_only.state_dict(), "hf"
    )
    assert not encoder_only.load_state_dict(weights, strict=False).missing_keys
    ids, mask, _, _ = _batch()
    with torch.no_grad():
        expected = hf_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        from_full = ours(ids, mask).last_hidden_state
        from_encoder_only = encoder_only(ids, mask).last_hidden_state
    assert max_diff_on_real_tokens(expected, from_full, mask) <= 1e-4
    assert max_diff_on_real_tokens(expected, from_encoder_only, mask) <= 1e-4
    assert expected.abs().mean() > 1e-3


def _perturbed(config: ModelConfig) -> TransformerModel:
    """An lmforge model whose weights no transformers model has seen."""
    _, ours = _twin(config)
    torch.manual_seed(2)
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return ours


@pytest.mark.parametrize("variant", ["relu-tied", "gated-gelu-untied", "gated-gelu-tied-uneven"])
def test_export_round_trip(tmp_path: Path, variant: str) -> None:
    """lmforge -> transformers dir -> AutoModelForSeq2SeqLM -> same logits -> lmforge.load -> same."""
    ours = _perturbed(_config(variant))
    lmforge.save_hf(ours, tmp_path)
    hf_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    ids, mask, decoder_ids, decoder_mask = _batch()
    inputs = {
        "attention_mask": mask,
        "decoder_input_ids": decoder_ids,
        "decoder_attention_mask": decoder_mask,
    }
    with torch.no_grad():
        expected = ours(ids, **inputs).logits
        exported = hf_model(input_ids=ids, **inputs).logits
        reloaded = lmforge.load(tmp_path)
        assert reloaded.config == ours.config
        round_trip = reloaded.model(ids, **inputs).logits
    assert max_diff_on_real_tokens(expected, exported, decoder_mask) <= 1e-4
    assert max_diff_on_real_tokens(expected, round_trip, decoder_mask) <= 1e-5
    assert expected.abs().mean() > 1e-3


def test_t5_encoder_model_checkpoint_loads_as_encoder_only(tmp_path: Path) -> None:
    config = _config("gated-gelu-untied", "base")
    hf_config = transformers.AutoConfig.for_model(**family("t5").hf_config(config))
    torch.manual_seed(0)
    hf_encoder = transformers.T5EncoderModel(hf_config).eval()
    hf_encoder.save_pretrained(tmp_path)
    loaded = lmforge.load(tmp_path)
    assert loaded.config.head == "base" and not loaded.config.is_encoder_decoder
    ids, mask, _, _ = _batch()
    with torch.no_grad():
        expected = hf_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        actual = loaded.model(ids, mask).last_hidden_state
    assert max_diff_on_real_tokens(expected, actual, mask) <= 1e-4
    # And back: an encoder-only model exports as T5EncoderModel.
    lmforge.save_hf(loaded.model, tmp_path / "export")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "export").architectures == ["T5EncoderModel"]


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-small", "t5-base", "t5-v1_1-small"])
def test_config_round_trip(preset: str) -> None:
    spec = family("t5")
    config = preset_config(preset)
    hf = spec.hf_config(config)
    assert spec.config_from_hf(hf, None) == config
    # transformers accepts it and agrees on the shape.
    hf_config = transformers.AutoConfig.for_model(**hf)
    assert (hf_config.d_model, hf_config.d_kv, hf_config.num_decoder_layers) == (
        config.hidden_size,
        config.head_dim,
        config.num_decoder_layers,
    )
    assert hf_config.scale_decoder_outputs == config.tie_embeddings


def test_t5_small_preset_matches_known_shape() -> None:
    config = preset_config("t5-small")
    with torch.device("meta"):
        model = TransformerModel(config)
    assert model.num_parameters() == 60_506_624  # google-t5/t5-small


def test_config_written_by_transformers_5_keeps_v1_1_untied() -> None:
    """transformers 5 writes tie_word_embeddings=true for T5 v1.1; scale_decoder_outputs tells the truth."""
    hf_config = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        decoder_start_token_id=0,
    )
    raw = {**hf_config.to_dict(), "architectures": ["T5ForConditionalGeneration"]}
    assert raw["tie_word_embeddings"] is True
    config = family("t5").config_from_hf(raw, None)
    assert not config.tie_embeddings
    assert (config.activation, config.gated_mlp, config.head) == ("gelu_tanh", True, "seq2seq_lm")
