"""All model families by name, and lookups by config, preset or transformers model type."""

from __future__ import annotations

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, UnsupportedError
from lmforge.models import bert, gpt2, llama, t5
from lmforge.models.family import FamilySpec

_SPECS: tuple[FamilySpec, ...] = (
    gpt2.SPEC,
    llama.SPEC,
    bert.BERT_SPEC,
    bert.ROBERTA_SPEC,
    bert.ALBERT_SPEC,
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
