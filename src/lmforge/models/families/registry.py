"""All model families by name, and lookups by config, preset or transformers model type."""

from __future__ import annotations

import dataclasses
from typing import Any

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models.families import bert, ernie, gpt2, gpt_neo, llama, t5
from lmforge.models.families.spec import FamilySpec

_SPECS: tuple[FamilySpec, ...] = (
    gpt2.SPEC,
    gpt_neo.SPEC,
    llama.SPEC,
    bert.BERT_SPEC,
    bert.ROBERTA_SPEC,
    bert.ALBERT_SPEC,
    ernie.SPEC,
    t5.SPEC,
)
FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in _SPECS}


def family(name: str) -> FamilySpec:
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_for_hf(model_type: str, source: str) -> FamilySpec:
    for spec in FAMILIES.values():
        if spec.hf_model_type == model_type:
            return spec
    known = ", ".join(spec.hf_model_type for spec in FAMILIES.values())
    raise UnsupportedError(
        f"{source}: transformers model_type {model_type!r} is not supported; known: {known}"
    )


def presets() -> dict[str, FamilySpec]:
    """Every preset name with the family that defines it."""
    return {name: spec for spec in FAMILIES.values() for name in spec.presets}


def preset_config(name: str, **overrides: object) -> ModelConfig:
    """The config of a named preset (e.g. ``gpt2-124m``), with field overrides."""
    table = presets()
    if name not in table:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(sorted(table))}")
    return table[name].preset(name, **overrides)


def preset_for_tokenizer(name: str, tokenizer: Any, **overrides: object) -> ModelConfig:
    """A preset sized and wired for ``tokenizer``: its vocabulary and its pad / bos / eos ids.

    Encoder-only presets take ``[CLS]`` / ``[SEP]`` as bos / eos when the tokenizer has no
    ``<s>`` / ``</s>``; T5 starts decoding at the pad id; RoBERTa counts positions from
    ``pad + 1``. ``overrides`` (``hidden_size=128``, ``num_layers=2``, ``head="causal_lm"`` ...)
    apply last; an unknown field is a :class:`ConfigError` naming it.
    """
    base = preset_config(name)
    pad, bos, eos = tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "pad_token_id": pad,
        "bos_token_id": bos if bos is not None else tokenizer.special_token_id("cls_token"),
        "eos_token_id": eos if eos is not None else tokenizer.special_token_id("sep_token"),
    }
    if base.is_encoder_decoder:
        fields["decoder_start_token_id"] = pad if pad is not None else 0
    if base.positions_from_padding and pad is not None:
        fields["position_offset"] = pad + 1
    fields.update(overrides)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"unknown model config field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return preset_config(name, **fields)
