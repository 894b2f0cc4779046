"""Tokenizers stage: text <-> ids (``data -> tokenizers -> models``); imports nothing from later stages.

Note the name: inside this package, ``import tokenizers`` still means the Hugging Face
``tokenizers`` library, because imports are absolute (``lmforge.tokenizers`` is this package).
"""

from lmforge.tokenizers.gguf import GGUFTokenizerParts, build_gguf_tokenizer
from lmforge.tokenizers.tokenizer import SPECIAL_TOKEN_NAMES, Tokenizer

__all__ = ["SPECIAL_TOKEN_NAMES", "GGUFTokenizerParts", "Tokenizer", "build_gguf_tokenizer"]
