"""Data stage: raw text -> cleaned, deduplicated, split documents -> token memmaps for pretraining.

``prepare`` writes a directory that ``TokenDataset`` reads; see :mod:`lmforge.data.dataset` for the
layout and :mod:`lmforge.data.readers` for the input formats and built-in corpora.
"""

from lmforge.data.clean import Deduplicator, clean_text, normalized_key, validation_bucket
from lmforge.data.dataset import TokenDataset
from lmforge.data.pipeline import PrepareSettings, prepare
from lmforge.data.readers import ErrorLog, Source, iter_texts, read_source, resolve_inputs

__all__ = [
    "Deduplicator",
    "ErrorLog",
    "PrepareSettings",
    "Source",
    "TokenDataset",
    "clean_text",
    "iter_texts",
    "normalized_key",
    "prepare",
    "read_source",
    "resolve_inputs",
    "validation_bucket",
]
