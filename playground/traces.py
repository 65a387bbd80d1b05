"""The chain trace of one token: what each stage of its sampler's decision did to the distribution.

    clean logits + the sampler's stages (Decision.stages: the tensors it computed, by reference)
    + the token and the step's u  ->  ChainTrace

Per stage: its name and parameter, the support left (tokens with p > 0), the entropy, and, where
the column still shares its history with another column, the token a draw at u gives after that
stage (the divergence explanation needs it only there). Per tracked token (the clean top-10, the
chosen token and the top-5 after every stage, in clean order): its probability and rank after
every stage; a removed token reads p = 0, rank 0.

The numbers are the sampler's own: each stage's distribution is the softmax its chain took of
that stage's scores, and the last one is the very tensor the engine drew from.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .draw import cumulative, draw_from_cdf, interval
from .errors import PlaygroundError
from .samplers.base import Stage

TRACKED_CLEAN = 10  # the clean distribution's most likely tokens, always tracked
TOP_PER_STAGE = 5  # ... and each stage's most likely ones
RANK_WINDOW = 64  # ranks read from each stage's top-64; a tracked token below it is counted in full
CLEAN_WINDOW = 128  # the clean distribution's most likely tokens read in the engine's batch: where later stages'
# most likely tokens are looked for first (and a sampler's top-k, StepView.likely)
SURVIVORS = 1024  # a link that names at most this many survivors (top-k's) has its stage read on them alone

DRAW, OWN, LOOKAHEAD = "draw", "own", "lookahead"  # how the token was chosen


@dataclass
class StageSummary:
    """One stage of a trace."""

    name: str
    param: str
    support: int  # tokens with p > 0
    entropy: float  # nats
    draw: int | None  # the token a draw at the step's u gives here (None: not recorded)
    side: bool = False  # beside the chain (Phase-Slip's perturbed row), not a step of it


@dataclass
class ChainTrace:
    """What every stage of one decision did: the stages, and the tracked tokens' p and rank after each."""

    step: int
    token: int
    u: float  # the column's uniform number at this step (drawn whether used or not)
    how: str  # DRAW: the engine's draw at u; OWN: the sampler's own choice; LOOKAHEAD: by attention entropy
    stages: list[StageSummary]
    tokens: list[int]  # tracked tokens, in clean order
    probs: torch.Tensor  # [stages, tokens] float64: each stage's own floats
    ranks: torch.Tensor  # [stages, tokens] int32: 1 = most likely; 0 = removed
    interval: tuple[float, float] | None = None  # the chosen token's u interval in the final distribution
    lookahead: dict[str, Any] | None = None  # candidates and their scores, for a LOOKAHEAD step

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as plain lists: a trace may cross a process boundary (ZeroGPU), where torch would
        share a tensor's memory with a process that is gone by the time it is read."""
        return {**self.__dict__, "probs": self.probs.tolist(), "ranks": self.ranks.tolist()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, probs=torch.tensor(state["probs"], dtype=torch.float64),
                             ranks=torch.tensor(state["ranks"], dtype=torch.int32))

    def removed_by(self, j: int) -> str | None:
        """The first stage of the chain that removed tracked token ``j`` (None: it survived)."""
        before = self.probs[0, j] > 0
        for s, stage in enumerate(self.stages[1:], 1):
            if stage.side:
                continue
            if before and self.probs[s, j] == 0:
                return stage.name
            before = bool(self.probs[s, j] > 0)
        return None

    def to_json(self, piece: Callable[[int], str] | None = None) -> dict[str, Any]:
        """The trace as the run JSON and the page show it; ``piece`` gives each token's text."""
        rows = [{"id": t, "text": piece(t) if piece else None, "chosen": t == self.token,
                 "removed_by": self.removed_by(j), "probs": self.probs[:, j].tolist(),
                 "ranks": self.ranks[:, j].tolist()} for j, t in enumerate(self.tokens)]
        return {"step": self.step, "token": self.token, "u": self.u, "how": self.how,
                "interval": list(self.interval) if self.interval else None, "lookahead": self.lookahead,
                "stages": [{"name": s.name, "param": s.param, "support": s.support, "entropy": s.entropy,
                            "draw": s.draw, "draw_text": piece(s.draw) if piece and s.draw is not None else None,
                            "side": s.side} for s in self.stages],
                "tokens": rows}


@dataclass
class CleanWindow:
    """A clean distribution's support and its CLEAN_WINDOW most likely tokens, read for a batch of rows at once."""

    support: int | None  # None: not counted (a run without traces)
    values: torch.Tensor  # probabilities, descending
    ids: torch.Tensor  # their token ids


def supports(probs: torch.Tensor) -> list[int]:
    """Each row's tokens with p > 0, for ``probs`` [..., V]: a min when none underflowed to 0 (the cheaper
    read), else a count."""
    rows = probs.reshape(-1, probs.shape[-1])
    if bool((rows.amin(dim=-1) > 0).all()):
        return [rows.shape[-1]] * rows.shape[0]
    return torch.count_nonzero(rows, dim=-1).tolist()


def clean_windows(probs: torch.Tensor, count_support: bool = True) -> list[CleanWindow]:
    """The CleanWindow of each row of ``probs`` [R, V], from one top-k and one ``supports`` over the batch."""
    values, ids = torch.topk(probs, min(CLEAN_WINDOW, probs.shape[-1]))
    support = supports(probs) if count_support else [None] * probs.shape[0]
    return [CleanWindow(n, v, i) for n, v, i in zip(support, values, ids)]


@dataclass
class _Read:
    """One distinct distribution of a trace, read once: on the whole vocabulary (``ids`` None) or, once
    the chain has cut it to a few tokens, on its survivors (``ids``, in vocabulary order)."""

    p: torch.Tensor  # [V], or [survivors] aligned with ids
    ids: torch.Tensor | None
    values: torch.Tensor  # the most likely probabilities, descending (RANK_WINDOW of them; on survivors, all)
    top: torch.Tensor  # their token ids
    support: int
    entropy: float

    def at(self, tokens: list[int]) -> list[float]:
        """The probabilities of ``tokens`` (0 for a token this distribution does not hold), as Python floats:
        a float32 or float64 value exactly."""
        if self.ids is None:
            return self.p[torch.tensor(tokens, device=self.p.device)].tolist()
        held = dict(zip(self.ids.tolist(), self.p.tolist()))
        return [held.get(t, 0.0) for t in tokens]

    def ranks(self, probs: list[float]) -> list[int]:
        """1 + how many tokens are more likely, for each of ``probs`` (0 where p = 0): counted in this
        distribution's most likely probabilities; a p below a full read's window is counted in full."""
        ascending = [-v for v in self.values.tolist()]  # negated: bisect counts the values above q
        floor = -ascending[-1] if self.ids is None else 0.0  # on its survivors, the window holds them all
        return [0 if q <= 0 else 1 + int(torch.count_nonzero(self.p > q)) if q < floor
                else 1 + bisect.bisect_left(ascending, -q) for q in probs]

    def draw(self, u: float) -> tuple[int, torch.Tensor]:
        """The token a draw at u gives (as draw.draw would on the whole vocabulary), and the CDF over ``p``."""
        cdf = cumulative(self.p)
        index = draw_from_cdf(cdf, self.p.detach().to("cpu"), u)  # zeros between survivors add nothing to a CDF
        return (index if self.ids is None else int(self.ids[index])), cdf

    def interval(self, cdf: torch.Tensor, token: int) -> tuple[float, float]:
        return interval(cdf, token if self.ids is None else int(torch.searchsorted(self.ids, token)))


def entropy_nats(dist: torch.Tensor) -> float:
    """-sum p ln p over the tokens with p > 0 (0 ln 0 is nan, and nansum leaves it out)."""
    return max(0.0, float(-torch.nansum(dist * dist.log())))  # a point mass: -0.0 reads as 0


def _on_survivors(p: torch.Tensor, ids: torch.Tensor) -> _Read:
    """A distribution held on a few survivors: drop its zeros, sort the rest (ties in vocabulary order)."""
    kept = p > 0
    p, ids = p[kept], ids[kept]
    values, order = torch.sort(p, descending=True, stable=True)
    return _Read(p, ids, values, ids[order], int(p.shape[0]), entropy_nats(values))


def _on_vocabulary(p: torch.Tensor, before: _Read | None, keeps_order: bool,
                   entropy: float | None = None, window: CleanWindow | None = None) -> _Read:
    """A distribution over the whole vocabulary. Its most likely tokens are looked for among ``before``'s
    (the same ones for a temperature or a cut from the top, ``keeps_order``; near them for a mixture or a
    penalty): checked, not assumed, so a second top-k over the vocabulary is needed only when they are not.
    ``window``: its support and most likely tokens, read already (the engine's batch of clean rows)."""
    if window is not None and window.support is not None and window.support > RANK_WINDOW:
        return _Read(p, None, window.values, window.ids, window.support, entropy_nats(p) if entropy is None else entropy)
    support = supports(p)[0]
    reuse = keeps_order and before is not None and before.ids is None
    if support <= RANK_WINDOW:
        if reuse and bool((p[before.top[:support]] > 0).all()):  # the survivors are before's most likely
            ids = torch.sort(before.top[:support]).values
        else:
            ids = torch.nonzero(p).flatten()
        return _on_survivors(p[ids], ids)
    values = None
    if before is not None and before.ids is None and before.top.shape[0] >= RANK_WINDOW:
        values, order = torch.sort(p[before.top], descending=True, stable=True)
        values, top = values[:RANK_WINDOW], before.top[order[:RANK_WINDOW]]
        if int(torch.count_nonzero(p >= values[-1])) != RANK_WINDOW:  # a tie at the edge, or not the top
            values = None
    if values is None:
        values, top = torch.topk(p, RANK_WINDOW)
    return _Read(p, None, values, top, support, entropy_nats(p) if entropy is None else entropy)


def _log_probs(scores: torch.Tensor) -> torch.Tensor:
    """log p of a stage's scores [V], as the engine reads the clean logits (float32 log_softmax)."""
    return torch.log_softmax(scores.view(1, -1).float(), dim=-1)[0]


def _read(stage: Stage, current: _Read | None, probs: torch.Tensor | None) -> _Read | None:
    """``stage``'s distribution read on the tokens still alive: a chain's link never revives a token it
    was given at p = 0, so after a cut to a few survivors only they are read. None: as it was."""
    if probs is None and stage.scores is None:
        return None
    if stage.kept is not None and stage.kept.shape[0] <= SURVIVORS and not stage.side \
            and (current is None or current.ids is None):  # the link names its few survivors: read on them
        if probs is None:  # a softmax of the survivors' scores alone: a full read's up to float rounding
            return _on_survivors(torch.softmax(stage.scores[stage.kept].view(1, -1).float(), dim=-1)[0], stage.kept)
        return _on_survivors(probs[stage.kept], stage.kept)
    sparse = current is not None and current.ids is not None and not stage.side
    if sparse and (stage.scores is not None or probs is not stage.probs):  # a link's scores, or the draw's own
        ids = current.ids
        p = probs[ids] if probs is not None else torch.softmax(stage.scores[ids].view(1, -1).float(), dim=-1)[0]
        return _on_survivors(p, ids)
    entropy = None
    if probs is None:  # read as the engine reads the clean logits: p = exp(log_softmax), H = -sum p log p
        log_p = _log_probs(stage.scores)
        probs = log_p.exp()
        entropy = max(0.0, float(-torch.nansum(probs * log_p)))
    return _on_vocabulary(probs, current, stage.keeps_order and not stage.side, entropy)


