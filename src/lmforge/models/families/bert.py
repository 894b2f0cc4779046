"""BERT, RoBERTa and ALBERT encoders: post-norm blocks, learned positions, token types, MLM heads.

The three (and ERNIE, :mod:`~lmforge.models.families.ernie`) share one backbone layout in
transformers and differ in a few places, handled here:
RoBERTa counts positions from ``pad_token_id + 1`` over non-pad tokens and has one token type;
its classification head (dense + tanh on ``<s>``, then ``out_proj``) maps onto our pooler and
classifier. ALBERT factorises embeddings (``embedding_size`` < ``hidden_size``, projected into the
stack) and shares one block per layer group across depth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmforge.config import Head, ModelConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models.families.spec import (
    FamilySpec,
    common_hf_fields,
    head_from_architectures,
    labels_to_hf,
    site_rate,
)
from lmforge.models.io.convert import Rule, rule, weight_bias

_COMMON: dict[str, Any] = {
    "norm": "layernorm",
    "norm_eps": 1e-12,
    "norm_position": "post",
    "final_norm": False,
    "activation": "gelu",
    "causal": False,
    "positions": "learned",
    "max_positions": 512,
    "embedding_norm": True,
    "type_vocab_size": 2,
    "tie_embeddings": True,
    "pooling": "cls",
    "pad_token_id": 0,
}
_BERT = {**_COMMON, "family": "bert", "vocab_size": 30522, "pooler": True}
# roberta-base ships no pooler weights and uses eps 1e-5; positions start after the pad index.
_ROBERTA = {
    **_COMMON,
    "family": "roberta",
    "vocab_size": 50265,
    "norm_eps": 1e-5,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_offset": 2,
    "positions_from_padding": True,
}
_ALBERT = {
    **_COMMON,
    "family": "albert",
    "vocab_size": 30000,
    "activation": "gelu_tanh",
    "embedding_size": 128,
    "num_layer_groups": 1,
    "mlp_output_dropout": False,  # AlbertLayer: LayerNorm(ffn_output + attention_output)
    "pooler": True,
    "bos_token_id": 2,
    "eos_token_id": 3,
}


def _shape(hidden: int, layers: int, heads: int, inner: int) -> dict[str, int]:
    return {"hidden_size": hidden, "num_layers": layers, "num_heads": heads, "intermediate_size": inner}


BERT_PRESETS: dict[str, dict[str, Any]] = {
    "bert-tiny": {**_BERT, **_shape(128, 2, 2, 512)},
    "bert-base": {**_BERT, **_shape(768, 12, 12, 3072)},
    "bert-large": {**_BERT, **_shape(1024, 24, 16, 4096)},
    "minilm-l6": {**_BERT, **_shape(384, 6, 12, 1536)},  # all-MiniLM-L6-v2
}
ROBERTA_PRESETS: dict[str, dict[str, Any]] = {
    "roberta-tiny": {**_ROBERTA, **_shape(128, 2, 2, 512)},
    "roberta-base": {**_ROBERTA, **_shape(768, 12, 12, 3072)},
}
ALBERT_PRESETS: dict[str, dict[str, Any]] = {
    "albert-tiny": {**_ALBERT, **_shape(128, 2, 2, 512), "embedding_size": 64},
    "albert-base-v2": {**_ALBERT, **_shape(768, 12, 12, 3072)},
}

_HEAD_CLASSES = {
    "base": "Model",
    "masked_lm": "ForMaskedLM",
    "pretraining": "ForPreTraining",
    "sequence_classification": "ForSequenceClassification",
    "token_classification": "ForTokenClassification",
    "question_answering": "ForQuestionAnswering",
}
BERT_ARCHITECTURES = {head: f"Bert{suffix}" for head, suffix in _HEAD_CLASSES.items()}
ROBERTA_ARCHITECTURES = {
    head: f"Roberta{suffix}" for head, suffix in _HEAD_CLASSES.items() if head != "pretraining"
}
ALBERT_ARCHITECTURES = {head: f"Albert{suffix}" for head, suffix in _HEAD_CLASSES.items()}

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
}
_ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}
# transformers builds these heads on a base model with a pooler; the others have none.
_POOLED_HEADS = ("base", "pretraining", "sequence_classification")

# -- configs --------------------------------------------------------------------------------------


def _bert_classifier_dropout(hf: dict[str, Any], head: Head, hidden: float) -> float:
    """The rate before BERT's / RoBERTa's classification layers (QA layers have no dropout before
    them, which the core knows)."""
    if head == "pretraining":  # BertPreTrainingHeads: no dropout before seq_relationship
        return 0.0
    rate = hf.get("classifier_dropout")
    return hidden if rate is None else float(rate)


def _albert_classifier_dropout(hf: dict[str, Any], head: Head, hidden: float) -> float:
    rate = hf.get("classifier_dropout_prob", 0.1)  # the SOP and sequence heads use it as is
    if head == "token_classification" and rate is None:
        return hidden
    return 0.1 if rate is None else float(rate)


@dataclass(frozen=True)
class EncoderLayout:
    """Where the BERT-layout families' transformers classes differ, read by
    :func:`encoder_config_from_hf`.

    Attributes:
        pooled_heads: heads whose class has a pooler (RoBERTa's classification head's dense is
            ours; roberta-base ships no pooler).
        pooler_dropout: the pooled heads also drop out the pooler's input (RoBERTa).
        default_rate: the config class's default dropout rates (AlbertConfig 0, others 0.1).
        classifier_dropout: (config.json, head, hidden rate) -> rate before the classifier.
    """

    pooled_heads: tuple[str, ...] = _POOLED_HEADS
    pooler_dropout: bool = False
    default_rate: float = 0.1
    classifier_dropout: Callable[[dict[str, Any], Head, float], float] = _bert_classifier_dropout


_ROBERTA_LAYOUT = EncoderLayout(pooled_heads=("sequence_classification",), pooler_dropout=True)
_ALBERT_LAYOUT = EncoderLayout(default_rate=0.0, classifier_dropout=_albert_classifier_dropout)


def encoder_config_from_hf(
    hf: dict[str, Any],
    head: Head | None,
    base: dict[str, Any],
    archs: dict[str, str],
    layout: EncoderLayout = EncoderLayout(),
) -> ModelConfig:
    """Translate the config.json fields the BERT-layout families share; family fields come in
    ``base``, the differences of the transformers classes in ``layout``."""
    family = base["family"]
    head = head or head_from_architectures(hf.get("architectures"), archs, "base")
    act = hf.get("hidden_act") or _ACTIVATIONS_TO_HF[base["activation"]]
    if act not in _ACTIVATIONS:
        raise UnsupportedError(
            f"{family} hidden_act {act!r} is not supported (use one of {', '.join(_ACTIVATIONS)})"
        )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedError(
            f"{family} position_embedding_type {hf['position_embedding_type']!r} is not supported (only 'absolute')"
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise UnsupportedError(f"{family} as a decoder (is_decoder / add_cross_attention) is not supported")
    pooler = head in layout.pooled_heads
    default_rate = layout.default_rate
    hidden = hf.get("hidden_dropout_prob", default_rate)
    return ModelConfig(
        **{
            **base,
            "vocab_size": hf["vocab_size"],
            "hidden_size": hf["hidden_size"],
            "num_layers": hf["num_hidden_layers"],
            "num_heads": hf["num_attention_heads"],
            "intermediate_size": hf["intermediate_size"],
            "max_positions": hf.get("max_position_embeddings", 512) - base.get("position_offset", 0),
            "norm_eps": hf.get("layer_norm_eps", 1e-12),
            "activation": _ACTIVATIONS[act],
            "type_vocab_size": hf.get("type_vocab_size", 2),
            "tie_embeddings": hf.get("tie_word_embeddings", True),
            "dropout": hidden,  # the embeddings' too
            "attention_dropout": site_rate(hf.get("attention_probs_dropout_prob", default_rate), hidden),
            "classifier_dropout": site_rate(layout.classifier_dropout(hf, head, hidden), hidden),
            "pooler_dropout": layout.pooler_dropout and pooler,
            "pooler": pooler,
            **common_hf_fields(hf, head, base),
        }
    )


def bert_config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    return encoder_config_from_hf(hf, head, _BERT, BERT_ARCHITECTURES)


def roberta_config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    pad = hf.get("pad_token_id")
    pad = 1 if pad is None else pad
    return encoder_config_from_hf(
        hf,
        head,
        {**_ROBERTA, "pad_token_id": pad, "position_offset": pad + 1},
        ROBERTA_ARCHITECTURES,
        _ROBERTA_LAYOUT,
    )


def albert_config_from_hf(hf: dict[str, Any], head: Head | None = None) -> ModelConfig:
    if hf.get("inner_group_num", 1) != 1:
        raise UnsupportedError(f"albert inner_group_num {hf['inner_group_num']} is not supported (only 1)")
    base = {
        **_ALBERT,
        "embedding_size": hf.get("embedding_size", 128),
        "num_layer_groups": hf.get("num_hidden_groups", 1),
    }
    config = encoder_config_from_hf(hf, head, base, ALBERT_ARCHITECTURES, _ALBERT_LAYOUT)
    _check_albert(config)
    return config


def _check_albert(config: ModelConfig) -> None:
    # transformers always applies `embedding_hidden_mapping_in`; our embeddings only project when
    # the sizes differ, which every released ALBERT checkpoint does (128 vs 768+).
    if config.embedding_size == config.hidden_size:
        raise UnsupportedError(
            f"albert with embedding_size == hidden_size ({config.hidden_size}) is not supported; "
            "use a smaller embedding_size"
        )


def config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """transformers config fields of BERT, RoBERTa (and, extended, ALBERT and ERNIE)."""
    assert config.head_dim is not None
    if config.head_dim * config.num_heads != config.hidden_size or config.num_kv_heads != config.num_heads:
        raise UnsupportedError(
            f"{config.family} in transformers needs head_dim * num_heads == hidden_size and no GQA; "
            f"got head_dim {config.head_dim}, {config.num_heads} heads, {config.num_kv_heads} KV heads"
        )
    hf: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": _ACTIVATIONS_TO_HF[config.activation],
        "max_position_embeddings": config.max_positions + config.position_offset,
        "type_vocab_size": config.type_vocab_size,
        "layer_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "hidden_dropout_prob": config.dropout,
        "attention_probs_dropout_prob": config.attention_dropout_rate,
        "classifier_dropout": config.classifier_dropout_rate,
    }
    if config.task_type_vocab_size:
        raise UnsupportedError(
            f"{config.family} in transformers has no task-type embeddings; ERNIE has them (family 'ernie')"
        )
    if config.head in ("pretraining", "question_answering"):
        # transformers sizes the QA and ALBERT sentence-order layers by num_labels; ours are fixed at 2.
        hf.update(labels_to_hf(config.replace(num_labels=2, extra={})))
    return hf


def albert_config_to_hf(config: ModelConfig) -> dict[str, Any]:
    _check_albert(config)
    hf = config_to_hf(config)
    del hf["classifier_dropout"]  # AlbertConfig names it classifier_dropout_prob
    return {
        **hf,
        "embedding_size": config.embedding_size,
        "num_hidden_groups": config.num_layer_groups or config.num_layers,
        "inner_group_num": 1,
        "classifier_dropout_prob": config.classifier_dropout_rate,
    }


# -- weight maps ----------------------------------------------------------------------------------


def _embedding_rules() -> list[Rule]:
    rules = [
        rule("embeddings.token.weight", "embeddings.word_embeddings.weight"),
        rule("embeddings.position.weight", "embeddings.position_embeddings.weight"),
        rule("embeddings.token_type.weight", "embeddings.token_type_embeddings.weight"),
    ]
    return rules + weight_bias("embeddings.norm", "embeddings.LayerNorm")


def _block_rules(theirs: dict[str, str]) -> list[Rule]:
    """One block's rules given the foreign module name of each lmforge piece (``{i}`` = layer)."""
    return [r for ours, name in theirs.items() for r in weight_bias(f"stack.layers.{{i}}.{ours}", name)]


