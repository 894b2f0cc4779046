"""Generation stage: the decoding engine over the KV cache (:mod:`lmforge.generate.engine`)."""

from lmforge.generate.config import GenerationConfig, check_generation
from lmforge.generate.engine import generate, generate_detailed, stream
from lmforge.generate.steps import GenerationOutput, StopPredicate, TokenStep

__all__ = [
    "GenerationConfig",
    "GenerationOutput",
    "StopPredicate",
    "TokenStep",
    "check_generation",
    "generate",
    "generate_detailed",
    "stream",
]
