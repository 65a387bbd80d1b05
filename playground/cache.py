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
copies only the rows that change, within the buffer, where it has the rows (a buffer that grows in
rows keeps room for as many more); otherwise it selects the rows straight into a fresh buffer with
the same room, one copy of the cache (on the CPU; an accelerator's goes through a compact copy).
Stock's advanced indexing makes a compact copy of every row, which the next update would copy again.
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

    def _has_room(self, buffer: torch.Tensor | None, view: torch.Tensor, needed: int, rows: int = 0) -> bool:
        """``view`` is still the head of ``buffer`` (no re-index replaced it), ``needed`` positions fit, and
        ``rows`` rows (default: the view's)."""
        return (buffer is not None and view.dim() == 4 and view.data_ptr() == buffer.data_ptr()
                and view.shape[1] == buffer.shape[1] and view.stride() == buffer.stride()
                and buffer.shape[0] >= max(rows, view.shape[0]) and buffer.shape[2] >= needed)

    def _capacity(self, needed: int) -> int:
        return 2 * needed if self.capacity_limit is None else max(needed, min(2 * needed, self.capacity_limit))

    def _grow(self, old: torch.Tensor, new: torch.Tensor, needed: int) -> torch.Tensor:
        buffer = new.new_empty((*new.shape[:2], self._capacity(needed), new.shape[3]))
        if old.numel():
            buffer[:, :, :old.shape[2]] = old
        return buffer

    def _selected(self, buffer: torch.Tensor | None, view: torch.Tensor, indices: torch.Tensor,
                  moved: torch.Tensor) -> torch.Tensor:
        """A buffer whose head holds ``view``'s rows ``indices``: ``buffer`` itself, its rows ``moved`` (those
        that change) written from a copy of their sources, where it has the rows and room for one more
        position and the rows fill more than half of it; else a fresh one (the old room or room to grow;
        rows for as many more as are added), so rows that went give their memory back."""
        rows, length = indices.shape[0], view.shape[2]
        if self._has_room(buffer, view, length + 1, rows) and 2 * rows > buffer.shape[0]:
            if moved.numel():
                buffer[:rows, :, :length][moved] = view.index_select(0, indices[moved])
            return buffer
        capacity = buffer.shape[2] if self._has_room(buffer, view, length + 1) else self._capacity(length + 1)
        spare = rows - view.shape[0] if view.shape[0] > 1 else 0  # a lookahead that came may come again
        selected = view.new_empty((rows + max(0, spare), view.shape[1], capacity, view.shape[3]))
        if view.is_cpu:
            torch.index_select(view, 0, indices, out=selected[:rows, :, :length])
        else:  # an accelerator's index_select may not write into a strided view: a compact copy, then in
            selected[:rows, :, :length] = view.index_select(0, indices)
        return selected

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``, in that order, in a buffer the next update writes into."""
        if not self.get_seq_length() or self.keys.dim() != 4:
            return super().batch_select_indices(indices)
        rows, length = indices.shape[0], self.keys.shape[2]
        moved = torch.nonzero(indices != torch.arange(rows, device=indices.device)).flatten()
        self.key_buffer = self._selected(self.key_buffer, self.keys, indices, moved)
        self.value_buffer = self._selected(self.value_buffer, self.values, indices, moved)
        self.keys, self.values = self.key_buffer[:rows, :, :length], self.value_buffer[:rows, :, :length]

    def append_rows(self, keys: torch.Tensor, values: torch.Tensor, spare_rows: int = 0) -> None:
        """``keys``/``values`` [rows, heads, n, dim] (this layer's length) as rows after this layer's, in one
        buffer with room for ``spare_rows`` more rows and for the positions to come: one copy of each row."""
        rows, length = self.keys.shape[0], self.keys.shape[2]
        total = rows + keys.shape[0]
        if self._has_room(self.key_buffer, self.keys, length):  # rows joined before, whose first step is to come
            spare_rows += self.key_buffer.shape[0] - rows
        buffers = []
        for view, new in ((self.keys, keys), (self.values, values)):
            buffer = view.new_empty((total + spare_rows, view.shape[1], self._capacity(length + 1), view.shape[3]))
            buffer[:rows, :, :length] = view
            buffer[rows:total, :, :length] = new
            buffers.append(buffer)
        self.key_buffer, self.value_buffer = buffers
        self.keys, self.values = self.key_buffer[:total, :, :length], self.value_buffer[:total, :, :length]

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
        rows = key_states.shape[0]
        self.key_buffer[:rows, :, start:end] = key_states
        self.value_buffer[:rows, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:rows, :, :end], self.value_buffer[:rows, :, :end]
        return self.keys, self.values


def growing_cache(config: Any, capacity_limit: int | None = None) -> DynamicCache:
    """A DynamicCache for ``config`` whose full-attention layers are GrowingLayers (sliding ones stay as they are)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(capacity_limit) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
