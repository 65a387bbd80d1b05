"""The adaptive entropy sampler (AlphaSampler).

    logits, last-layer attention -> H_tok + H_attn = alpha -> moving average -> state
    smoothed alpha -> temperature, top_k, top_p, repetition_penalty -> processed distribution
    COLD and lookahead on: top candidates -> one row each in the next batched forward
                           -> score by their attention entropy -> lowest score wins
    otherwise:             draw from the processed distribution (the engine's draw)

Decisions where the published algorithm is silent:
* the schedules take the SMOOTHED alpha, like the state, so state and parameters are one
  function of one number; ``smoothing_window=1`` gives the per-token (raw) behaviour;
* the lookahead's candidates come from the processed distribution (repetition penalty,
  temperature, top-k, top-p already applied), kept nucleus-style within ``spec_top_p``;
* the variance over heads is the population variance (it is 0, not undefined, for one head).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from .base import Decision, PlaygroundError, RunContext, Sampler, Stage, StepView, require, setting
from .temperature import sampling_distribution

COLD, MIXED, HOT = "COLD", "MIXED", "HOT"


# ---- signals ------------------------------------------------------------------------------


def token_entropy(logits: torch.Tensor) -> float:
    """Normalised token entropy H_tok = H_bits(softmax(logits)) / log2(V) = H_nats / ln(V), in [0, 1]."""
    p = torch.softmax(logits.float(), dim=-1)
    return float(torch.special.entr(p).sum() / math.log(p.shape[-1]))  # entr(p) = -p ln p, 0 at p = 0


def existing_positions(n_slots: int, n_existing: int, device: torch.device | str) -> torch.Tensor:
    """Bool mask [n_slots]: True for the first ``n_existing`` slots (filled, causal), False after."""
    return torch.arange(n_slots, device=device) < n_existing


def masked_attention_entropy(rows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised entropy of each attention row over the positions that exist.

    rows [..., n] attention weights, mask bool broadcastable to rows (None: all exist).
    a = row restricted to the mask and renormalised; H = -sum a log2 a / log2(m), m = mask count.
    With a single existing position there is nothing to be uncertain about: H = 0.
    Returns [...], in [0, 1].
    """
    rows = rows.float()
    mask = torch.ones_like(rows, dtype=torch.bool) if mask is None else mask.to(torch.bool).expand_as(rows)
    a = torch.where(mask, rows.clamp_min(0.0), torch.zeros_like(rows))
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    plog2p = torch.where(a > 0, a * torch.log2(a.clamp_min(torch.finfo(a.dtype).tiny)), torch.zeros_like(a))
    h_bits = -plog2p.sum(-1)
    m = mask.sum(-1).float()
    return torch.where(m > 1, h_bits / torch.log2(m.clamp_min(2.0)), torch.zeros_like(h_bits))


