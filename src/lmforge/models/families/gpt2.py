"""GPT-2: learned positions, pre-norm LayerNorm, GELU (tanh) MLP, tied embeddings, Conv1D weights."""

from __future__ import annotations

from typing import Any

from lmforge.config import Head, ModelConfig
from lmforge.models.families.spec import FamilySpec, decoder_fields, generic_head_rules
from lmforge.models.io.convert import Rule, rule, transpose, weight_bias

_BASE: dict[str, Any] = {
    "family": "gpt2",
    "vocab_size": 50257,
    "max_positions": 1024,
    "norm": "layernorm",
    "norm_eps": 1e-5,
    "activation": "gelu_tanh",
    "positions": "learned",
    "tie_embeddings": True,
    "pooling": "last",
    "classifier_bias": False,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
}

PRESETS: dict[str, dict[str, Any]] = {
    "gpt2-tiny": {**_BASE, "hidden_size": 128, "num_layers": 4, "num_heads": 4, "intermediate_size": 512},
    "gpt2-124m": {**_BASE, "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    "gpt2-355m": {**_BASE, "hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
    "gpt2-774m": {**_BASE, "hidden_size": 1280, "num_layers": 36, "num_heads": 20, "intermediate_size": 5120},
}

ARCHITECTURES = {
    "base": "GPT2Model",
    "causal_lm": "GPT2LMHeadModel",
    "sequence_classification": "GPT2ForSequenceClassification",
    "token_classification": "GPT2ForTokenClassification",
    "question_answering": "GPT2ForQuestionAnswering",
}

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    hidden = hf["n_embd"]
    resid = hf.get("resid_pdrop", 0.1)
    return ModelConfig(
        **{
            **_BASE,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hidden,
            "num_layers": hf["n_layer"],
            "num_heads": hf["n_head"],
            "intermediate_size": hf.get("n_inner") or 4 * hidden,
            "max_positions": hf.get("n_positions", 1024),
            "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
            "activation": _ACTIVATIONS.get(hf.get("activation_function", "gelu_new"), "gelu_tanh"),
            "tie_embeddings": hf.get("tie_word_embeddings", True),
            # GPT2Model's three rates (transformers defaults 0.1); no dropout after ln_f.
            **decoder_fields(
                hf, head, ARCHITECTURES, resid, hf.get("attn_pdrop", 0.1), hf.get("embd_pdrop", 0.1)
            ),
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    activation = {v: k for k, v in _ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}[config.activation]
    return {
        "vocab_size": config.vocab_size,
        "n_embd": config.hidden_size,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": config.intermediate_size,
        "n_positions": config.max_positions,
        "layer_norm_epsilon": config.norm_eps,
        "activation_function": activation,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.embedding_dropout_rate,
        "attn_pdrop": config.attention_dropout_rate,
        "classifier_dropout": config.classifier_dropout_rate,
    }


def hf_rules(config: ModelConfig) -> list[Rule]:
    qkv = tuple(f"stack.layers.{{i}}.attn.{p}_proj" for p in "qkv")
    rules = [
        rule("embeddings.token.weight", "wte.weight"),
        rule("embeddings.position.weight", "wpe.weight"),
        rule(tuple(f"{p}.weight" for p in qkv), "h.{i}.attn.c_attn.weight", transpose, transpose),
        rule(tuple(f"{p}.bias" for p in qkv), "h.{i}.attn.c_attn.bias"),
    ]
    # Conv1D layers store (in, out) weights.
    for ours, theirs in (
        ("attn.o_proj", "attn.c_proj"),
        ("mlp.up_proj", "mlp.c_fc"),
        ("mlp.down_proj", "mlp.c_proj"),
    ):
        rules += weight_bias(f"stack.layers.{{i}}.{ours}", f"h.{{i}}.{theirs}", transpose, transpose)
    for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2")):
        rules += weight_bias(f"stack.layers.{{i}}.{ours}", f"h.{{i}}.{theirs}")
    rules += weight_bias("stack.final_norm", "ln_f")
    if config.head == "causal_lm" and not config.tie_embeddings:
        rules.append(rule("lm_head.decoder.weight", "/lm_head.weight"))
    return rules + generic_head_rules(config, token_classifier="classifier")


SPEC = FamilySpec("gpt2", ARCHITECTURES, PRESETS, config_from_hf, config_to_hf, hf_rules, "transformer")
