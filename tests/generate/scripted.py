"""Test models for the text layer: a byte-level BPE over Chinese, emoji and English, and a
"scripted" Llama that greedily continues token ``i`` with ``successor[i]`` (so a test knows,
token for token, what the engine will produce)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch

from lmforge.models import TransformerModel, preset_config
from lmforge.tokenizers import Tokenizer
from lmforge.tokenizers.train import TokenizerTrainConfig, train_tokenizer

CORPUS = [
    "你好，世界！今天天气很好。",
    "北京是中国的首都，上海是最大的城市。",
    "emoji time 🙂🎉🚀 and more 👍🏽 text",
    "Hello world, the quick brown fox jumps over the lazy dog.",
    "STOP here and END there. <|end|> done",
] * 4


@cache
def byte_bpe() -> Tokenizer:
    """A byte-level BPE (GPT-2 layout) small enough that most CJK characters and emoji take
    several tokens."""
    tokenizer = train_tokenizer(CORPUS, TokenizerTrainConfig(kind="bpe", family="gpt2", vocab_size=300))
    tokenizer.special_tokens["pad_token"] = tokenizer.special_tokens["eos_token"]
    return tokenizer


def scripted_model(
    vocab_size: int, successor: dict[int, int], eos_token_id: int | None = None
) -> TransformerModel:
    """A one-layer Llama whose greedy next token after ``i`` is ``successor[i]`` (else token 0).

    The blocks add nothing (zero output projections), the embeddings are one-hot and the LM head
    maps each one-hot row to its successor's logit.
    """
    config = preset_config(
        "llama-tiny",
        head="causal_lm",
        vocab_size=vocab_size,
        hidden_size=vocab_size,
        num_layers=1,
        num_heads=1,
        num_kv_heads=1,
        intermediate_size=8,
        tie_embeddings=False,
        eos_token_id=eos_token_id,
    )
    model = TransformerModel(config).eval()
    with torch.no_grad():
        for layer in model.stack.layers:
            layer.attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.embeddings.token.weight.copy_(torch.eye(vocab_size))
        head = model.lm_head.decoder.weight  # (V, H)
        head.zero_()
        head[0, :] = 0.1  # token 0 by default
        for token, following in successor.items():
            head[following, token] = 10.0
    return model


def chain(ids: Sequence[int]) -> dict[int, int]:
    """The successor map that makes a scripted model continue ``ids[0]`` with ``ids[1:]``."""
    successor: dict[int, int] = {}
    for token, following in zip(ids, ids[1:], strict=False):
        assert successor.get(token, following) == following, f"token {token} repeats with another successor"
        successor[token] = following
    return successor
