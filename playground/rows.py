"""The rows of each step's one batched forward pass, and the KV cache kept in step with them.

    main row   one per running column: its clean cache, fed the column's newest token
    side row   a sampler's perturbed copy of its column's clean row (Phase-Slip's extra_rows), fed
               the same token; its outputs are the sampler's only, and it is re-synced from the
               clean row where it may differ (O(window), not O(context)) before the sampler perturbs it
    cand row   one per lookahead candidate token (Decision.candidates); the chosen one simply
               continues as the column's main row, so a lookahead costs rows, never a pass

All rows share one length (every row grows by one token per step): no padding, no mask within a
run. The shared loop (shared_loop.py) lays one RowPlan over many runs' rows, their cache left-padded
to one length, and gives the pass the padding mask itself. The cache rows are re-indexed (each
layer's batch_select_indices) only when the layout changes: a column ends, a side row appears, a
lookahead starts or ends. A row that continues one of the last layout keeps its place, new rows take
the places of rows that went, and the last rows fill what is left (``_placed``): a re-index copies
the rows that changed, not every row after them (a growing cache copies no others, cache.py).

Where side rows join. A side row differs from its clean row only from the lowest layer its
sampler changes (``RowRequest.side_layer``; Phase-Slip's lowest perturbed layer). Where the model
allows it (``LoadedModel.joins_side_rows``), a pass's side rows join it at the lowest such layer
of its side rows (``join_layer``): below it the pass has the other rows only, and the cache's
layers below it hold those rows only (a side row's cache there is its clean row's); from it on,
the pass and every cache layer hold every row of the layout, in layout order. ``pass_rows`` says
which rows the pass is fed and where the side rows join it (model_changes.SideRowJoin).

A step, in order: ``next_rows`` lays out the rows each column asks for (a ``RowRequest``),
``move_to`` re-indexes the cache to them and re-syncs the side rows, the caller lets each
side row's sampler perturb ``values_of(row)`` and records it with ``mark_perturbed``, and feeds
``pass_rows``' rows to the forward; after it, ``roles`` says which rows are whose, and
``keep_candidate`` makes a lookahead's chosen row its column's main row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from .model_changes import SideRowJoin

RowKind = Literal["main", "side", "cand"]


@dataclass
class RowRequest:
    """What one running column feeds to the next pass."""

    col: int
    source: int  # its main row in the last layout
    token: int  # its newest token (main and side rows)
    side_rows: int = 0  # copies of its clean row for its sampler to perturb
    candidates: list[int] | None = None  # a lookahead: one row per candidate instead
    side_layer: int = 0  # the lowest layer where its side rows may differ from its clean row (0: any)


@dataclass
class Row:
    """One row of the next forward pass."""

    col: int
    kind: RowKind
    source: int  # cache row it continues
    token: int  # token fed to it
    index: int = 0  # side-row number, or candidate number
    dirty_from: int | None = None  # side rows: first position that may differ from the clean row
    side_layer: int = 0  # side rows: the lowest layer where it may differ from the clean row


class RowPlan:
    """The cache and the row layout of the last forward pass."""

    def __init__(self, cache: Any):
        self.cache = cache
        self.layout: list[Row] = [Row(col=-1, kind="main", source=0, token=-1)]  # the prefill's one row
        self.join_layer = 0  # where the layout's side rows join the pass (0: every layer holds every row)
        self.own_order_parameter: torch.Tensor | None = None  # the model's own R per row of the last pass (PhaseGPT)

    def next_rows(self, requests: list[RowRequest]) -> list[Row]:
        """The rows of the next forward pass; a side row kept from the last layout keeps its dirty tail."""
        length = self.cache.get_seq_length()
        joins = [q.side_layer for q in requests if q.side_rows and q.candidates is None]
        # a kept side row needs its own cache at every layer from the new join on
        keep = joins and min(joins) >= self.join_layer
        old_sides = {(r.col, r.index): (i, r) for i, r in enumerate(self.layout) if r.kind == "side"} if keep else {}
        rows: list[Row] = []
        for q in requests:
            if q.candidates is not None:
                rows += [Row(q.col, "cand", q.source, tok, k) for k, tok in enumerate(q.candidates)]
                continue
            rows.append(Row(q.col, "main", q.source, q.token))
            for j in range(q.side_rows):
                if (q.col, j) in old_sides:  # keep the side row; only its changed tail needs re-syncing
                    i, old = old_sides[(q.col, j)]
                    rows.append(Row(q.col, "side", i, q.token, j, min(old.dirty_from, length - 1), q.side_layer))
                else:  # a fresh copy of the clean row
                    rows.append(Row(q.col, "side", q.source, q.token, j, length, q.side_layer))
        return self._placed(rows, {i for i, _ in old_sides.values()})

    def _placed(self, rows: list[Row], kept_sides: set[int]) -> list[Row]:
        """``rows`` in the places that move the fewest cache rows: a main row, a kept side row and a lookahead's
        first candidate stay where the row they continue was; the other rows, then those whose place lies
        past the new end, take the free places in order."""
        staying: dict[int, Row] = {}
        others: list[Row] = []
        for r in rows:
            continues = r.kind == "main" or (r.kind == "cand" and r.index == 0) or \
                (r.kind == "side" and r.source in kept_sides)
            if continues and r.source not in staying:
                staying[r.source] = r
            else:
                others.append(r)
        placed: list[Row | None] = [None] * len(rows)
        for place, r in staying.items():
            if place < len(rows):
                placed[place] = r
            else:
                others.append(r)
        free = iter(i for i, r in enumerate(placed) if r is None)
        for r in others:
            placed[next(free)] = r
        return placed

    @staticmethod
    def _join_layer(rows: list[Row]) -> int:
        """Where ``rows``' side rows join the pass: the lowest of their layers (0 without side rows)."""
        return min((r.side_layer for r in rows if r.kind == "side"), default=0)

    @staticmethod
    def _held(rows: list[Row], below_join: bool) -> list[int]:
        """The rows of ``rows`` a cache layer holds, in order: below the join, all but the side rows."""
        return [i for i, r in enumerate(rows) if not (below_join and r.kind == "side")]

    def move_to(self, rows: list[Row]) -> None:
        """Re-index the cache to ``rows`` (only when the layout changed) and re-sync their side rows."""
        join = self._join_layer(rows)
        device = self.cache.layers[0].keys.device
        chosen: dict[tuple[bool, bool], torch.Tensor | None] = {}  # per (below the old join, below the new)
        for index, layer in enumerate(self.cache.layers):
            key = (index < self.join_layer, index < join)
            if key not in chosen:
                held = {row: k for k, row in enumerate(self._held(self.layout, key[0]))}
                sources = [held[rows[i].source] for i in self._held(rows, key[1])]
                chosen[key] = None if sources == list(range(len(held))) else torch.tensor(sources, device=device)
            if chosen[key] is not None:
                layer.batch_select_indices(chosen[key])
        self.layout, self.join_layer = rows, join
        self._copy_clean_into_sides(rows)

    def _copy_clean_into_sides(self, rows: list[Row]) -> None:
        """Each side row's positions from ``dirty_from`` on become its clean row's again."""
        length = self.cache.get_seq_length()
        clean_of = {r.col: i for i, r in enumerate(rows) if r.kind == "main"}
        for i, r in enumerate(rows):
            if r.kind != "side" or r.dirty_from >= length:
                continue
            src, start = clean_of[r.col], r.dirty_from
            for layer in self.cache.layers[self.join_layer:]:  # below the join a side row has no cache of its own
                layer.keys[i, :, start:] = layer.keys[src, :, start:]
                layer.values[i, :, start:] = layer.values[src, :, start:]
            r.dirty_from = length

    def side_rows(self) -> list[int]:
        """The indices of the side rows in the current layout."""
        return [i for i, r in enumerate(self.layout) if r.kind == "side"]

    def values_of(self, row: int) -> list[torch.Tensor]:
        """Row ``row``'s Value vectors per layer, [kv_heads, seq, head_dim] views a sampler edits in place.

        A side row's layers below the join are its clean row's (shared: its sampler leaves them alone).
        """
        clean = self._held(self.layout, below_join=True).index(self._clean_row(row)) if self.join_layer else row
        return [layer.values[row if index >= self.join_layer else clean]
                for index, layer in enumerate(self.cache.layers)]

    def _clean_row(self, row: int) -> int:
        """The row a row continues below the join: itself, or a side row's clean (main) row."""
        r = self.layout[row]
        if r.kind != "side":
            return row
        return next(i for i, other in enumerate(self.layout) if other.kind == "main" and other.col == r.col)

    def pass_rows(self) -> tuple[list[int], SideRowJoin | None]:
        """The layout's rows the next pass is fed (every row, or all but the side rows) and where the side
        rows join it (None: every row from the first layer)."""
        if not self.join_layer:
            return list(range(len(self.layout))), None
        fed = self._held(self.layout, below_join=True)
        position = {row: k for k, row in enumerate(fed)}
        sources = [position[self._clean_row(i)] for i in range(len(self.layout))]
        device = self.cache.layers[0].keys.device
        return fed, SideRowJoin(self.join_layer, torch.tensor(sources, device=device))

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
        for by_col in (sides, cands):  # in side-row or candidate order, wherever their rows are placed
            for idx in by_col.values():
                idx.sort(key=lambda i: self.layout[i].index)
        return main, sides, cands
