"""T5 encoder-decoders: relative position buckets, pre-norm RMSNorm, no biases, unscaled attention.

Original T5 uses a ReLU MLP and ties the LM head to the shared embedding (rescaling the decoder
output by ``hidden_size ** -0.5``); T5 v1.1 uses a gated GELU (tanh) MLP and an untied head.
The relative bias lives in the first block of each transformers stack; lmforge keeps one per stack
(``stack.relative`` for the encoder, ``decoder.relative``). A config without decoder layers is the
encoder alone (transformers' ``T5EncoderModel``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmforge.config import Head, ModelConfig
from lmforge.errors import UnsupportedError
from lmforge.models.families.spec import FamilySpec, head_from_architectures
from lmforge.models.io.convert import Rule, rule

_BASE: dict[str, Any] = {
    "family": "t5",
    "head": "seq2seq_lm",
    "vocab_size": 32128,
    "max_positions": 512,  # informational: relative positions have no table to outgrow
    "norm": "rmsnorm",
    "norm_eps": 1e-6,
    "norm_position": "pre",
    "activation": "relu",
    "attention_bias": False,
    "mlp_bias": False,
    "attention_scale": 1.0,  # T5 folds the 1/sqrt(head_dim) into its initialisation
    "causal": False,  # the encoder; the decoder stack is always causal
    "positions": "relative",
    "relative_buckets": 32,
    "relative_max_distance": 128,
    "tie_embeddings": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
    "mlp_dropout": True,  # T5DenseActDense: wo(dropout(act(wi(x))))
    "final_norm_dropout": True,  # T5Stack: dropout(final_layer_norm(x))
    "scale_tied_lm_head": True,  # sequence_output * d_model**-0.5 before the tied lm_head
}
_V1_1: dict[str, Any] = {**_BASE, "activation": "gelu_tanh", "gated_mlp": True, "tie_embeddings": False}


def _size(hidden: int, layers: int, heads: int, ff: int, head_dim: int = 64) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "num_layers": layers,
        "num_decoder_layers": layers,
        "num_heads": heads,
        "head_dim": head_dim,
        "intermediate_size": ff,
    }


PRESETS: dict[str, dict[str, Any]] = {
    "t5-tiny": {**_BASE, **_size(64, 2, 4, 128, head_dim=16)},
    "t5-small": {**_BASE, **_size(512, 6, 8, 2048)},
    "t5-base": {**_BASE, **_size(768, 12, 12, 3072)},
    "t5-v1_1-small": {**_V1_1, **_size(512, 8, 6, 1024)},
}

ARCHITECTURES = {"base": "T5Model", "seq2seq_lm": "T5ForConditionalGeneration"}
ENCODER_ONLY = "T5EncoderModel"

# transformers' feed_forward_proj activation name -> lmforge activation ("gated-gelu" is special).
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
_ACTIVATIONS_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_tanh": "gelu_new"}


def _activation_from_hf(feed_forward_proj: str) -> tuple[str, bool]:
    """(activation, gated) for a transformers ``feed_forward_proj`` such as ``"gated-gelu"``."""
    gated = feed_forward_proj.startswith("gated-")
    name = feed_forward_proj.removeprefix("gated-")
    if feed_forward_proj == "gated-gelu":  # transformers maps it to gelu_new for T5 v1.1
        name = "gelu_new"
    if name not in _ACTIVATIONS:
        raise UnsupportedError(
            f"t5 feed_forward_proj {feed_forward_proj!r} is not supported "
            f"(use relu, gelu, gelu_new or their gated- forms)"
        )
    return _ACTIVATIONS[name], gated


def _activation_to_hf(config: ModelConfig) -> str:
    if config.gated_mlp and config.activation == "gelu_tanh":
        return "gated-gelu"
    if config.activation not in _ACTIVATIONS_TO_HF or (config.gated_mlp and config.activation == "gelu"):
        raise UnsupportedError(
            f"t5 cannot export activation {config.activation!r} (gated: {config.gated_mlp}) to transformers"
        )
    name = _ACTIVATIONS_TO_HF[config.activation]
    return f"gated-{name}" if config.gated_mlp else name


def config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    architectures = hf.get("architectures") or []
    encoder_only = ENCODER_ONLY in architectures and head in (None, "base")
    head = head or (
        "base" if encoder_only else head_from_architectures(architectures, ARCHITECTURES, "seq2seq_lm")
    )
    activation, gated = _activation_from_hf(hf.get("feed_forward_proj", "relu"))
    # transformers 5 always writes tie_word_embeddings=true and records the T5 v1.1 untied head in
    # scale_decoder_outputs; older configs only have tie_word_embeddings.
    tied = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
    return ModelConfig(
        **{
            **_BASE,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hf["d_model"],
            "head_dim": hf["d_kv"],
            "intermediate_size": hf["d_ff"],
            "num_layers": hf["num_layers"],
            "num_decoder_layers": None if encoder_only else hf.get("num_decoder_layers") or hf["num_layers"],
            "num_heads": hf["num_heads"],
            "relative_buckets": hf.get("relative_attention_num_buckets", 32),
            "relative_max_distance": hf.get("relative_attention_max_distance", 128),
            "activation": activation,
            "gated_mlp": gated,
            "norm_eps": hf.get("layer_norm_epsilon", 1e-6),
            "max_positions": hf.get("n_positions", 512),
            "tie_embeddings": bool(tied),
            "dropout": hf.get("dropout_rate", 0.1),  # T5 uses one rate at every site
            "pad_token_id": hf.get("pad_token_id", 0),
            "eos_token_id": hf.get("eos_token_id", 1),
            "decoder_start_token_id": hf.get("decoder_start_token_id", hf.get("pad_token_id", 0)),
            "head": head,
        }
    )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    hf: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        "d_model": config.hidden_size,
        "d_kv": config.head_dim,
        "d_ff": config.intermediate_size,
        "num_layers": config.num_layers,
        "num_decoder_layers": config.num_decoder_layers or config.num_layers,
        "num_heads": config.num_heads,
        "relative_attention_num_buckets": config.relative_buckets,
        "relative_attention_max_distance": config.relative_max_distance,
        "feed_forward_proj": _activation_to_hf(config),
        "layer_norm_epsilon": config.norm_eps,
        "dropout_rate": config.dropout,
        "tie_word_embeddings": config.tie_embeddings,
        "decoder_start_token_id": config.decoder_start_token_id,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
    }
    if not config.is_encoder_decoder:
        hf["architectures"] = [ENCODER_ONLY]
    return hf


def _stack_rules(config: ModelConfig, ours: str, theirs: str, num_layers: int, cross: bool) -> list[Rule]:
    """One transformers ``T5Stack`` (``encoder`` or ``decoder``) as lmforge ``stack`` / ``decoder``."""
    rules = [
        rule(
            f"{ours}.relative.bias.weight",
            f"{theirs}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ),
        rule(f"{ours}.final_norm.weight", f"{theirs}.final_layer_norm.weight"),
    ]
    mlp = {"gate_proj": "wi_0", "up_proj": "wi_1"} if config.gated_mlp else {"up_proj": "wi"}
    for i in range(num_layers):
        block, layer = f"{theirs}.block.{i}.layer", f"{ours}.layers.{i}"
        attentions = [("attn", "0.SelfAttention")] + ([("cross_attn", "1.EncDecAttention")] if cross else [])
        for our_attn, their_attn in attentions:
            for p in "qkvo":
                rules.append(rule(f"{layer}.{our_attn}.{p}_proj.weight", f"{block}.{their_attn}.{p}.weight"))
        ff = 2 if cross else 1
        norms = [("attn_norm", 0), ("mlp_norm", ff)] + ([("cross_norm", 1)] if cross else [])
        for our_norm, index in norms:
            rules.append(rule(f"{layer}.{our_norm}.weight", f"{block}.{index}.layer_norm.weight"))
        for our_proj, their_proj in {**mlp, "down_proj": "wo"}.items():
            rules.append(
                rule(f"{layer}.mlp.{our_proj}.weight", f"{block}.{ff}.DenseReluDense.{their_proj}.weight")
            )
    return rules


def hf_rules(config: ModelConfig) -> list[Rule]:
    """Full names (no ``{i}``): the decoder may have a different depth than the encoder."""
    # transformers ties encoder.embed_tokens and decoder.embed_tokens to shared and saves only it.
    rules = [rule("embeddings.token.weight", "shared.weight")]
    rules += _stack_rules(config, "stack", "encoder", config.num_layers, cross=False)
    if config.num_decoder_layers is not None:
        rules += _stack_rules(config, "decoder", "decoder", config.num_decoder_layers, cross=True)
    if config.head == "seq2seq_lm" and not config.tie_embeddings:
        rules.append(rule("lm_head.decoder.weight", "lm_head.weight"))
    return rules


def init_parameters(model: nn.Module, config: ModelConfig) -> None:
    """T5's init (``T5PreTrainedModel._init_weights``, factor 1): unit-variance embeddings and
    fan-in scaled projections. T5 folds the attention scale into ``q`` and rescales the tied
    output by ``d**-0.5``, so N(0, 0.02) would start every signal ~50x too small (measured: a
    tiny T5 translating en->ja stalled near the unigram loss with it)."""
    d, ff = config.hidden_size, config.intermediate_size
    head_dim = config.head_dim or d // config.num_heads
    std_by_name = {
        "q_proj": (d * head_dim) ** -0.5,
        "k_proj": d**-0.5,
        "v_proj": d**-0.5,
        "o_proj": (config.num_heads * head_dim) ** -0.5,
        "gate_proj": d**-0.5,
        "up_proj": d**-0.5,
        "down_proj": ff**-0.5,
    }
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std_by_name.get(leaf, d**-0.5))  # heads: d**-0.5
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):  # token embedding N(0, 1); relative biases d**-0.5
            nn.init.normal_(module.weight, std=1.0 if name == "embeddings.token" else d**-0.5)


SPEC = FamilySpec(
    "t5", ARCHITECTURES, PRESETS, config_from_hf, config_to_hf, hf_rules, init_parameters=init_parameters,
    # Checkpoints saved before the field existed were T5 with the scaled tied head.
    defaults={"scale_tied_lm_head": True},
)  # fmt: skip
