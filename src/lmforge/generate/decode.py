"""Autoregressive decoding: one prefill over the prompt, then one token at a time over the KV cache.

Works for decoder-only models (left-padded batches) and encoder-decoder models (the encoder runs
once; the decoder starts from ``decoder_start_token_id``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmforge.errors import ConfigError
from lmforge.models import KVCache, TransformerModel


@dataclass
class GenerationConfig:
    """How to pick tokens. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    eos_token_id: int | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


def _pick(logits: Tensor, config: GenerationConfig, generator: torch.Generator | None) -> Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if config.temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / config.temperature
    if config.top_k is not None:
        kth = torch.topk(logits, min(config.top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if config.top_p is not None:
        sorted_logits, order = logits.sort(descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > config.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@torch.inference_mode()
def generate(
    model: TransformerModel,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    config: GenerationConfig | None = None,
) -> Tensor:
    """Continue each prompt; returns only the new tokens (B, <= max_new_tokens).

    Args:
        input_ids: (B, T) prompts, LEFT-padded when lengths differ (decoder-only models).
        attention_mask: (B, T) 1 for real tokens.
    """
    config = config or GenerationConfig()
    if model.lm_head is None:
        raise ConfigError(f"generation needs an LM head; this model's head is {model.config.head!r}")
    eos = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
    generator = (
        torch.Generator(device=input_ids.device).manual_seed(config.seed) if config.seed is not None else None
    )
    batch = input_ids.shape[0]
    mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
    cache = KVCache()
    if model.config.is_encoder_decoder:
        memory = model.encode(input_ids, mask)
        start = model.config.decoder_start_token_id or 0
        step_ids = torch.full((batch, 1), start, dtype=torch.long, device=input_ids.device)
        step_mask = None
    else:
        memory = None
        step_ids, step_mask = input_ids, mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding shifts positions
    done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    new_tokens: list[Tensor] = []
    for _ in range(config.max_new_tokens):
        if memory is None:
            step_positions = positions if not new_tokens else positions[:, -1:]
            out = model(step_ids, step_mask, position_ids=step_positions, past_key_values=cache)
        else:
            out = model(
                input_ids,
                mask,
                decoder_input_ids=step_ids,
                encoder_hidden_states=memory,
                past_key_values=cache,
            )
        assert out.logits is not None
        token = _pick(out.logits[:, -1], config, generator)
        if eos is not None:
            token = token.masked_fill(done, eos)
            done |= token == eos
        new_tokens.append(token)
        step_ids = token[:, None]
        if memory is None:
            mask = torch.cat((mask, torch.ones_like(step_ids)), dim=1)
            positions = torch.cat((positions, positions[:, -1:] + 1), dim=1)
            step_mask = mask
        if bool(done.all()):
            break
    if not new_tokens:
        return input_ids.new_zeros((batch, 0))
    return torch.stack(new_tokens, dim=1)
