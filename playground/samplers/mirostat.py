"""Mirostat v2 (Basu et al. 2021): keep the text's surprise near a target by feedback on a cut-off.

    state     μ = 2τ at the start (bits)
    each step p = softmax(logits / T); drop tokens with surprise -log2 p > μ (the most likely stays);
              renormalise; the engine draws from it
    after it  s = -log2 q(chosen) under the renormalised q;  μ <- μ - η (s - τ)

The engine owns the draw, so μ moves in ``update``, which the engine calls with the chosen token
and its probability under the distribution the sampler drew from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..precision import wide
from .base import Decision, RunContext, Sampler, Stage, StepView, require, setting


@dataclass
class MirostatSettings:
    """Defaults are the paper's and llama.cpp's: τ 5 bits, η 0.1, T 1."""

    tau: float = setting(5.0, "target surprise per token, in bits; lower is more predictable text")
    eta: float = setting(0.1, "learning rate: how fast μ follows the observed surprise (0 = μ stays at 2τ)")
    temperature: float = setting(1.0, "divide the logits by T before the cut-off")

    def __post_init__(self):
        p = "mirostat."
        require(0.0 < self.tau <= 100.0, f"{p}tau must be in (0, 100] bits, got {self.tau}")
        require(0.0 <= self.eta <= 1.0, f"{p}eta must be in [0, 1], got {self.eta}")
        require(0.0 < self.temperature <= 100.0, f"{p}temperature must be in (0, 100], got {self.temperature}")


def mirostat_probs(logits: torch.Tensor, mu: float, temperature: float = 1.0,
                   stages: list[Stage] | None = None) -> torch.Tensor:
    """q: softmax(logits / T) without the tokens whose surprise -log2 p exceeds μ, renormalised.

    ``stages``: a list that receives the tempered scores and q (the chain trace).
    """
    tempered = wide(logits) / temperature
    log_p = torch.log_softmax(tempered, dim=-1)
    keep = -log_p / math.log(2.0) <= mu
    keep[log_p.argmax()] = True  # at least the most likely token
    q = torch.where(keep, log_p.exp(), torch.zeros_like(log_p))
    q = q / q.sum()
    if stages is not None:
        stages += [Stage("temperature", f"temperature={temperature:g}", scores=tempered, keeps_order=True),
                   Stage("mu_cut", f"μ={mu:.3f} bits", probs=q)]
    return q


class MirostatSampler(Sampler):
    """Mirostat v2: a surprise cut-off μ, moved after every token toward the target τ."""

    name = "mirostat"
    Settings = MirostatSettings

    def __init__(self, settings: MirostatSettings | None = None, lm: Any = None):
        super().__init__(settings, lm)
        self.mu = 2.0 * self.settings.tau

    def start(self, ctx: RunContext) -> None:
        self.mu = 2.0 * self.settings.tau

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        params = {"tau": s.tau, "eta": s.eta, "temperature": s.temperature}
        stages: list[Stage] = []
        probs = mirostat_probs(view.logits, self.mu, s.temperature, stages if view.record_stages else None)
        return Decision(probs=probs, params=params, signals={"mu": self.mu}, stages=stages)

    def update(self, token: int, sampler_prob: float) -> dict[str, Any]:
        surprise = -math.log2(max(sampler_prob, 1e-300))
        self.mu -= self.settings.eta * (surprise - self.settings.tau)
        return {"surprise": surprise, "mu_next": self.mu}
