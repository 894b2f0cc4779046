"""Llama (and SmolLM2, Mistral-style) decoders: RoPE, RMSNorm, SwiGLU, GQA, no biases."""

from __future__ import annotations

from typing import Any

from lmforge.config import Head, ModelConfig
from lmforge.errors import UnsupportedError
from lmforge.models.families.spec import FamilySpec, decoder_fields, generic_head_rules
from lmforge.models.io.convert import Rule, rope_permute, rope_unpermute, rule

_BASE: dict[str, Any] = {
    "family": "llama",
    "norm": "rmsnorm",
    "norm_eps": 1e-5,
    "activation": "silu",
    "gated_mlp": True,
    "positions": "rope",
    "attention_bias": False,
    "mlp_bias": False,
    "pooling": "last",
    "classifier_bias": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": {
        **_BASE,
        "vocab_size": 32000,
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "num_kv_heads": 2,
        "intermediate_size": 352,
        "max_positions": 2048,
    },
    "smollm2-135m": {
        **_BASE,
        "vocab_size": 49152,
        "hidden_size": 576,
        "num_layers": 30,
        "num_heads": 9,
        "num_kv_heads": 3,
        "intermediate_size": 1536,
        "max_positions": 8192,
        "rope_theta": 100000.0,
        "tie_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "llama-3.2-1b": {
        **_BASE,
        "vocab_size": 128256,
        "hidden_size": 2048,
        "num_layers": 16,
        "num_heads": 32,
        "num_kv_heads": 8,
        "intermediate_size": 8192,
        "max_positions": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        "tie_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
    },
}

ARCHITECTURES = {
    "base": "LlamaModel",
    "causal_lm": "LlamaForCausalLM",
    "sequence_classification": "LlamaForSequenceClassification",
    "token_classification": "LlamaForTokenClassification",
    "question_answering": "LlamaForQuestionAnswering",
}