def _mlm_rules(config: ModelConfig, prefix: str, dense: str, norm: str) -> list[Rule]:
    """MLM transform and decoder; the tied decoder's bias lives in ``{prefix}bias``."""
    rules = weight_bias("lm_head.dense", f"/{prefix}{dense}") + weight_bias(
        "lm_head.norm", f"/{prefix}{norm}"
    )
    if config.tie_embeddings:
        return [*rules, rule("lm_head.decoder.bias", f"/{prefix}bias")]
    return rules + weight_bias("lm_head.decoder", f"/{prefix}decoder")


def _task_rules(config: ModelConfig, sequence: str) -> list[Rule]:
    """Classifier rules of the generic heads; ``sequence`` names the sequence-classification layer."""
    name = {
        "sequence_classification": sequence,
        "token_classification": "classifier",
        "question_answering": "qa_outputs",
    }.get(config.head)
    return weight_bias("classifier.linear", f"/{name}") if name else []


def _require_pooler(config: ModelConfig) -> None:
    if not config.pooler:
        raise ConfigError(
            f"{config.family} head {config.head!r} needs the pooler (dense + tanh); set pooler=True in the config"
        )


def _pooler_rules(config: ModelConfig, theirs: str) -> list[Rule]:
    """BERT / ALBERT pooler: required by the NSP/SOP and classification heads, optional on the base
    model; the transformers classes of the other heads have none, so a pooler there is not mapped."""
    if config.head in ("pretraining", "sequence_classification"):
        _require_pooler(config)
    return weight_bias("pooler.dense", theirs) if config.pooler and config.head in _POOLED_HEADS else []


