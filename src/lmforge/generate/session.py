"""One batch's decoding state: prefill once, then decode steps over a static KV cache.

Decoder-only prompts are normalised to left padding (right- or mixed-padded rows are shifted, so
every row's last prompt token sits in the last column and positions count real tokens only).
Encoder-decoder models run the encoder once; the decoder's cross-attention keys/values are
cached on the first step. Logits are computed for the positions asked for only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmforge.errors import ShapeError
from lmforge.models import TransformerModel
from lmforge.models.kv_cache import StaticKVCache


def left_align(input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move each row's padding to the left, keeping the order of its real tokens."""
    order = torch.argsort(attention_mask.to(torch.int8), dim=1, stable=True)  # padding (0) first
    return input_ids.gather(1, order), attention_mask.gather(1, order)


class DecodeSession:
    """Prefill / decode over a preallocated cache for ``input_ids`` (B, T) and ``max_new_tokens``.

    Args:
        input_ids: (B, T) prompts (decoder-only) or sources (encoder-decoder), padded on any side.
        attention_mask: (B, T) 1 for real tokens; None: no padding.
        capacity: new positions the cache must hold beyond the prompt.
    """

    def __init__(
        self, model: TransformerModel, input_ids: Tensor, attention_mask: Tensor | None, capacity: int
    ) -> None:
        if input_ids.dim() != 2:
            raise ShapeError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        mask = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        if mask.shape != input_ids.shape:
            raise ShapeError(
                f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(input_ids.shape)}"
            )
        self.model = model
        self.encoder_decoder = model.config.is_encoder_decoder
        if not self.encoder_decoder and not bool(mask.any(-1).all()):
            raise ShapeError(
                "every prompt needs at least one real token (a row of the attention_mask is all 0)"
            )
        self.padded = not bool(mask.all())
        if not self.encoder_decoder and self.padded:
            input_ids, mask = left_align(input_ids, mask)
        self.input_ids, self.prompt_mask = input_ids, mask
        batch, length = input_ids.shape
        prompt_positions = 0 if self.encoder_decoder else length
        self.cache = StaticKVCache(prompt_positions + capacity + 1)
        self.mask = torch.zeros(batch, self.cache.capacity, dtype=torch.bool, device=input_ids.device)
        self.mask[:, :prompt_positions] = mask if not self.encoder_decoder else True
        self.next_position = mask.sum(-1) if not self.encoder_decoder else input_ids.new_zeros(batch)
        self.memory: Tensor | None = None
        self.memory_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.mask.shape[0]

    def prefill(self) -> Tensor:
        """Run the prompt; logits (B, V) for the first new token."""
        model = self.model
        if self.encoder_decoder:
            self.memory_mask = self.prompt_mask.long() if self.padded else None
            self.memory = model.encode(self.input_ids, self.memory_mask)
            start = model.config.decoder_start_token_id or 0
            return self.step(self.input_ids.new_full((self.batch_size, 1), start))[:, -1]
        positions = (self.prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
        mask = self.prompt_mask.long() if self.padded else None
        hidden = model.encode(self.input_ids, mask, position_ids=positions, cache=self.cache)
        return self._logits(hidden[:, -1:])[:, -1]

    def step(self, tokens: Tensor) -> Tensor:
        """Feed (B, k) tokens; logits (B, k, V), the last one predicting the next token."""
        model, past, count = self.model, self.cache.length, tokens.shape[1]
        if self.encoder_decoder:
            x = model.embeddings(tokens, past=past)
            assert model.decoder is not None and self.memory is not None
            hidden = model.decoder(x, None, None, self.cache, self.memory, self.memory_mask)
        else:
            self.mask[:, past : past + count] = True
            mask = self.mask[:, : past + count].long() if self.padded else None
            offsets = torch.arange(count, device=tokens.device)
            positions = self.next_position[:, None] + offsets
            hidden = model.encode(tokens, mask, position_ids=positions, cache=self.cache)
        self.next_position = self.next_position + count
        return self._logits(hidden)

    def rollback(self, count: int) -> None:
        """Forget the last ``count`` fed tokens (rejected speculative drafts)."""
        if count:
            self.cache.rollback(count)
            self.next_position = self.next_position - count

    def reorder(self, index: Tensor) -> None:
        """Keep / repeat batch rows: row i becomes old row ``index[i]`` (samples, beams)."""
        self.cache.reorder(index)
        self.mask, self.next_position = self.mask[index], self.next_position[index]
        self.input_ids, self.prompt_mask = self.input_ids[index], self.prompt_mask[index]
        if self.memory is not None:
            self.memory = self.memory[index]
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask[index]

    def _logits(self, hidden: Tensor) -> Tensor:
        assert self.model.lm_head is not None
        return self.model.lm_head(hidden)
