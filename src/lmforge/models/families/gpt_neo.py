"""GPT-Neo: GPT-2's block with alternating global and local (sliding-window) causal attention.

What differs from GPT-2 (transformers' ``GPTNeoForCausalLM``): attention scores are not scaled by
``1/sqrt(head_dim)``; q/k/v projections have no bias (the output projection has one); weights are
plain ``nn.Linear``, not Conv1D; and layers follow ``attention_types`` (``[[["global", "local"],
12]]``: the pattern and how often it repeats), a local layer seeing the last ``window_size``
positions. The core does the windows (``ModelConfig.local_window`` / ``attention_layers``).
"""

from __future__ import annotations

from typing import Any

from lmforge.config import Head, ModelConfig
from lmforge.errors import UnsupportedError
from lmforge.models.families.spec import FamilySpec, decoder_fields, generic_head_rules
from lmforge.models.io.convert import Rule, rule, weight_bias

_BASE: dict[str, Any] = {
    "family": "gpt_neo",
    "vocab_size": 50257,
    "max_positions": 2048,
    "norm": "layernorm",
    "norm_eps": 1e-5,
    "activation": "gelu_tanh",
    "positions": "learned",
    "attention_bias": False,
    "attention_out_bias": True,
    "attention_scale": 1.0,
    "local_window": 256,
    "attention_layers": ["global", "local"],
    "tie_embeddings": True,
    "pooling": "last",
    "classifier_bias": False,
    "bos_token_id": 50256,
    "eos_token_id": 50256,
}


def _size(hidden: int, layers: int, heads: int) -> dict[str, int]:
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": heads, "intermediate_size": 4 * hidden}


PRESETS: dict[str, dict[str, Any]] = {
    "gpt-neo-tiny": {**_BASE, **_size(128, 4, 4), "max_positions": 512, "local_window": 64},
    "gpt-neo-125m": {**_BASE, **_size(768, 12, 12)},
    "gpt-neo-1.3b": {**_BASE, **_size(2048, 24, 16)},
    "gpt-neo-2.7b": {**_BASE, **_size(2560, 32, 20)},
}

ARCHITECTURES = {
    "base": "GPTNeoModel",
    "causal_lm": "GPTNeoForCausalLM",
    "sequence_classification": "GPTNeoForSequenceClassification",
    "token_classification": "GPTNeoForTokenClassification",
    "question_answering": "GPTNeoForQuestionAnswering",
}

_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
_ACTIVATIONS_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def _attention_pattern(hf: dict[str, Any], num_layers: int) -> list[str]:
    """The layer kinds of ``attention_types`` as a pattern (one item: its pattern) or in full."""
    types = hf.get("attention_types") or [[["global", "local"], num_layers // 2]]
    if len(types) == 1:
        return [str(kind) for kind in types[0][0]]
    return [str(kind) for pattern, repeats in types for _ in range(int(repeats)) for kind in pattern]


def config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    activation = hf.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise UnsupportedError(
            f"gpt_neo activation_function {activation!r} is not supported (use one of {', '.join(_ACTIVATIONS)})"
        )
    hidden, layers = hf["hidden_size"], hf["num_layers"]
    max_positions = hf.get("max_position_embeddings", 2048)
    resid = hf.get("resid_dropout", 0.0)
    return ModelConfig(
        **{
            **_BASE,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hidden,
            "num_layers": layers,
            "num_heads": hf["num_heads"],
            "intermediate_size": hf.get("intermediate_size") or 4 * hidden,
            "max_positions": max_positions,
            # A window as long as the context is no window; transformers allows longer ones too.
            "local_window": min(hf.get("window_size", 256), max_positions),
            "attention_layers": _attention_pattern(hf, layers),
            "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
            "activation": _ACTIVATIONS[activation],
            "tie_embeddings": hf.get("tie_word_embeddings", True),
            # GPTNeoConfig defaults all three rates to 0.
            **decoder_fields(
                hf, head, ARCHITECTURES, resid, hf.get("attention_dropout", 0.0), hf.get("embed_dropout", 0.0)
            ),
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    assert config.head_dim is not None
    if config.head_dim * config.num_heads != config.hidden_size or config.num_kv_heads != config.num_heads:
        raise UnsupportedError("gpt_neo in transformers needs head_dim * num_heads == hidden_size and no GQA")
    if config.activation not in _ACTIVATIONS_TO_HF:
        raise UnsupportedError(f"gpt_neo cannot export activation {config.activation!r} to transformers")
    pattern = config.attention_layers or ["local" if config.local_window else "global"]
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_positions,
        "window_size": config.local_window or config.max_positions,
        "attention_types": [[list(pattern), config.num_layers // len(pattern)]],
        "activation_function": _ACTIVATIONS_TO_HF[config.activation],
        "layer_norm_epsilon": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "resid_dropout": config.dropout,
        "embed_dropout": config.embedding_dropout_rate,
        "attention_dropout": config.attention_dropout_rate,
        "classifier_dropout": config.classifier_dropout_rate,
    }


def hf_rules(config: ModelConfig) -> list[Rule]:
    layer, attention = "stack.layers.{i}", "h.{i}.attn.attention"
    rules = [rule("embeddings.token.weight", "wte.weight"), rule("embeddings.position.weight", "wpe.weight")]
    rules += [rule(f"{layer}.attn.{p}_proj.weight", f"{attention}.{p}_proj.weight") for p in "qkv"]
    rules += weight_bias(f"{layer}.attn.o_proj", f"{attention}.out_proj")
    for ours, theirs in (("attn_norm", "ln_1"), ("mlp_norm", "ln_2"), ("mlp.up_proj", "mlp.c_fc")):
        rules += weight_bias(f"{layer}.{ours}", f"h.{{i}}.{theirs}")
    rules += weight_bias(f"{layer}.mlp.down_proj", "h.{i}.mlp.c_proj") + weight_bias(
        "stack.final_norm", "ln_f"
    )
    if config.head == "causal_lm" and not config.tie_embeddings:
        rules.append(rule("lm_head.decoder.weight", "/lm_head.weight"))
    return rules + generic_head_rules(config, token_classifier="classifier")


SPEC = FamilySpec("gpt_neo", ARCHITECTURES, PRESETS, config_from_hf, config_to_hf, hf_rules, "transformer")
