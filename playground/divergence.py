"""Where two columns part, and which stage of which column's chain parted them.

    for each pair of columns: d = the first step where their tokens differ
    at d both have the same history and drew the same u (one uniform per column per step, from
    generators seeded alike), so the explanation is exact:
        each column's token is where its final CDF crosses u  -> its u interval
        each stage's draw at u                                 -> the first stage whose draw
                                                                  differs from the clean draw moved it

A column that chose without u says so: greedy takes the argmax, the adaptive sampler's COLD
lookahead picks by attention entropy, entropix's MIDDLE quadrant keeps the best of its own draws.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from .traces import DRAW, LOOKAHEAD, ChainTrace


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first step where two token lists differ (None: one is a prefix of the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


@dataclass
class Side:
    """One column's part in a divergence."""

    column: int
    label: str
    token: int
    text: str
    how: str  # DRAW, OWN or LOOKAHEAD (traces.py)
    interval: list[float] | None  # the u interval of its token in its final distribution (a draw at u)
    draws: list[dict[str, Any]]  # each stage: name, param, the token a draw at u gives there
    moved_by: str | None = None  # the first stage whose draw differs from the clean draw
    moved_param: str = ""


@dataclass
class Divergence:
    """Columns ``a`` and ``b``: where they part (``step`` None: never), the shared u, and why."""

    a: int
    b: int
    step: int | None
    u: float | None = None
    sides: list[Side] = field(default_factory=list)
    sentence: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def side_of(column: int, label: str, trace: ChainTrace, piece: Callable[[int], str]) -> Side:
    """What column ``column``'s trace at the parting step says about its choice."""
    draws = [{"stage": s.name, "param": s.param, "token": s.draw, "side": s.side} for s in trace.stages]
    side = Side(column, label, trace.token, piece(trace.token), trace.how,
                list(trace.interval) if trace.interval else None, draws)
    clean_draw = trace.stages[0].draw
    for stage in trace.stages[1:]:
        if not stage.side and stage.draw is not None and stage.draw != clean_draw:
            side.moved_by, side.moved_param = stage.name, stage.param
            break
    return side


def _clause(side: Side, trace: ChainTrace, piece: Callable[[int], str]) -> str:
    """One column's part of the sentence."""
    who = f"column {side.column + 1} ({side.label})"
    if side.how == LOOKAHEAD:
        n = len((trace.lookahead or {}).get("candidates", []))
        return f"{who} was COLD and chose {side.text!r} among {n} candidates by attention entropy, not by u"
    last = trace.stages[-1]
    if side.how != DRAW:
        if last.name == "argmax":
            return f"{who} takes the argmax {side.text!r} whatever u is"
        return f"{who} takes {side.text!r} by its own rule ({last.name}: {last.param}), not by u"
    if side.moved_by is None:
        return f"{who} keeps {side.text!r}"
    moved_to = next(d["token"] for d in side.draws if d["stage"] == side.moved_by and not d["side"])
    name = side.moved_param or side.moved_by
    if side.moved_by == "fusion":
        name = f"fusion with its perturbed pass ({side.moved_param})"
    if moved_to == side.token:
        return f"column {side.column + 1}'s {name} moves the draw to {side.text!r}"
    return f"column {side.column + 1}'s {name} moves the draw (to {piece(moved_to)!r}), and it takes {side.text!r}"


def divergence(a: int, b: int, labels: list[str], tokens: list[list[int]], traces: list[list[ChainTrace]],
               piece: Callable[[int], str]) -> Divergence:
    """Where columns ``a`` and ``b`` part, from their tokens and traces (indices 0-based)."""
    d = first_difference(tokens[a], tokens[b])
    if d is None:
        n = min(len(tokens[a]), len(tokens[b]))
        shorter = a if len(tokens[a]) < len(tokens[b]) else b
        more = "" if len(tokens[a]) == len(tokens[b]) else f" (then column {shorter + 1} ended)"
        return Divergence(a, b, None, sentence=f"columns {a + 1} and {b + 1} never part: the same {n} tokens{more}")
    ta, tb = traces[a][d], traces[b][d]
    sides = [side_of(a, labels[a], ta, piece), side_of(b, labels[b], tb, piece)]
    clauses = [_clause(s, t, piece) for s, t in zip(sides, (ta, tb))]
    sentence = f"columns {a + 1} and {b + 1} part at token {d + 1}: both drew u = {ta.u:.3f}; " + "; ".join(clauses)
    clean = (ta.stages[0].draw, tb.stages[0].draw)
    if clean[0] != clean[1] and None not in clean:
        sentence += (f" (their clean distributions differ in the last digits: clean draws "
                     f"{piece(clean[0])!r} and {piece(clean[1])!r})")
    return Divergence(a, b, d, ta.u, sides, sentence)


def divergences(labels: list[str], tokens: list[list[int]], traces: list[list[ChainTrace]],
                piece: Callable[[int], str]) -> list[Divergence]:
    """Every pair of columns (at most 28 for 8 columns), in order (1, 2), (1, 3), ..."""
    n = len(tokens)
    if any(len(t) != len(k) for t, k in zip(traces, tokens)):
        return []  # a run that recorded no traces has nothing to explain
    return [divergence(a, b, labels, tokens, traces, piece) for a in range(n) for b in range(a + 1, n)]
