"""A key/value cache that decodes without copying itself at every step.

transformers' `DynamicLayer` appends each step's keys and values with `torch.cat`, which copies the whole cache
of the layer every time a token is decoded. On the embedded model at an analysis's context (700 tokens) those
copies were 13 % of a decode step on a CPU, and they grow with the batch and the context. `GrowingLayer` keeps
its keys and values in a buffer with room to spare and writes each step into it; `keys` and `values` are views of
the filled part, so attention sees exactly what `DynamicLayer` would give it. When the buffer is full it moves to
one `SPARE_FRACTION` larger (at least `SPARE_TOKENS` larger), so a copy happens once every many steps.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

SPARE_TOKENS = 64
SPARE_FRACTION = 1 / 8


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose `update` writes into a preallocated buffer instead of concatenating."""

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        if not self._holds_its_keys():  # states set from outside: a prefilled cache, `crop`, a batch selection
            self._key_buffer = self._value_buffer = None
        end = length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2] or not self._fits(key_states):
            self._move_to_buffers(length, end, key_states, value_states)
        self._key_buffer[..., length:end, :] = key_states
        self._value_buffer[..., length:end, :] = value_states
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def capacity(self) -> int:
        """Tokens the buffer holds before it has to move (0 before the first update)."""
        return 0 if self._key_buffer is None else self._key_buffer.shape[-2]

    def _holds_its_keys(self) -> bool:
        buffer = self._key_buffer
        return (buffer is not None and self.keys.data_ptr() == buffer.data_ptr()
                and self.keys.shape[:-2] == buffer.shape[:-2] and self.keys.stride() == buffer.stride())

    def _fits(self, states: torch.Tensor) -> bool:
        buffer = self._key_buffer
        return (buffer.shape[:-2] == states.shape[:-2] and buffer.shape[-1] == states.shape[-1]
                and buffer.dtype == states.dtype and buffer.device == states.device)

    def _move_to_buffers(self, length: int, needed: int, key_states: torch.Tensor, value_states: torch.Tensor):
        """New buffers for `needed` tokens and spare room, holding the `length` tokens cached so far."""
        capacity = needed + max(SPARE_TOKENS, int(needed * SPARE_FRACTION))
        buffers = []
        for old, new in ((self.keys, key_states), (self.values, value_states)):
            buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if length:
                buffer[..., :length, :] = old
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers


def growing_cache(cache: DynamicCache) -> DynamicCache:
    """`cache` with each plain `DynamicLayer` turned into a `GrowingLayer`, keeping what it holds (in place)."""
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = GrowingLayer
    return cache
