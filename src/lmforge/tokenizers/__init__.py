"""Tokenizers stage: text <-> ids (``data -> tokenizers -> models``); imports nothing from later stages.

Note the name: inside this package, ``import tokenizers`` still means the Hugging Face
``tokenizers`` library, because imports are absolute (``lmforge.tokenizers`` is this package).
"""

from lmforge.tokenizers.gguf import GGUFTokenizerParts, build_gguf_tokenizer
from lmforge.tokenizers.gpt2_bpe import load_gpt2_bpe
from lmforge.tokenizers.tokenizer import SPECIAL_TOKEN_NAMES, Tokenizer
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

__all__ = [
    "SPECIAL_TOKEN_NAMES",
    "GGUFTokenizerParts",
    "Tokenizer",
    "TokenizerTrainConfig",
    "build_gguf_tokenizer",
    "load_gpt2_bpe",
    "train_tokenizer",
]