def _layer_rules() -> list[Rule]:
    """Embeddings and blocks of BERT, RoBERTa and ERNIE."""
    layer = "encoder.layer.{i}."
    return _embedding_rules() + _block_rules(
        {
            "attn.q_proj": layer + "attention.self.query",
            "attn.k_proj": layer + "attention.self.key",
            "attn.v_proj": layer + "attention.self.value",
            "attn.o_proj": layer + "attention.output.dense",
            "attn_norm": layer + "attention.output.LayerNorm",
            "mlp.up_proj": layer + "intermediate.dense",
            "mlp.down_proj": layer + "output.dense",
            "mlp_norm": layer + "output.LayerNorm",
        }
    )


def bert_rules(config: ModelConfig) -> list[Rule]:
    head = config.head
    rules = _layer_rules() + _pooler_rules(config, "pooler.dense")
    if head in ("masked_lm", "pretraining"):
        rules += _mlm_rules(config, "cls.predictions.", "transform.dense", "transform.LayerNorm")
    if head == "pretraining":
        rules += weight_bias("classifier.linear", "/cls.seq_relationship")
    return rules + _task_rules(config, "classifier")


def roberta_rules(config: ModelConfig) -> list[Rule]:
    """RoBERTa's heads: ``lm_head`` for MLM, and a classification head whose dense is our pooler."""
    head, rules = config.head, _layer_rules()
    if head == "masked_lm":
        return rules + _mlm_rules(config, "lm_head.", "dense", "layer_norm")
    if head == "sequence_classification":
        _require_pooler(config)
        return (
            rules
            + weight_bias("pooler.dense", "/classifier.dense")
            + _task_rules(config, "classifier.out_proj")
        )
    pooler = weight_bias("pooler.dense", "pooler.dense") if head == "base" and config.pooler else []
    return rules + pooler + _task_rules(config, "classifier")


