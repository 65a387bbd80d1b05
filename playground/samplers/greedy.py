"""Greedy decoding: the argmax of the clean logits (the control column)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Decision, Sampler, StepView


@dataclass
class GreedySettings:
    """Greedy has no settings."""


class GreedySampler(Sampler):
    name = "greedy"
    Settings = GreedySettings

    def decide(self, view: StepView) -> Decision:
        return Decision(token=int(view.logits.argmax()))