def config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    theta = rope.pop("rope_theta", hf.get("rope_theta", 10000.0))
    if rope.get("rope_type", rope.get("type", "default")) == "default":
        rope = {}
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedError(f"llama hidden_act {hf['hidden_act']!r} is not supported (only silu)")
    return ModelConfig(
        **{
            **_BASE,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hf["hidden_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "num_kv_heads": hf.get("num_key_value_heads") or hf["num_attention_heads"],
            "head_dim": hf.get("head_dim"),
            "intermediate_size": hf["intermediate_size"],
            "max_positions": hf.get("max_position_embeddings", 2048),
            "norm_eps": hf.get("rms_norm_eps", 1e-6),
            "rope_theta": float(theta),
            "rope_scaling": rope or None,
            "attention_bias": hf.get("attention_bias", False),
            "mlp_bias": hf.get("mlp_bias", False),
            "tie_embeddings": hf.get("tie_word_embeddings", False),
            # LlamaModel drops out attention probabilities only: no embedding or residual dropout.
            **decoder_fields(hf, head, ARCHITECTURES, 0.0, hf.get("attention_dropout") or 0.0),
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    rope = {"rope_type": "default", **(config.rope_scaling or {}), "rope_theta": config.rope_theta}
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_positions,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": rope,
        "rope_theta": config.rope_theta,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "attention_dropout": config.attention_dropout_rate,
        "classifier_dropout": config.classifier_dropout_rate,
    }


# Each lmforge weight with its transformers and llama.cpp names ({i} = layer; q/k weights apart:
# llama.cpp stores their rows permuted for its RoPE layout).
_WEIGHT_NAMES: dict[str, tuple[str, str]] = {
    "embeddings.token": ("embed_tokens", "token_embd"),
    "stack.final_norm": ("norm", "output_norm"),
    "stack.layers.{i}.attn_norm": ("layers.{i}.input_layernorm", "blk.{i}.attn_norm"),
    "stack.layers.{i}.mlp_norm": ("layers.{i}.post_attention_layernorm", "blk.{i}.ffn_norm"),
    **{
        f"stack.layers.{{i}}.mlp.{p}_proj": (f"layers.{{i}}.mlp.{p}_proj", f"blk.{{i}}.ffn_{p}")
        for p in ("gate", "up", "down")
    },
    "stack.layers.{i}.attn.v_proj": ("layers.{i}.self_attn.v_proj", "blk.{i}.attn_v"),
    "stack.layers.{i}.attn.o_proj": ("layers.{i}.self_attn.o_proj", "blk.{i}.attn_output"),
}


def hf_rules(config: ModelConfig) -> list[Rule]:
    rules = [rule(f"{ours}.weight", f"{hf}.weight") for ours, (hf, _) in _WEIGHT_NAMES.items()]
    attention = "layers.{i}.self_attn"
    rules += [rule(f"stack.layers.{{i}}.attn.{p}_proj.weight", f"{attention}.{p}_proj.weight") for p in "qk"]
    biases = [
        *(["q", "k", "v"] if config.attention_bias else []),
        *(["o"] if config.attention_out_bias else []),
    ]
    rules += [rule(f"stack.layers.{{i}}.attn.{p}_proj.bias", f"{attention}.{p}_proj.bias") for p in biases]
    if config.mlp_bias:
        for p in ("gate", "up", "down"):
            rules.append(rule(f"stack.layers.{{i}}.mlp.{p}_proj.bias", f"layers.{{i}}.mlp.{p}_proj.bias"))
    if config.head == "causal_lm" and not config.tie_embeddings:
        rules.append(rule("lm_head.decoder.weight", "/lm_head.weight"))
    return rules + generic_head_rules(config, token_classifier="score")


def gguf_rules(config: ModelConfig) -> list[Rule]:
    """llama.cpp tensor names; Q and K rows are stored permuted for its RoPE layout."""
    assert config.num_kv_heads is not None
    rules = [rule(f"{ours}.weight", f"{gguf}.weight") for ours, (_, gguf) in _WEIGHT_NAMES.items()]
    for p, heads in (("q", config.num_heads), ("k", config.num_kv_heads)):
        rules.append(
            rule(
                f"stack.layers.{{i}}.attn.{p}_proj.weight",
                f"blk.{{i}}.attn_{p}.weight",
                rope_unpermute(heads),
                rope_permute(heads),
            )
        )
    if config.head == "causal_lm" and not config.tie_embeddings:
        rules.append(rule("lm_head.decoder.weight", "output.weight"))
    return rules


def config_from_gguf(metadata: dict[str, Any], head: Head = "causal_lm") -> ModelConfig:
    """Build a config from llama.cpp metadata (``llama.*`` keys)."""

    def field(key: str, default: Any = None) -> Any:
        return metadata.get(f"llama.{key}", default)

    tokens = metadata.get("tokenizer.ggml.tokens") or []
    num_heads = int(field("attention.head_count"))
    hidden = int(field("embedding_length"))
    head_dim = field("attention.key_length") or hidden // num_heads
    return ModelConfig(
        **{
            **_BASE,
            "vocab_size": int(field("vocab_size") or len(tokens)),
            "hidden_size": hidden,
            "num_layers": int(field("block_count")),
            "num_heads": num_heads,
            "num_kv_heads": int(field("attention.head_count_kv", num_heads)),
            "head_dim": int(head_dim),
            "intermediate_size": int(field("feed_forward_length")),
            "max_positions": int(field("context_length", 2048)),
            "norm_eps": float(field("attention.layer_norm_rms_epsilon", 1e-5)),
            "rope_theta": float(field("rope.freq_base", 10000.0)),
            "tie_embeddings": bool(metadata.get("_tied_embeddings", True)),
            "bos_token_id": metadata.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": metadata.get("tokenizer.ggml.eos_token_id"),
            "pad_token_id": metadata.get("tokenizer.ggml.padding_token_id"),
            "head": head,
        }
    )


SPEC = FamilySpec(
    "llama", ARCHITECTURES, PRESETS, config_from_hf, config_to_hf, hf_rules, "model",
    hf_head_bases={"question_answering": "transformer"}, gguf_rules=gguf_rules,
)  # fmt: skip
