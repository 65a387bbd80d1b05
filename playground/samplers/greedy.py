"""Greedy decoding: the argmax of the clean logits (the control column)."""
from __future__ import annotations

from dataclasses import dataclass

from .base import Decision, Sampler, StepView, argmax_token, point_mass_stage


@dataclass
class GreedySettings:
    """Greedy has no settings."""


class GreedySampler(Sampler):
    name = "greedy"
    Settings = GreedySettings

    def decide(self, view: StepView) -> Decision:
        token = argmax_token(view.logits)
        stages = [point_mass_stage("argmax", "", view.logits, token)] if view.record_stages else []
        return Decision(token=token, stages=stages)
