"""Dropout follows the reference architectures: imported configs carry transformers' rates, and in
training mode, with the same torch seed, lmforge and transformers draw the same dropout masks at
the same sites in the same order, so their logits agree (a missing, extra or reordered site, or a
wrong rate, would give other masks and other logits)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import transformers
from parity_utils import max_diff_on_real_tokens, padded_batch

from lmforge.models import TransformerModel, family
from lmforge.models.io.convert import import_weights

TINY: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "llama": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "bert": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
    "t5": {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4},
}
# Distinct rates per site, so that a rate read from the wrong field changes the masks.
RATES: dict[str, dict[str, Any]] = {
    "gpt2": {"resid_pdrop": 0.2, "attn_pdrop": 0.1, "embd_pdrop": 0.3, "classifier_dropout": 0.4},
    "llama": {"attention_dropout": 0.2, "classifier_dropout": 0.3},
    "bert": {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1, "classifier_dropout": 0.3},
    "roberta": {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1, "classifier_dropout": 0.3},
    "albert": {
        "hidden_dropout_prob": 0.2,
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout_prob": 0.3,
        "embedding_size": 32,
    },
    "t5": {"dropout_rate": 0.2},
}
CASES = [
    ("gpt2", "causal_lm"),
    ("gpt2", "sequence_classification"),
    ("gpt2", "token_classification"),
    ("gpt2", "question_answering"),
    ("llama", "causal_lm"),
    ("llama", "token_classification"),
    ("bert", "masked_lm"),
    ("bert", "pretraining"),
    ("bert", "sequence_classification"),
    ("bert", "token_classification"),
    ("bert", "question_answering"),
    ("roberta", "masked_lm"),
    ("roberta", "sequence_classification"),
    ("albert", "pretraining"),
    ("albert", "sequence_classification"),
    ("t5", "seq2seq_lm"),
]
VOCAB = 120


def _hf_config(name: str, num_labels: int = 3) -> transformers.PretrainedConfig:
    shape = TINY["bert" if name in ("roberta", "albert") else name]
    fields = {**shape, **RATES[name], "vocab_size": VOCAB, "pad_token_id": 0, "num_labels": num_labels}
    if name == "roberta":
        fields.update(pad_token_id=1, max_position_embeddings=64)
    return transformers.AutoConfig.for_model(name, **fields)


def _imported_twin(name: str, head: str) -> tuple[torch.nn.Module, TransformerModel]:
    """A random transformers model and the lmforge model built from its config.json and weights."""
    spec = family(name)
    torch.manual_seed(0)
    # transformers sizes the QA and sentence-order layers by num_labels; lmforge's have 2 outputs.
    hf_config = _hf_config(name, 2 if head in ("question_answering", "pretraining") else 3)
    hf_model = getattr(transformers, spec.hf_architectures[head])(hf_config)
    ours = TransformerModel(spec.config_from_hf(hf_config.to_dict(), head))  # type: ignore[arg-type]
    weights = import_weights(
        hf_model.state_dict(), spec.hf_weight_rules(ours.config), ours.state_dict(), "hf"
    )
    missing, _ = ours.load_state_dict(weights, strict=False)
    assert set(missing) <= {"lm_head.decoder.weight"}, missing
    ours.tie_weights()
    return hf_model, ours


def _outputs(model: torch.nn.Module, head: str, batch: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    out = model(**batch)
    if head == "question_answering":
        return torch.stack([out.start_logits, out.end_logits], dim=-1)
    if head == "pretraining":
        logits = out.logits if hasattr(out, "logits") and out.logits is not None else out.prediction_logits
        relation = getattr(out, "seq_relationship_logits", None)
        if relation is None:
            relation = out.sop_logits
        return torch.cat([logits.flatten(), relation.flatten()])
    return out.logits


@pytest.mark.parametrize(("name", "head"), CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_train_mode_logits_match_transformers(name: str, head: str) -> None:
    hf_model, ours = _imported_twin(name, head)
    pad = 1 if name == "roberta" else 0
    ids, mask = padded_batch(VOCAB, [12, 9, 5], pad_id=pad)
    batch = {"input_ids": ids, "attention_mask": mask}
    if name == "t5":
        batch["decoder_input_ids"] = padded_batch(VOCAB, [7, 7, 7], seed=1)[0]
    hf_model.train()
    ours.train()
    with torch.no_grad():
        expected = _outputs(hf_model, head, batch, seed=7)
        actual = _outputs(ours, head, batch, seed=7)
        resampled = _outputs(ours, head, batch, seed=8)
    real = None if head == "pretraining" or name == "t5" else mask
    assert actual.shape == expected.shape
    assert max_diff_on_real_tokens(expected, actual, real) <= 1e-4
    assert max_diff_on_real_tokens(resampled, actual, real) > 1e-3  # dropout is on: other seed, other logits


def test_imported_configs_carry_the_reference_rates() -> None:
    gpt2 = family("gpt2").config_from_hf(_hf_config("gpt2").to_dict(), "causal_lm")
    assert (gpt2.dropout, gpt2.attention_dropout_rate, gpt2.embedding_dropout_rate) == (0.2, 0.1, 0.3)
    assert not gpt2.final_norm_dropout  # GPT2Model: ln_f then the head, no dropout between
    for head, rate in (("token_classification", 0.4), ("sequence_classification", 0.0)):
        assert (
            family("gpt2").config_from_hf(_hf_config("gpt2").to_dict(), head).classifier_dropout_rate == rate
        )

    llama = family("llama").config_from_hf(_hf_config("llama").to_dict(), "causal_lm")
    assert (llama.dropout, llama.attention_dropout_rate, llama.embedding_dropout_rate) == (0.0, 0.2, 0.0)

    bert = family("bert").config_from_hf(_hf_config("bert").to_dict(), "sequence_classification")
    assert (bert.dropout, bert.attention_dropout_rate, bert.embedding_dropout_rate) == (0.2, 0.1, 0.2)
    assert bert.classifier_dropout_rate == 0.3 and bert.mlp_output_dropout and not bert.pooler_dropout
    assert (
        family("bert").config_from_hf(_hf_config("bert").to_dict(), "pretraining").classifier_dropout_rate
        == 0
    )
    roberta = family("roberta").config_from_hf(_hf_config("roberta").to_dict(), "sequence_classification")
    assert roberta.pooler_dropout and roberta.classifier_dropout_rate == 0.3
    albert = family("albert").config_from_hf(_hf_config("albert").to_dict(), "pretraining")
    assert not albert.mlp_output_dropout and albert.classifier_dropout_rate == 0.3

    t5 = family("t5").config_from_hf(_hf_config("t5").to_dict(), "seq2seq_lm")
    assert t5.dropout == 0.2 and t5.final_norm_dropout and t5.mlp_dropout


@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "albert", "t5"])
def test_exported_configs_carry_the_rates_back(name: str) -> None:
    head = {"t5": "seq2seq_lm", "gpt2": "token_classification", "llama": "token_classification"}.get(
        name, "sequence_classification"
    )
    spec = family(name)
    config = spec.config_from_hf(_hf_config(name).to_dict(), head)
    exported = spec.hf_config(config)
    for key, rate in RATES[name].items():
        if key != "embedding_size":
            assert exported[key] == rate, key
    assert spec.config_from_hf(exported, head) == config
