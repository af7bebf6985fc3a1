"""A conversation's KV cache that appends in place.

transformers' ``DynamicLayer`` concatenates on every update, so each decoded token copies the
layer's whole history: at 100K tokens that is the whole cache (about 13 GB on the real model)
for every token of every reply. ``RoomyLayer`` keeps spare room after its tokens and writes new
ones into it, growing by a quarter when it runs out, so a token costs its attention and not a
copy of the conversation. The room is memory the cache holds beyond its tokens: at most a
quarter more, kept after a crop until the cache goes.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig
from transformers.cache_utils import DynamicLayer

ROOM_FRACTION = 0.25
MIN_ROOM_TOKENS = 256


class RoomyLayer(DynamicLayer):  # type: ignore[misc]
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self._room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        total = length + key_states.shape[-2]
        room = self._room
        if room is None or total > room[0].shape[-2] or not self._in(room):
            room = self._grow(key_states, value_states, length, total)
        keys, values = room
        keys[..., length:total, :] = key_states
        values[..., length:total, :] = value_states
        self.keys, self.values = keys[..., :total, :], values[..., :total, :]
        return self.keys, self.values

    def _in(self, room: tuple[torch.Tensor, torch.Tensor]) -> bool:
        """Whether the tokens are still the room's (a crop keeps them there; transformers'
        batch reshuffles replace them)."""
        keys = self.keys
        return keys is not None and (keys.numel() == 0 or keys.data_ptr() == room[0].data_ptr())

    def _grow(
        self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, total: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        capacity = total + max(int(total * ROOM_FRACTION), MIN_ROOM_TOKENS)
        keys = key_states.new_empty((*key_states.shape[:-2], capacity, key_states.shape[-1]))
        values = value_states.new_empty(
            (*value_states.shape[:-2], capacity, value_states.shape[-1])
        )
        if length and self.keys is not None and self.values is not None:
            keys[..., :length, :] = self.keys
            values[..., :length, :] = self.values
        self._room = (keys, values)
        return self._room


def conversation_cache(config: PretrainedConfig) -> DynamicCache:
    """transformers' cache for ``config``, its full-attention layers appending in place."""
    cache = DynamicCache(config=config)
    cache.layers = [
        RoomyLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache
