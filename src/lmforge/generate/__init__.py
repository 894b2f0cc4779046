"""Generation stage: decoding loops over the KV cache."""

from lmforge.generate.decode import GenerationConfig, generate

__all__ = ["GenerationConfig", "generate"]