def attention_entropy(last_layer: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """H_attn = mean over heads of the masked, normalised entropy of the newest query's row.

    last_layer [heads, n]: the last layer's attention row of the newest token, per head.
    """
    return float(masked_attention_entropy(last_layer, mask).mean())


def alpha_of(h_token: float, h_attention: float) -> float:
    """alpha = H_tok + H_attn (= 2 (0.5 H_tok + 0.5 H_attn)), in [0, 2]."""
    return h_token + h_attention


def state_of(alpha: float, cold_point: float = 0.6, hot_point: float = 1.8) -> str:
    """COLD if alpha < cold_point, HOT if alpha > hot_point, MIXED otherwise (boundaries are MIXED)."""
    if alpha < cold_point:
        return COLD
    if alpha > hot_point:
        return HOT
    return MIXED


# ---- the four schedules (exactly the published formulas) -----------------------------------


def schedule_temperature(alpha: float) -> float:
    """T = 0.1 + 1.2 / (1 + exp(-1.5 (alpha - 1)))."""
    return 0.1 + 1.2 / (1.0 + math.exp(-1.5 * (alpha - 1.0)))


def schedule_top_k(alpha: float) -> int:
    """top_k = int(10 + 190 (atan(alpha - 1) / pi + 0.5))."""
    return int(10 + 190 * (math.atan(alpha - 1.0) / math.pi + 0.5))


def schedule_top_p(alpha: float) -> float:
    """top_p = 0.85 + 0.1 (2 / (1 + exp(-0.8 alpha)) - 1)."""
    return 0.85 + 0.1 * (2.0 / (1.0 + math.exp(-0.8 * alpha)) - 1.0)


def schedule_repetition_penalty(alpha: float) -> float:
    """repetition_penalty = 1 + 0.3 / (1 + exp(-2 (alpha - 1)))."""
    return 1.0 + 0.3 / (1.0 + math.exp(-2.0 * (alpha - 1.0)))


def schedule(alpha: float) -> dict[str, Any]:
    """The four sampling parameters for ``alpha``, keyed as ``sampling_probs`` names them."""
    return {"temperature": schedule_temperature(alpha), "top_k": schedule_top_k(alpha),
            "top_p": schedule_top_p(alpha), "repetition_penalty": schedule_repetition_penalty(alpha)}


# ---- COLD-state lookahead -----------------------------------------------------------------


def lookahead_candidates(probs: torch.Tensor, spec_top_k: int = 3, spec_top_p: float = 0.9) -> list[int]:
    """The top ``spec_top_k`` tokens of ``probs``, nucleus-style: token i (by rank) is kept while
    the mass ranked above it is < spec_top_p; the top token is always kept. Zero-probability
    tokens are never candidates."""
    top = torch.topk(probs, min(spec_top_k, probs.shape[-1]))
    mass_above = torch.cumsum(top.values, 0) - top.values
    keep = (mass_above < spec_top_p) & (top.values > 0)
    keep[0] = True
    return [int(i) for i in top.indices[keep]]


def lookahead_score(last_layer: torch.Tensor, mask: torch.Tensor | None = None,
                    entropy_weight: float = 0.8, var_entropy_weight: float = 0.2) -> float:
    """score = entropy_weight * mean_h(e_h) + var_entropy_weight * var_h(e_h), where e_h is head h's
    masked attention entropy (``masked_attention_entropy``) and var the population variance."""
    e = masked_attention_entropy(last_layer, mask)
    return float(entropy_weight * e.mean() + var_entropy_weight * e.var(correction=0))


# ---- the sampler --------------------------------------------------------------------------


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass
class AdaptiveSettings:
    """Defaults are the published ones; smoothing_window=4 is ours (a 4-token average steadies the state)."""

    cold_point: float = setting(0.6, "smoothed α below this is COLD (lookahead, colder schedule)")
    hot_point: float = setting(1.8, "smoothed α above this is HOT")
    smoothing_window: int = setting(4, "tokens in the moving average of α (1 = raw α, the public default)")
    repetition_window: int = setting(128, "the repetition penalty sees this many most recent tokens")
    lookahead: bool = setting(True, "COLD state: feed the top candidates and keep the one with the calmest "
                                    "attention (off: draw)")
    spec_top_k: int = setting(3, "lookahead: at most this many candidates")
    spec_top_p: float = setting(0.9, "lookahead: candidates while the mass ranked above stays below this")
    entropy_weight: float = setting(0.8, "lookahead score: weight of the mean attention entropy over heads")
    var_entropy_weight: float = setting(0.2, "lookahead score: weight of its variance over heads")

    def __post_init__(self):
        p = "adaptive_entropy."
        require(_finite(self.cold_point) and _finite(self.hot_point),
                f"{p}cold_point and {p}hot_point must be finite numbers, got {self.cold_point}, {self.hot_point}")
        require(self.cold_point < self.hot_point,
                f"{p}cold_point ({self.cold_point}) must be below {p}hot_point ({self.hot_point})")
        require(self.smoothing_window >= 1, f"{p}smoothing_window must be >= 1 token, got {self.smoothing_window}")
        require(self.repetition_window >= 1,
                f"{p}repetition_window must be >= 1 token, got {self.repetition_window}")
        require(self.spec_top_k >= 1, f"{p}spec_top_k must be >= 1, got {self.spec_top_k}")
        require(_finite(self.spec_top_p) and 0.0 < self.spec_top_p <= 1.0,
                f"{p}spec_top_p must be in (0, 1], got {self.spec_top_p}")
        require(_finite(self.entropy_weight) and self.entropy_weight >= 0.0,
                f"{p}entropy_weight must be >= 0, got {self.entropy_weight}")
        require(_finite(self.var_entropy_weight) and self.var_entropy_weight >= 0.0,
                f"{p}var_entropy_weight must be >= 0, got {self.var_entropy_weight}")


class AdaptiveEntropySampler(Sampler):
    """alpha -> state and schedules; COLD: attention-entropy lookahead over the top candidates."""

    name = "adaptive_entropy"
    Settings = AdaptiveSettings
    needs_attentions = True

    def __init__(self, settings: AdaptiveSettings | None = None, lm: Any = None):
        super().__init__(settings, lm)
        self.alphas: deque[float] = deque(maxlen=self.settings.smoothing_window)

    def start(self, ctx: RunContext) -> None:
        self.alphas = deque(maxlen=self.settings.smoothing_window)

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        if view.attentions is None:
            raise PlaygroundError("adaptive_entropy needs attention weights (grouped or eager attention, not sdpa)")
        last_layer = view.attentions[-1]
        h_token = token_entropy(view.logits)
        existing = existing_positions(last_layer.shape[-1], view.input_ids.numel(), last_layer.device)
        h_attention = attention_entropy(last_layer, existing)
        alpha = alpha_of(h_token, h_attention)
        # the history grows at decide time, once per token, so a lookahead's choose() sees it unchanged
        self.alphas.append(alpha)
        smoothed = sum(self.alphas) / len(self.alphas)
        state = state_of(smoothed, s.cold_point, s.hot_point)
        params = schedule(smoothed)
        stages = [Stage("alpha", f"α={smoothed:.3f} (smoothed), {state}: " + ", ".join(
            f"{k}={v:.3g}" for k, v in params.items()))] if view.record_stages else None
        probs, support = sampling_distribution(view.logits, view.input_ids, params["temperature"], params["top_k"],
                                               params["top_p"], repetition_penalty=params["repetition_penalty"],
                                               penalty_ids=view.input_ids[-s.repetition_window:], stages=stages,
                                               likely=view.likely)
        signals = {"adaptive_alpha": alpha, "adaptive_alpha_smoothed": smoothed, "state": state,
                   "token_entropy": h_token, "attention_entropy": h_attention, "lookahead": False}
        if s.lookahead and state == COLD:
            return Decision(candidates=lookahead_candidates(probs, s.spec_top_k, s.spec_top_p),
                            params=params, signals=signals, stages=stages or [])
        return Decision(probs=probs, support=support, params=params, signals=signals, stages=stages or [])

    def choose(self, views: list[StepView]) -> tuple[int, dict[str, Any]]:
        s = self.settings
        scores = []
        for view in views:
            last_layer = view.attentions[-1]
            mask = existing_positions(last_layer.shape[-1], view.input_ids.numel(), last_layer.device)
            scores.append(lookahead_score(last_layer, mask, s.entropy_weight, s.var_entropy_weight))
        best = min(range(len(scores)), key=scores.__getitem__)  # first of equal scores: the likelier one
        return best, {"lookahead": True, "lookahead_scores": [round(x, 6) for x in scores]}
