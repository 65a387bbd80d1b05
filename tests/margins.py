"""Exact tokens across two numeric paths, but only on decided margins: the check a test makes first.

Two numeric paths of one model (a column batched or alone, two kernels, two attention implementations,
two caches) give float32 logits that differ by rounding: on the default model, up to 8e-5 between 1 and 4
rows and 2.0e-4 between this project's model and stock transformers, and other CPUs' kernels round
differently. Take LOGIT_NOISE = 2e-4 as the most any logit moves. A token sits on a decided margin when
no such move can flip it:

    greedy   the chosen token's logit leads the runner-up's by more than DECIDED = 2 LOGIT_NOISE
             (each of the two logits moves by at most LOGIT_NOISE)
    a draw   the column's u lies more than DECIDED inside the drawn token's interval [F(x-), F(x)) of the
             distribution it was drawn from: p_j = softmax(z)_j moves by at most 2 LOGIT_NOISE p_j (to
             first order), so a cumulative F moves by at most 2 LOGIT_NOISE

A test that compares tokens across paths checks its reference run with these first; where the check
fails, it picks another seed or prompt rather than a weaker assertion.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator
from unittest import mock

import torch

import playground.engine as engine

LOGIT_NOISE = 2e-4
DECIDED = 2 * LOGIT_NOISE


def greedy_margins(rows) -> list[float]:
    """Per row, how far (nats) the clean top token leads the runner-up: log p1 - log p2."""
    return [math.log(r.top[0]["prob"]) - math.log(r.top[1]["prob"]) for r in rows]


def assert_greedy_decided(rows, floor: float = DECIDED) -> None:
    margins = greedy_margins(rows)
    close = [(i, round(m, 6)) for i, m in enumerate(margins) if m <= floor]
    assert not close, f"greedy tokens on a near-tie (step, margin in nats): {close}; choose another prompt"


@contextmanager
def recorded_draws() -> Iterator[list[float]]:
    """Inside the block, every engine draw appends how deep its u lies inside the drawn token's interval."""
    margins: list[float] = []
    real = engine.draw

    def draw(probs: torch.Tensor, u: float, support: torch.Tensor | None = None) -> int:
        token = real(probs, u, support)
        assert support is None or token == real(probs, u), "the draw on the support is the draw on the vocabulary's"
        p = probs.detach().to("cpu", torch.float64)
        cdf = torch.cumsum(p, 0) / p.sum()
        low = float(cdf[token - 1]) if token > 0 else 0.0
        margins.append(min(u - low, float(cdf[token]) - u))
        return token

    with mock.patch.object(engine, "draw", draw):
        yield margins


def assert_draws_decided(margins: list[float], floor: float = DECIDED) -> None:
    assert margins, "no draw was recorded"
    close = [(i, round(m, 6)) for i, m in enumerate(margins) if m <= floor]
    assert not close, f"draws on a near-tie (draw, depth in probability): {close}; choose another seed"
