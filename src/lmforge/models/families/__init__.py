"""Model families: one module each (presets, config translation, weight-name maps) and the registry.

``gpt2`` (GPT-2), ``gpt_neo`` (GPT-Neo), ``llama`` (Llama, SmolLM2), ``bert`` (BERT, RoBERTa,
ALBERT), ``ernie`` (ERNIE) and ``t5`` (T5) only wire the core in :mod:`lmforge.models`; :mod:`~lmforge.models.families.registry` finds them
by name, preset or transformers ``model_type``.
"""

from lmforge.models.families.registry import (
    FAMILIES,
    family,
    family_for_hf,
    preset_config,
    preset_for_tokenizer,
    presets,
)
from lmforge.models.families.spec import FamilySpec

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "family",
    "family_for_hf",
    "preset_config",
    "preset_for_tokenizer",
    "presets",
]
