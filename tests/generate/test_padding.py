"""Issue 15's padding defect: a padded batch decodes each row exactly as that prompt alone.

Llama (RoPE, GQA), GPT-2 (learned positions) and T5 (encoder-decoder), tiny and random, greedy in
fp32: a batch padded on the left, on the right, or not at all gives every row the tokens of the
same prompt generated alone, and the right-padded batch gives what transformers' ``generate``
gives. The weights are redrawn at a larger scale than the families' init (which makes a tiny random
model repeat one token forever, so that a wrong answer would look like a right one).
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
from parity_utils import hf_twin

from lmforge.generate import GenerationConfig, generate
from lmforge.models import TransformerModel, family, preset_config
from lmforge.models.io.convert import import_weights

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB = 300
PAD = 0
NEW_TOKENS = 10
PRESETS = ["llama-tiny", "gpt2-tiny", "t5-tiny"]
GREEDY = GenerationConfig(max_new_tokens=NEW_TOKENS, ignore_eos=True)


@cache
def _twins(preset: str) -> tuple[torch.nn.Module, TransformerModel]:
    """transformers and lmforge twins whose greedy continuations vary with the prompt.

    Decoders: every weight matrix redrawn from N(0, 0.2). T5: an untied LM head drawn from N(0, 1)
    (its tied head mostly echoes the decoder's input token).
    """
    seq2seq = preset.startswith("t5")
    overrides: dict[str, object] = (
        {"tie_embeddings": False} if seq2seq else {"bos_token_id": 1, "eos_token_id": 1}
    )
    config = preset_config(
        preset, head="seq2seq_lm" if seq2seq else "causal_lm", vocab_size=VOCAB, pad_token_id=PAD, **overrides
    )
    hf_model, ours = hf_twin(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if seq2seq:
            weight = torch.randn(VOCAB, config.hidden_size, generator=generator)
            hf_model.lm_head.weight = torch.nn.Parameter(weight)
        else:
            for parameter in hf_model.parameters():
                if parameter.dim() >= 2:
                    parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    spec = family(config.family)
    weights = import_weights(hf_model.state_dict(), spec.hf_weight_rules(config), ours.state_dict(), "hf")
    ours.load_state_dict(weights, strict=False)
    hf_model.generation_config.eos_token_id = None
    return hf_model, ours


def _prompts(lengths: list[int], seed: int = 3) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(PAD + 1, VOCAB, (length,), generator=generator) for length in lengths]


def _batch(prompts: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids padded with PAD on ``side`` ("left" / "right") and their attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        span = slice(width - len(prompt), width) if side == "left" else slice(0, len(prompt))
        ids[row, span], mask[row, span] = prompt, 1
    return ids, mask


def _alone(model: TransformerModel, prompt: torch.Tensor) -> list[int]:
    return generate(model, prompt[None], None, GREEDY)[0].tolist()


CASES = [(preset, side) for preset in PRESETS for side in ("left", "right", "none")]


@pytest.mark.parametrize(("preset", "side"), CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_each_row_equals_its_prompt_alone(preset: str, side: str) -> None:
    _, model = _twins(preset)
    prompts = _prompts([6, 6, 6] if side == "none" else [9, 3, 6])
    ids, mask = _batch(prompts, "left" if side == "none" else side)
    assert bool(mask.all()) == (side == "none")
    batched = generate(model, ids, None if side == "none" else mask, GREEDY)
    assert batched.shape == (len(prompts), NEW_TOKENS)
    alone = [_alone(model, prompt) for prompt in prompts]
    assert batched.tolist() == alone
    # The prompts lead somewhere different: a model that ignored its input would fail here.
    assert len({tuple(row) for row in alone}) == len(prompts)
    assert len({token for row in alone for token in row}) >= NEW_TOKENS


@pytest.mark.parametrize("preset", PRESETS)
def test_right_padded_batch_matches_transformers(preset: str) -> None:
    hf_model, model = _twins(preset)
    prompts = _prompts([9, 3, 6], seed=4)
    ids, mask = _batch(prompts, "right")
    ours = generate(model, ids, mask, GREEDY)
    # transformers' own correct set-up: decoders pad on the left, T5's encoder on the right.
    hf_ids, hf_mask = (ids, mask) if model.config.is_encoder_decoder else _batch(prompts, "left")
    with torch.no_grad():
        expected = hf_model.generate(
            input_ids=hf_ids,
            attention_mask=hf_mask,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            num_beams=1,
            pad_token_id=PAD,
            eos_token_id=None,
        )
    start = 1 if model.config.is_encoder_decoder else hf_ids.shape[1]  # T5 echoes its start token
    assert ours.tolist() == expected[:, start:].tolist()