def chain_trace(step: int, clean_logits: torch.Tensor, stages: list[Stage], token: int, u: float, how: str,
                final: torch.Tensor | None = None, with_draws: bool = False,
                lookahead: dict[str, Any] | None = None,
                clean: tuple[torch.Tensor, float, CleanWindow | None] | None = None) -> ChainTrace:
    """The trace of one decision (see the module docstring); ``with_draws``: each stage's draw at u.

    ``final`` (what the engine drew from) stands for the last stage of the chain, so its floats are the
    draw's own. ``clean``: the clean distribution, its entropy and window, where the engine has them already.
    """
    last = max((i for i, stage in enumerate(stages) if not stage.side), default=-1)
    if last < 0 and final is not None:  # no link in force: the clean distribution is the one drawn from
        first = _on_vocabulary(final, None, False)
    elif clean is not None:
        first = _on_vocabulary(clean[0], None, False, entropy=clean[1], window=clean[2])
    else:
        first = _read(Stage("clean", scores=clean_logits), None, None)
    reads, current = [first], first
    for i, stage in enumerate(stages):
        probs = final if i == last and final is not None else stage.probs
        read = _read(stage, current, probs) or current  # a stage that sets parameters: as it was
        reads.append(read)
        if not stage.side:
            current = read
    slot: dict[int, int] = {}  # a stage that left the distribution as it was shares its read
    row = [slot.setdefault(id(read), len(slot)) for read in reads]
    distinct = list({id(read): read for read in reads}.values())  # in first-seen order, as ``slot`` numbers them
    draws: dict[int, int] = {}
    cdfs: dict[int, torch.Tensor] = {}
    if with_draws or how == DRAW:
        for d in sorted(set(row)) if with_draws else [row[-1]]:
            draws[d], cdfs[d] = distinct[d].draw(u)
    summaries, tracked = [], {token}
    for s, (stage, r) in enumerate(zip([Stage("clean"), *stages], row)):
        tracked.update(distinct[r].top[:TRACKED_CLEAN if s == 0 else TOP_PER_STAGE].tolist())
        drawn = draws.get(r) if with_draws or s == len(row) - 1 else None
        summaries.append(StageSummary(stage.name, stage.param, distinct[r].support, distinct[r].entropy, drawn,
                                      stage.side))
    candidates = sorted(tracked)  # ``at``: the clean read may hold its survivors alone (a few tokens with p > 0)
    clean_p = first.at(candidates)
    order = [t for _, t in sorted(zip((-q for q in clean_p), candidates))]
    p = [read.at(order) for read in distinct]  # [distinct][tracked], each read's own floats
    ranks = [read.ranks(q) for read, q in zip(distinct, p)]
    return ChainTrace(step=step, token=token, u=u, how=how, stages=summaries, tokens=order,
                      probs=torch.tensor([p[r] for r in row], dtype=torch.float64),
                      ranks=torch.tensor([ranks[r] for r in row], dtype=torch.int32),
                      interval=reads[-1].interval(cdfs[row[-1]], token) if how == DRAW else None,
                      lookahead=lookahead)


@dataclass
class RunTraces:
    """Every token's trace of a run, one list per column, and the texts of the tokens they name: what the
    page keeps in its session (plain data, so it also crosses a process boundary, as on ZeroGPU)."""

    columns: list[list[ChainTrace]]
    texts: dict[int, str]

    @classmethod
    def of(cls, columns: list[list[ChainTrace]], piece: Callable[[int], str]) -> "RunTraces":
        ids = {t for traces in columns for trace in traces for t in trace.tokens}
        ids |= {s.draw for traces in columns for trace in traces for s in trace.stages if s.draw is not None}
        return cls(columns, {t: piece(t) for t in ids})

    def piece(self, token: int) -> str:
        return self.texts.get(token, "?")

    def trace(self, column: int, step: int, piece: Callable[[int], str] | None = None) -> dict[str, Any]:
        """Token ``step`` of column ``column`` (0-based), as JSON; a PlaygroundError naming a bad index."""
        if not 0 <= column < len(self.columns):
            raise PlaygroundError(f"column must be in 0..{len(self.columns) - 1}, got {column}")
        traces = self.columns[column]
        if not traces:
            raise PlaygroundError("this run recorded no chain traces (record_traces=False)")
        if not 0 <= step < len(traces):
            raise PlaygroundError(f"step must be in 0..{len(traces) - 1} (the tokens of column {column}), got {step}")
        return traces[step].to_json(piece or self.piece)
