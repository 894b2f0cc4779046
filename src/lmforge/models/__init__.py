"""Model stage: one configurable Transformer core and the families built on it.

The core, read in this order: :mod:`~lmforge.models.norms`, :mod:`~lmforge.models.positions`
(learned tables live in :mod:`~lmforge.models.embeddings`; RoPE; T5 relative buckets),
:mod:`~lmforge.models.kv_cache`, :mod:`~lmforge.models.attention`, :mod:`~lmforge.models.mlp`,
:mod:`~lmforge.models.blocks` (block and stack), :mod:`~lmforge.models.heads` and
:mod:`~lmforge.models.model` (the model class). :mod:`~lmforge.models.families` holds what differs
per family; :mod:`~lmforge.models.io` reads and writes weights.
"""

from lmforge.models.families.registry import FAMILIES, family, preset_config
from lmforge.models.heads import mean_pool
from lmforge.models.kv_cache import KVCache
from lmforge.models.model import ModelOutput, TransformerModel, shift_right

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
