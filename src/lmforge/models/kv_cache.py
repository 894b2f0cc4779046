"""Key/value caches of incremental decoding: a growing one and a preallocated (static) one."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Keys and values of past positions, per layer, for incremental decoding.

    Self-attention entries grow by concatenation; cross-attention entries (encoder-decoder) are
    computed once from the encoder output and reused. Good for scoring and short continuations;
    the generation engine uses :class:`StaticKVCache`.
    """

    def __init__(self) -> None:
        self.self_kv: dict[int, tuple[Tensor, Tensor]] = {}
        self.cross_kv: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def length(self) -> int:
        """Number of positions already cached."""
        return next(iter(self.self_kv.values()))[0].shape[2] if self.self_kv else 0

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``key``/``value`` (B, nkv, T, hd) of ``layer``; return all its keys/values so far."""
        if layer in self.self_kv:
            past_key, past_value = self.self_kv[layer]
            key, value = torch.cat((past_key, key), dim=2), torch.cat((past_value, value), dim=2)
        self.self_kv[layer] = (key, value)
        return key, value

    def advance(self, length: int) -> None:
        """Called by the stack after every layer has stored ``length`` new positions (a growing
        cache derives its length from its tensors, so there is nothing to do)."""

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search, ``n`` samples per prompt): row i becomes row ``index[i]``."""
        for store in (self.self_kv, self.cross_kv):
            for layer, (k, v) in store.items():
                store[layer] = (k.index_select(0, index), v.index_select(0, index))


class StaticKVCache(KVCache):
    """A cache preallocated for ``capacity`` positions (gpt-fast style): no copy per token.

    Each layer's buffers (B, nkv, capacity, hd) are created on its first update; new keys are
    written in place and attention reads a view of the filled part. :meth:`rollback` forgets the
    last positions (rejected speculative tokens) without touching memory.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._length = 0
        self._buffers: dict[int, tuple[Tensor, Tensor]] = {}

    @property
    def length(self) -> int:
        return self._length

    def update(self, layer: int, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        start, end = self._length, self._length + key.shape[2]
        if end > self.capacity:
            raise RuntimeError(f"static KV cache full: {end} positions > capacity {self.capacity}")
        if layer not in self._buffers:
            shape = (key.shape[0], key.shape[1], self.capacity, key.shape[3])
            self._buffers[layer] = (key.new_empty(shape), value.new_empty(shape))
        key_buffer, value_buffer = self._buffers[layer]
        key_buffer[:, :, start:end] = key
        value_buffer[:, :, start:end] = value
        view = (key_buffer[:, :, :end], value_buffer[:, :, :end])
        self.self_kv[layer] = view
        return view

    def advance(self, length: int) -> None:
        self._length += length

    def rollback(self, length: int) -> None:
        """Forget the last ``length`` positions."""
        self._length -= length
        for layer, (k, v) in self._buffers.items():
            self.self_kv[layer] = (k[:, :, : self._length], v[:, :, : self._length])

    def reorder(self, index: Tensor) -> None:
        for layer, (k, v) in self._buffers.items():
            self._buffers[layer] = (k.index_select(0, index), v.index_select(0, index))
        for layer, (k, v) in self.cross_kv.items():
            self.cross_kv[layer] = (k.index_select(0, index), v.index_select(0, index))
        self.rollback(0)
