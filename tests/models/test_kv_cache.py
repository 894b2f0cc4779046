"""Incremental decoding with a KV cache gives the logits of a full recompute, step by step."""

from __future__ import annotations

import pytest
import torch
from parity_utils import padded_batch

from lmforge.config import ModelConfig
from lmforge.models import KVCache, TransformerModel, preset_config

VOCAB = 300
TOLERANCE = 1e-5
DECODERS = ["gpt2-tiny", "llama-tiny"]  # llama-tiny: GQA (4 query heads, 2 KV heads)


def _model(config: ModelConfig, seed: int = 0) -> TransformerModel:
    torch.manual_seed(seed)
    return TransformerModel(config).eval()


def _left_padded(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask (B, T), and position ids counting real tokens from 0."""
    ids, mask = padded_batch(VOCAB, lengths, seed=seed)
    ids, mask = ids.flip(1), mask.flip(1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _assert_close_on(expected: torch.Tensor, actual: torch.Tensor, real: torch.Tensor | None) -> None:
    """Compare (B, T, V) logits at real positions; ``real`` is (B, T) or None for all."""
    diff = (expected - actual).abs()
    if real is not None:
        diff = diff[real.bool()]
    assert float(diff.max()) <= TOLERANCE
    assert expected.abs().mean() > 1e-3  # a vacuous comparison of zeros would pass too


def _decode_in_steps(
    model: TransformerModel,
    ids: torch.Tensor,
    prefill: int,
    mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    **encoder: torch.Tensor,
) -> torch.Tensor:
    """Prefill ``prefill`` tokens, then feed the rest one at a time; logits of every step (B, T, V).

    For encoder-decoder models ``ids`` are decoder ids and ``encoder`` holds the encoder output
    and mask; the mask passed each step covers past and new tokens.
    """

    def step(start: int, end: int, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        step_mask = mask[:, :end] if mask is not None else None
        if encoder:
            out = model(
                encoder["input_ids"],
                encoder["attention_mask"],
                decoder_input_ids=ids[:, start:end],
                decoder_attention_mask=step_mask,
                encoder_hidden_states=encoder["encoder_hidden_states"],
                past_key_values=cache,
                use_cache=True,
            )
        else:
            step_positions = positions[:, start:end] if positions is not None else None
            out = model(
                ids[:, start:end],
                step_mask,
                position_ids=step_positions,
                past_key_values=cache,
                use_cache=True,
            )
        assert out.logits is not None and out.past_key_values is not None
        return out.logits, out.past_key_values

    logits, cache = step(0, prefill, None)
    steps = [logits]
    for t in range(prefill, ids.shape[1]):
        logits, cache = step(t, t + 1, cache)
        assert cache.length == t + 1
        steps.append(logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("preset", DECODERS)
@pytest.mark.parametrize("prefill", [1, 4])
def test_decoder_cache_matches_full_recompute(preset: str, prefill: int) -> None:
    model = _model(preset_config(preset, head="causal_lm", vocab_size=VOCAB))
    ids = torch.randint(1, VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        incremental = _decode_in_steps(model, ids, prefill)
    _assert_close_on(full, incremental, None)


@pytest.mark.parametrize("preset", DECODERS)
def test_decoder_cache_with_left_padding(preset: str) -> None:
    """A left-padded batch decodes like its full recompute, and each row like the row alone."""
    model = _model(preset_config(preset, head="causal_lm", vocab_size=VOCAB, pad_token_id=0))
    ids, mask, positions = _left_padded([10, 7, 3])
    with torch.no_grad():
        full = model(ids, mask, position_ids=positions).logits
        incremental = _decode_in_steps(model, ids, 5, mask, positions)
        _assert_close_on(full, incremental, mask)
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            alone = model(ids[row : row + 1, real]).logits[0]
            _assert_close_on(alone, incremental[row, real], None)


@pytest.fixture(scope="module")
def t5() -> TransformerModel:
    return _model(preset_config("t5-tiny", vocab_size=VOCAB, activation="gelu_tanh", gated_mlp=True))


@pytest.mark.parametrize("left_pad_decoder", [False, True])
def test_t5_decoder_cache_matches_full_recompute(t5: TransformerModel, left_pad_decoder: bool) -> None:
    encoder_ids, encoder_mask = padded_batch(VOCAB, [9, 6, 4], seed=1)
    if left_pad_decoder:
        decoder_ids, decoder_mask, _ = _left_padded([8, 5, 2], seed=2)
    else:
        decoder_ids, decoder_mask = torch.randint(1, VOCAB, (3, 8)), None
    with torch.no_grad():
        full = t5(
            encoder_ids, encoder_mask, decoder_input_ids=decoder_ids, decoder_attention_mask=decoder_mask
        )
        encoder = {
            "input_ids": encoder_ids,
            "attention_mask": encoder_mask,
            "encoder_hidden_states": full.encoder_last_hidden_state,
        }
        incremental = _decode_in_steps(t5, decoder_ids, 3, decoder_mask, **encoder)
    _assert_close_on(full.logits, incremental, decoder_mask)


def test_reorder_selects_batch_rows() -> None:
    cache = KVCache()
    for layer in range(2):
        key = torch.arange(3.0)[:, None, None, None].expand(3, 2, 4, 8) + layer
        cache.update(layer, key, -key)
        cache.cross_kv[layer] = (key[:, :, :2] * 10, key[:, :, :2] * 100)
    cache.reorder(torch.tensor([2, 0, 0]))
    for layer in range(2):
        key, value = cache.self_kv[layer]
        assert key.shape == (3, 2, 4, 8)
        assert key[:, 0, 0, 0].tolist() == [2.0 + layer, layer, layer]
        assert torch.equal(value, -key)
        cross_key, cross_value = cache.cross_kv[layer]
        assert cross_key[:, 0, 0, 0].tolist() == [10.0 * (2 + layer), 10.0 * layer, 10.0 * layer]
        assert torch.equal(cross_value, cross_key * 10)
    assert cache.length == 4


@pytest.mark.parametrize("preset", ["gpt2-tiny", "t5-tiny"])
def test_reordered_cache_continues_the_selected_rows(preset: str) -> None:
    """Beam search: after reorder, a step equals decoding the selected rows from scratch."""
    is_t5 = preset == "t5-tiny"
    model = _model(preset_config(preset, vocab_size=VOCAB, **({} if is_t5 else {"head": "causal_lm"})))
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (3, 6), generator=generator)
    index = torch.tensor([2, 0, 0])
    encoder_ids = torch.randint(1, VOCAB, (3, 5), generator=generator)

    def run(rows: torch.Tensor, tokens: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        if is_t5:
            out = model(encoder_ids[rows], decoder_input_ids=tokens, past_key_values=cache, use_cache=True)
        else:
            out = model(tokens, past_key_values=cache, use_cache=True)
        assert out.logits is not None and out.past_key_values is not None
        return out.logits, out.past_key_values

    with torch.no_grad():
        _, cache = run(torch.arange(3), ids[:, :5], None)
        cache.reorder(index)
        reordered, _ = run(index, ids[index, 5:], cache)
        expected = model(encoder_ids[index], decoder_input_ids=ids[index]) if is_t5 else model(ids[index])
    assert expected.logits is not None
    _assert_close_on(expected.logits[:, 5:], reordered, None)
