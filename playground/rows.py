"""The rows of each step's one batched forward pass, and the KV cache kept in step with them.

    main row   one per running column: its clean cache, fed the column's newest token
    side row   a sampler's perturbed copy of its column's clean row (Phase-Slip's extra_rows), fed
               the same token; its outputs are the sampler's only, and it is re-synced from the
               clean row where it may differ (O(window), not O(context)) before the sampler perturbs it
    cand row   one per lookahead candidate token (Decision.candidates); the chosen one simply
               continues as the column's main row, so a lookahead costs rows, never a pass

All rows share one length (every row grows by one token per step): no padding, no mask. The
cache rows are re-indexed (DynamicCache.batch_select_indices) only when the layout changes: a
column ends, a side row appears, a lookahead starts or ends.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Row:
    """One row of the next forward pass."""

    col: int
    kind: str  # "main", "side" or "cand"
    source: int  # cache row it continues
    token: int  # token fed to it
    index: int = 0  # side-row number, or candidate number
    dirty_from: int | None = None  # side rows: first position that may differ from the clean row


class RowPlan:
    """The cache and the row layout of the last forward pass; ``plan`` makes the next one."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.layout: list[Row] = [Row(col=-1, kind="main", source=0, token=-1)]  # the prefill's one row

    def plan(self, columns: list[Any], main: dict[int, int], n_prompt: int) -> list[Row]:
        """The rows of the next forward pass, and the cache re-indexed to match them."""
        length = self.cache.get_seq_length()
        old_sides = {(r.col, r.index): (i, r) for i, r in enumerate(self.layout) if r.kind == "side"}
        rows: list[Row] = []
        for c, col in enumerate(columns):
            if col.done:
                continue
            if col._pending is not None:
                rows += [Row(c, "cand", main[c], tok, k) for k, tok in enumerate(col._pending["candidates"])]
                continue
            rows.append(Row(c, "main", main[c], col.tokens[-1]))
            for j in range(col.sampler.extra_rows):
                if (c, j) in old_sides:  # keep the side row; only its changed tail needs re-syncing
                    i, old = old_sides[(c, j)]
                    rows.append(Row(c, "side", i, col.tokens[-1], j, min(old.dirty_from, length - 1)))
                else:  # a fresh copy of the clean row
                    rows.append(Row(c, "side", main[c], col.tokens[-1], j, length))
        sources = [r.source for r in rows]
        if sources != list(range(len(self.layout))):
            self.cache.batch_select_indices(torch.tensor(sources, device=self.cache.layers[0].keys.device))
        self._sync_sides(columns, rows, length, n_prompt)
        self.layout = rows
        return rows

    def _sync_sides(self, columns: list[Any], rows: list[Row], length: int, n_prompt: int) -> None:
        """Make each side row a copy of its clean row, then let its sampler perturb it."""
        clean_of = {r.col: i for i, r in enumerate(rows) if r.kind == "main"}
        layers = self.cache.layers
        for i, r in enumerate(rows):
            if r.kind != "side":
                continue
            src, start = clean_of[r.col], r.dirty_from
            if start < length:
                for layer in layers:
                    layer.keys[i, :, start:] = layer.keys[src, :, start:]
                    layer.values[i, :, start:] = layer.values[src, :, start:]
            col = columns[r.col]
            changed = col.sampler.perturb([layer.values[i] for layer in layers], n_prompt, len(col.tokens))
            r.dirty_from = length - changed if changed else length

    def roles(self) -> tuple[dict[int, int], dict[int, list[int]], dict[int, list[int]]]:
        """Per column: its main row, its side rows and its candidate rows in the last layout."""
        main: dict[int, int] = {}
        sides: dict[int, list[int]] = {}
        cands: dict[int, list[int]] = {}
        for i, r in enumerate(self.layout):
            if r.kind == "main":
                main[r.col] = i
            elif r.kind == "side":
                sides.setdefault(r.col, []).append(i)
            else:
                cands.setdefault(r.col, []).append(i)
        return main, sides, cands