def albert_rules(config: ModelConfig) -> list[Rule]:
    _check_albert(config)
    layer = "encoder.albert_layer_groups.{i}.albert_layers.0."  # {i} is the layer group
    rules = _embedding_rules() + weight_bias("embeddings.project", "encoder.embedding_hidden_mapping_in")
    rules += _block_rules(
        {
            "attn.q_proj": layer + "attention.query",
            "attn.k_proj": layer + "attention.key",
            "attn.v_proj": layer + "attention.value",
            "attn.o_proj": layer + "attention.dense",
            "attn_norm": layer + "attention.LayerNorm",
            "mlp.up_proj": layer + "ffn",
            "mlp.down_proj": layer + "ffn_output",
            "mlp_norm": layer + "full_layer_layer_norm",
        }
    )
    head = config.head
    rules += _pooler_rules(config, "pooler")
    if head in ("masked_lm", "pretraining"):
        rules += _mlm_rules(config, "predictions.", "dense", "LayerNorm")
    if head == "pretraining":
        rules += weight_bias("classifier.linear", "/sop_classifier.classifier")
    return rules + _task_rules(config, "classifier")


def encoder_spec(
    name: str,
    presets: dict[str, dict[str, Any]],
    config_from_hf: Callable[[dict[str, Any], Head | None], ModelConfig],
    to_hf: Callable[[ModelConfig], dict[str, Any]],
    rules: Callable[[ModelConfig], list[Rule]],
    architectures: dict[str, str],
) -> FamilySpec:
    """The spec of a BERT-layout family: transformers holds its base model under ``name``."""
    pooled = tuple(h for h in ("pretraining", "sequence_classification") if h in architectures)
    return FamilySpec(name, architectures, presets, config_from_hf, to_hf, rules, name, pooled_heads=pooled)


BERT_SPEC = encoder_spec(
    "bert", BERT_PRESETS, bert_config_from_hf, config_to_hf, bert_rules, BERT_ARCHITECTURES
)
ROBERTA_SPEC = encoder_spec(
    "roberta", ROBERTA_PRESETS, roberta_config_from_hf, config_to_hf, roberta_rules, ROBERTA_ARCHITECTURES
)
ALBERT_SPEC = encoder_spec(
    "albert", ALBERT_PRESETS, albert_config_from_hf, albert_config_to_hf, albert_rules, ALBERT_ARCHITECTURES
)
