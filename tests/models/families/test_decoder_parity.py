"""GPT-2 and Llama against transformers: every head, padded batches, weights through our converter."""

from __future__ import annotations

import pytest
import torch
from parity_utils import head_output, hf_twin, max_diff_on_real_tokens, padded_batch

from lmforge.models import preset_config

HEADS = ["base", "causal_lm", "sequence_classification", "token_classification", "question_answering"]
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}
VARIANTS = {
    "gpt2": [("gpt2-tiny", {})],
    "llama": [
        ("llama-tiny", {}),  # GQA, tied
        ("llama-tiny", {"num_kv_heads": 1, "tie_embeddings": False}),  # MQA, untied
        ("llama-tiny", {"num_kv_heads": 4, "attention_bias": True, "rope_scaling": LLAMA3_ROPE}),
    ],
}
CASES = [
    (preset, head, overrides)
    for family in VARIANTS
    for preset, overrides in VARIANTS[family]
    for head in HEADS
]


@pytest.mark.parametrize(
    ("preset", "head", "overrides"), CASES, ids=[f"{p}-{h}-{i}" for i, (p, h, _) in enumerate(CASES)]
)
def test_matches_transformers(preset: str, head: str, overrides: dict) -> None:
    config = preset_config(preset, head=head, vocab_size=300, pad_token_id=0, num_labels=3, **overrides)
    hf_model, ours = hf_twin(config)
    ids, mask = padded_batch(config.vocab_size, [12, 9, 5])
    with torch.no_grad():
        expected = head_output(hf_model(input_ids=ids, attention_mask=mask), head)
        actual = head_output(ours(ids, mask), head)
    assert actual.shape == expected.shape
    assert max_diff_on_real_tokens(expected, actual, mask) <= 1e-4
    assert expected.abs().mean() > 1e-3  # a vacuous comparison of zeros would pass too
