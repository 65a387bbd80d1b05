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

from dataclasses import dataclass
from typing import Any, Callable

import torch

from .draw import cumulative, draw_from_cdf, interval
from .errors import PlaygroundError
from .samplers.base import Stage

TRACKED_CLEAN = 10  # the clean distribution's most likely tokens, always tracked
TOP_PER_STAGE = 5  # ... and each stage's most likely ones
RANK_WINDOW = 64  # ranks read from each stage's top-64; a tracked token below it is counted in full

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


def stage_distributions(clean_logits: torch.Tensor, stages: list[Stage],
                        final: torch.Tensor | None) -> list[tuple[Stage, torch.Tensor]]:
    """Each stage with its distribution [V]: the clean softmax first; ``final`` (what the engine drew
    from) stands for the last stage of the chain, so its floats are the draw's own."""
    clean = Stage("clean")
    current = torch.softmax(clean_logits.view(1, -1).float(), dim=-1)[0]  # as the chain takes a softmax
    out = [(clean, current)]
    for stage in stages:
        if stage.probs is not None:
            dist = stage.probs
        elif stage.scores is not None:
            dist = torch.softmax(stage.scores.view(1, -1).float(), dim=-1)[0]
        else:
            dist = current  # a stage that sets parameters: the distribution is as it was
        out.append((stage, dist))
        if not stage.side:
            current = dist
    if final is not None:
        last = max(i for i, (stage, _) in enumerate(out) if not stage.side)
        out[last] = (out[last][0], final)
    return out


def entropy_nats(dist: torch.Tensor) -> float:
    """-sum p ln p over the tokens with p > 0 (0 ln 0 is nan, and nansum leaves it out)."""
    return max(0.0, float(-torch.nansum(dist * dist.log())))  # a point mass: -0.0 reads as 0


def _ranks(dist: torch.Tensor, values: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """1 + how many tokens are more likely, for tracked probabilities ``p``; 0 where p = 0.

    ``values``: ``dist``'s top RANK_WINDOW probabilities; a p below them is counted over the vocabulary.
    """
    ranks = 1 + (values.unsqueeze(0) > p.unsqueeze(1)).sum(1)
    low = p < values[-1]
    for j in torch.nonzero(low & (p > 0)).flatten().tolist():
        ranks[j] = 1 + int((dist > p[j]).sum())
    return torch.where(p > 0, ranks, torch.zeros_like(ranks)).to(torch.int32)


def top_of(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """A distribution's most likely probabilities and ids (descending, at most RANK_WINDOW), its support and
    entropy. A truncated one is read from its few survivors, not from the whole vocabulary."""
    support = int(torch.count_nonzero(dist))
    if support > RANK_WINDOW:
        values, ids = torch.topk(dist, RANK_WINDOW)
        return values, ids, support, entropy_nats(dist)
    kept = torch.nonzero(dist).flatten()
    values, order = torch.sort(dist[kept], descending=True, stable=True)
    return values, kept[order], support, entropy_nats(values)


def chain_trace(step: int, clean_logits: torch.Tensor, stages: list[Stage], token: int, u: float, how: str,
                final: torch.Tensor | None = None, with_draws: bool = False,
                lookahead: dict[str, Any] | None = None) -> ChainTrace:
    """The trace of one decision (see the module docstring); ``with_draws``: each stage's draw at u."""
    dists = stage_distributions(clean_logits, stages, final)
    summaries, tops, tracked = [], [], []
    seen: dict[int, tuple[torch.Tensor, torch.Tensor, int, float]] = {}  # a stage that left the distribution as it was
    for stage, dist in dists:
        if id(dist) not in seen:
            seen[id(dist)] = top_of(dist)
        values, ids, support, entropy = seen[id(dist)]
        tops.append(values)
        n = TRACKED_CLEAN if not summaries else TOP_PER_STAGE
        tracked += ids[:n][values[:n] > 0].tolist()  # a point mass has one top token, not five
        drawn = None
        cdf = None
        if with_draws or (how == DRAW and stage is dists[-1][0]):
            cdf = cumulative(dist)
            drawn = draw_from_cdf(cdf, dist.detach().to("cpu"), u)
        summaries.append(StageSummary(stage.name, stage.param, support, entropy, drawn, stage.side))
    chosen_interval = interval(cdf, token) if how == DRAW and cdf is not None else None
    clean = dists[0][1]
    tracked = sorted(set(tracked) | {token}, key=lambda t: (-float(clean[t]), t))
    index = torch.tensor(tracked, device=clean.device)
    probs = torch.stack([dist[index].double().cpu() for _, dist in dists])
    ranks = torch.stack([_ranks(dist, top, dist[index]).cpu() for (_, dist), top in zip(dists, tops)])
    return ChainTrace(step=step, token=token, u=u, how=how, stages=summaries, tokens=tracked, probs=probs,
                      ranks=ranks, interval=chosen_interval, lookahead=lookahead)


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
