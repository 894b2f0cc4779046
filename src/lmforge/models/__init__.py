"""Model stage: one configurable Transformer core and the families built on it."""

from lmforge.models.core import KVCache
from lmforge.models.heads import mean_pool
from lmforge.models.model import ModelOutput, TransformerModel, shift_right
from lmforge.models.registry import FAMILIES, family, preset_config

__all__ = [
    "FAMILIES",
    "KVCache",
    "ModelOutput",
    "TransformerModel",
    "family",
    "mean_pool",
    "preset_config",
    "shift_right",
]
