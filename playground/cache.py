"""A KV cache that appends in place: decoding step t costs O(1) cache writes, not O(t) copies.

transformers' ``DynamicLayer.update`` appends by ``torch.cat``, which copies the whole layer
cache every step: at 8 columns (9 rows) and 1,000 tokens that is ~400 MB of copying per step
for the default model, on top of attention's own read. A ``GrowingLayer`` keeps its keys and
values as views of buffers with room to spare and writes new positions into them; a buffer
that is full grows by doubling, up to the positions the run can reach (``capacity_limit``: the
prompt plus ``max_new_tokens``), so memory stays that of the cache the run asks for.

Everything else is ``DynamicLayer``'s: ``keys``/``values`` are ordinary [rows, heads, n, dim]
tensors (views), so attention, ``crop`` and in-place edits (Phase-Slip's perturbation, the side
rows' re-sync) work unchanged. A re-index (``batch_select_indices``: a lookahead's rows come or go)
selects the rows straight into a fresh buffer with the same room, one copy of the cache (on the CPU;
an accelerator's goes through a compact copy); stock's advanced indexing makes a compact copy, which
the next update would copy again, and on a 2-core CPU it takes 4-5x longer than ``index_select``.
"""
from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A DynamicLayer whose update writes into spare room instead of concatenating."""

    def __init__(self, capacity_limit: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.capacity_limit = capacity_limit  # positions the run can reach; None: double without a cap
        self.key_buffer = self.value_buffer = None

    def _has_room(self, buffer: torch.Tensor | None, view: torch.Tensor, needed: int) -> bool:
        """``view`` is still the head of ``buffer`` (no re-index replaced it) and ``needed`` positions fit."""
        return (buffer is not None and view.dim() == 4 and view.data_ptr() == buffer.data_ptr()
                and view.shape[:2] == buffer.shape[:2] and view.stride() == buffer.stride()
                and buffer.shape[2] >= needed)

    def _capacity(self, needed: int) -> int:
        return 2 * needed if self.capacity_limit is None else max(needed, min(2 * needed, self.capacity_limit))

    def _grow(self, old: torch.Tensor, new: torch.Tensor, needed: int) -> torch.Tensor:
        buffer = new.new_empty((*new.shape[:2], self._capacity(needed), new.shape[3]))
        if old.numel():
            buffer[:, :, :old.shape[2]] = old
        return buffer

    def _selected(self, buffer: torch.Tensor | None, view: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """A fresh buffer (the old one's room, or room to grow) whose head holds ``view``'s rows ``indices``."""
        length = view.shape[2]
        capacity = buffer.shape[2] if self._has_room(buffer, view, length + 1) else self._capacity(length + 1)
        selected = view.new_empty((indices.shape[0], view.shape[1], capacity, view.shape[3]))
        if view.is_cpu:
            torch.index_select(view, 0, indices, out=selected[:, :, :length])
        else:  # an accelerator's index_select may not write into a strided view: a compact copy, then in
            selected[:, :, :length] = view.index_select(0, indices)
        return selected

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``, in that order: one copy, into a buffer the next update writes into."""
        if not self.get_seq_length() or self.keys.dim() != 4:
            return super().batch_select_indices(indices)
        length = self.keys.shape[2]
        self.key_buffer = self._selected(self.key_buffer, self.keys, indices)
        self.value_buffer = self._selected(self.value_buffer, self.values, indices)
        self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.key_buffer = self.value_buffer = None
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        room = self._has_room(self.key_buffer, self.keys, end) and self._has_room(self.value_buffer, self.values, end)
        if not room:
            self.key_buffer = self._grow(self.keys, key_states, end)
            self.value_buffer = self._grow(self.values, value_states, end)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


def growing_cache(config: Any, capacity_limit: int | None = None) -> DynamicCache:
    """A DynamicCache for ``config`` whose full-attention layers are GrowingLayers (sliding ones stay as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(capacity_limit) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
