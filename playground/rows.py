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

A step, in order: ``next_rows`` lays out the rows each column asks for (a ``RowRequest``),
``move_to`` re-indexes the cache to them and re-syncs the side rows, the caller lets each
side row's sampler perturb ``values_of(row)`` and records it with ``mark_perturbed``; after
the forward, ``roles`` says which rows are whose, and ``keep_candidate`` makes a lookahead's
chosen row its column's main row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

RowKind = Literal["main", "side", "cand"]


@dataclass
class RowRequest:
    """What one running column feeds to the next pass."""

    col: int
    source: int  # its main row in the last layout
    token: int  # its newest token (main and side rows)
    side_rows: int = 0  # copies of its clean row for its sampler to perturb
    candidates: list[int] | None = None  # a lookahead: one row per candidate instead


@dataclass
class Row:
    """One row of the next forward pass."""

    col: int
    kind: RowKind
    source: int  # cache row it continues
    token: int  # token fed to it
    index: int = 0  # side-row number, or candidate number
    dirty_from: int | None = None  # side rows: first position that may differ from the clean row


class RowPlan:
    """The cache and the row layout of the last forward pass."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.layout: list[Row] = [Row(col=-1, kind="main", source=0, token=-1)]  # the prefill's one row
        self.own_order_parameter: torch.Tensor | None = None  # the model's own R per row of the last pass (PhaseGPT)

    def next_rows(self, requests: list[RowRequest]) -> list[Row]:
        """The rows of the next forward pass; a side row kept from the last layout keeps its dirty tail."""
        length = self.cache.get_seq_length()
        old_sides = {(r.col, r.index): (i, r) for i, r in enumerate(self.layout) if r.kind == "side"}
        rows: list[Row] = []
        for q in requests:
            if q.candidates is not None:
                rows += [Row(q.col, "cand", q.source, tok, k) for k, tok in enumerate(q.candidates)]
                continue
            rows.append(Row(q.col, "main", q.source, q.token))
            for j in range(q.side_rows):
                if (q.col, j) in old_sides:  # keep the side row; only its changed tail needs re-syncing
                    i, old = old_sides[(q.col, j)]
                    rows.append(Row(q.col, "side", i, q.token, j, min(old.dirty_from, length - 1)))
                else:  # a fresh copy of the clean row
                    rows.append(Row(q.col, "side", q.source, q.token, j, length))
        return rows

    def move_to(self, rows: list[Row]) -> None:
        """Re-index the cache to ``rows`` (only when the layout changed) and re-sync their side rows."""
        sources = [r.source for r in rows]
        if sources != list(range(len(self.layout))):
            self.cache.batch_select_indices(torch.tensor(sources, device=self.cache.layers[0].keys.device))
        self._copy_clean_into_sides(rows)
        self.layout = rows

    def _copy_clean_into_sides(self, rows: list[Row]) -> None:
        """Each side row's positions from ``dirty_from`` on become its clean row's again."""
        length = self.cache.get_seq_length()
        clean_of = {r.col: i for i, r in enumerate(rows) if r.kind == "main"}
        for i, r in enumerate(rows):
            if r.kind != "side" or r.dirty_from >= length:
                continue
            src, start = clean_of[r.col], r.dirty_from
            for layer in self.cache.layers:
                layer.keys[i, :, start:] = layer.keys[src, :, start:]
                layer.values[i, :, start:] = layer.values[src, :, start:]
            r.dirty_from = length

    def side_rows(self) -> list[int]:
        """The indices of the side rows in the current layout."""
        return [i for i, r in enumerate(self.layout) if r.kind == "side"]

    def values_of(self, row: int) -> list[torch.Tensor]:
        """Row ``row``'s Value vectors per layer, [kv_heads, seq, head_dim] views a sampler edits in place."""
        return [layer.values[row] for layer in self.cache.layers]

    def mark_perturbed(self, row: int, changed: int) -> None:
        """Row ``row``'s last ``changed`` positions now differ from its clean row."""
        length = self.cache.get_seq_length()
        self.layout[row].dirty_from = length - changed if changed else length

    def keep_candidate(self, row: int) -> None:
        """Candidate row ``row`` was chosen: it continues as its column's main row."""
        self.layout[row].kind = "main"

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
