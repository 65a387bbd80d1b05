"""Temperature sampling with repetition penalty, top-k, top-p and min-p (transformers' processors).

The order is that of ``model.generate``: repetition penalty, temperature, top-k, top-p, min-p,
then a draw from the renormalised distribution. T = 0 means greedy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .base import Decision, Sampler, StepView, require


def check_sampling_params(temperature: float, top_k: int, top_p: float, min_p: float = 0.0,
                          repetition_penalty: float = 1.0, prefix: str = "") -> None:
    """Refuse out-of-range sampling parameters with a message that names the setting."""
    require(0.0 <= temperature <= 100.0, f"{prefix}temperature must be in [0, 100], got {temperature}")
    require(top_k >= 0, f"{prefix}top_k must be >= 0 (0 = off), got {top_k}")
    require(0.0 < top_p <= 1.0, f"{prefix}top_p must be in (0, 1], got {top_p}")
    require(0.0 <= min_p < 1.0, f"{prefix}min_p must be in [0, 1), got {min_p}")
    require(0.0 < repetition_penalty <= 10.0,
            f"{prefix}repetition_penalty must be in (0, 10], got {repetition_penalty}")


def sampling_processors(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                        repetition_penalty: float = 1.0) -> LogitsProcessorList:
    """The transformers processors for these parameters, in generate's order; off ones left out."""
    chain = LogitsProcessorList()
    if repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature != 1.0:
        chain.append(TemperatureLogitsWarper(temperature))
    if top_k > 0:
        chain.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p))
    if min_p > 0.0:
        chain.append(MinPLogitsWarper(min_p))
    return chain


def sampling_probs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   penalty_ids: torch.Tensor | None = None) -> torch.Tensor:
    """softmax of the processed logits: the distribution a temperature draw samples from.

    ``penalty_ids`` (default: all of ``input_ids``) are the tokens the repetition penalty sees.
    """
    chain = sampling_processors(temperature, top_k, top_p, min_p, repetition_penalty)
    ids = (input_ids if penalty_ids is None else penalty_ids).view(1, -1)
    scores = chain(ids, logits.view(1, -1).float())
    return torch.softmax(scores, dim=-1)[0]


def sample_decision(logits: torch.Tensor, input_ids: torch.Tensor, params: dict[str, Any], temperature: float,
                    top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                    signals: dict[str, Any] | None = None) -> Decision:
    """T = 0: the argmax of ``logits``; otherwise ``sampling_probs`` for the engine to draw from."""
    signals = {} if signals is None else signals
    if temperature == 0.0:
        return Decision(token=int(logits.argmax()), params=params, signals=signals)
    probs = sampling_probs(logits, input_ids, temperature, top_k, top_p, min_p, repetition_penalty)
    return Decision(probs=probs, params=params, signals=signals)


@dataclass
class TemperatureSettings:
    """Defaults are the public benchmark's standard sampling: T 0.8, top-k 40, top-p 0.92."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.92
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self):
        check_sampling_params(self.temperature, self.top_k, self.top_p, self.min_p,
                              self.repetition_penalty, prefix="temperature.")


class TemperatureSampler(Sampler):
    name = "temperature"
    Settings = TemperatureSettings

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        params = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                  "min_p": s.min_p, "repetition_penalty": s.repetition_penalty}
        return sample_decision(view.logits, view.input_ids, params, s.temperature, s.top_k, s.top_p,
                               s.min_p, s.repetition_penalty)
