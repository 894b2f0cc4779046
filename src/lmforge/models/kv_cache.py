"""The key/value cache of incremental decoding."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of past positions, per layer, for incremental decoding.

    Self-attention entries grow by concatenation; cross-attention entries (encoder-decoder) are
    computed once from the encoder output and reused.
    """

    def __init__(self) -> None:
        self.self_kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.cross_kv: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        return next(iter(self.self_kv.values()))[0].shape[2] if self.self_kv else 0

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        if layer in self.self_kv:
            past_key, past_value = self.self_kv[layer]
            key, value = torch.cat((past_key, key), dim=2), torch.cat((past_value, value), dim=2)
        self.self_kv[layer] = (key, value)
        return key, value

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search)."""
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, index), v.index_select(0, index))
