"""entropix (xjdr-alt/entropix, the torch port's sampler).

    clean logits            -> ent = H_bits, vent = sum p (log2 p + ent)^2
    last layer's attention  -> attn_ent, attn_vent, agreement, interaction_strength
    (ent, vent) quadrant    -> LELV argmax | HELV pause or hotter | LEHV hotter, wider top-k
                               | HEHV much hotter, narrower top-p | MIDDLE adaptive: five draws,
                               the one with the highest clean log-probability wins

The public code's defects, fixed here (each has a test the public code fails):
* its min-p filtered the logits after the probabilities were taken, so it never applied: min-p
  here is a link of the chain (transformers' MinPLogitsWarper) before the distribution is made;
* its "multinomial" was argmax(p / u) with u uniform, which does not sample in proportion to p:
  every draw here is proportional (the engine's inverse-CDF draw; torch.multinomial for the five);
* its attention statistics ran over empty cache slots: here only the positions that exist count.

transformers returns attention weights a, not scores: interaction_strength uses s = log a centred
per row (the scores up to their per-row constant), over the existing positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..precision import wide
from .base import (Decision, PlaygroundError, RunContext, Sampler, Stage, StepView, argmax_token, point_mass_stage,
                   require, setting)
from .temperature import check_sampling_params, sampling_probs

LELV, HELV, LEHV, HEHV, MIDDLE = "LELV", "HELV", "LEHV", "HEHV", "MIDDLE"
LN2 = math.log(2.0)


def logit_stats(logits: torch.Tensor) -> tuple[float, float]:
    """(ent, vent) of softmax(logits) in bits: H_bits and sum p (log2 p + H_bits)^2."""
    log2_p = torch.log_softmax(wide(logits), dim=-1) / LN2
    p = torch.exp2(log2_p)
    terms = torch.where(p > 0, p * log2_p, torch.zeros_like(p))
    ent = float(-terms.sum())
    vent = float(torch.where(p > 0, p * (log2_p + ent) ** 2, torch.zeros_like(p)).sum())
    return ent, vent


def attention_stats(last_layer: torch.Tensor, n_existing: int) -> dict[str, float]:
    """attn_ent, attn_vent, agreement and interaction_strength of the newest query's rows [heads, n].

    Only the first ``n_existing`` positions count (a row may be longer: empty cache slots).
    """
    a = wide(last_layer[:, :n_existing]).clamp_min(0.0)
    tiny = torch.finfo(a.dtype).tiny
    a = a / a.sum(-1, keepdim=True).clamp_min(tiny)
    log2_a = torch.where(a > 0, torch.log2(a.clamp_min(tiny)), torch.zeros_like(a))
    per_head = -(a * log2_a).sum(-1)  # bits, one per head
    mean_row = a.mean(0, keepdim=True)
    log_a = torch.log(a.clamp_min(1e-30))
    scores = log_a - log_a.mean(-1, keepdim=True)
    return {"attn_ent": float(per_head.mean()), "attn_vent": float(per_head.var(correction=0)),
            "agreement": float((a - mean_row).abs().mean()), "interaction_strength": float(scores.abs().mean())}


def quadrant(ent: float, vent: float) -> str:
    """The state, tested in the public order: LELV, HELV, LEHV, HEHV, else MIDDLE."""
    if ent < 0.1 and vent < 0.1:
        return LELV
    if ent > 3.0 and vent < 0.1:
        return HELV
    if ent < 5.0 and vent > 5.0:
        return LEHV
    if ent > 5.0 and vent > 5.0:
        return HEHV
    return MIDDLE


def quadrant_params(state: str, stats: dict[str, float], temperature: float, top_p: float, top_k: int,
                    min_p: float) -> dict[str, Any]:
    """The sampling parameters of a quadrant (the public formulas), from the base ones."""
    ent, vent = stats["ent"], stats["vent"]
    attn_ent, attn_vent = stats["attn_ent"], stats["attn_vent"]
    agreement, strength = stats["agreement"], stats["interaction_strength"]
    params = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p}
    if state == HELV:
        params["temperature"] = min(1.5, temperature * (1.3 + 0.2 * attn_ent))
    elif state == LEHV:
        params["temperature"] = min(1.5, temperature * (1.2 + 0.3 * strength))
        params["top_k"] = max(5, int(top_k * (1 + 0.5 * (1 - agreement))))
    elif state == HEHV:
        params["temperature"] = max(2.0, temperature * (2.0 + 0.5 * attn_vent))
        params["top_p"] = max(0.5, top_p - 0.2 * attn_ent)
    elif state == MIDDLE:
        params["temperature"] = temperature * (1 + 0.3 * (ent + vent) + 0.2 * (attn_ent + attn_vent) - 0.2 * agreement)
        params["top_p"] = min(1.0, max(0.1, top_p * (1 + 0.1 * attn_vent)))
        params["top_k"] = min(100, max(1, round(top_k * (1 + 0.3 * strength - 0.2 * agreement))))
        params["min_p"] = min(0.5, max(0.01, 0.03 * (1 - 0.5 * (ent + vent))))
    params["temperature"] = min(100.0, max(1e-3, params["temperature"]))  # the chain's range
    return params


def best_of(probs: torch.Tensor, clean_logits: torch.Tensor, n: int,
            generator: torch.Generator) -> tuple[int, list[int]]:
    """Draw ``n`` candidates from ``probs`` (in proportion, the sampler's own generator); keep the one
    with the highest clean log-probability. The draws are on the CPU, like every random draw of a run."""
    candidates = torch.multinomial(probs.detach().to("cpu", torch.float64), n, replacement=True, generator=generator)
    best = candidates[clean_logits[candidates.to(clean_logits.device)].argmax().cpu()]
    return int(best), candidates.tolist()


def best_of_distribution(probs: torch.Tensor, clean_logits: torch.Tensor, n: int) -> torch.Tensor:
    """The law of ``best_of``: P(the best of n draws is the token ranked r by clean logit)
    = (1 - F(r-1))^n - (1 - F(r))^n, with F the probs mass of the tokens ranked <= r."""
    order = torch.argsort(wide(clean_logits), descending=True, stable=True)
    mass = torch.cumsum(wide(probs)[order] / wide(probs).sum(), 0).clamp(0.0, 1.0)
    before = torch.cat([mass.new_zeros(1), mass[:-1]])
    law = torch.zeros_like(mass)
    law[order] = (1 - before) ** n - (1 - mass) ** n
    return law.clamp_min(0.0)


@dataclass
class EntropixSettings:
    """Defaults are the public torch port's."""

    temperature: float = setting(0.666, "base temperature the quadrants scale")
    top_p: float = setting(0.90, "base nucleus mass (1 = off)")
    top_k: int = setting(27, "base top-k (0 = off)")
    min_p: float = setting(0.0, "base min-p outside the MIDDLE quadrant, which sets its own (0 = off)")
    candidates: int = setting(5, "MIDDLE quadrant: draws, of which the highest clean log-probability wins")
    pause_text: str = setting("", "HELV: emit this text's first token to think, then sample (empty = off)")

    def __post_init__(self):
        p = "entropix."
        check_sampling_params(self.temperature, self.top_k, self.top_p, self.min_p, prefix=p)
        require(self.temperature > 0, f"{p}temperature must be > 0, got {self.temperature}")
        require(1 <= self.candidates <= 64, f"{p}candidates must be an integer in [1, 64], got {self.candidates}")


class EntropixSampler(Sampler):
    """The entropix quadrant sampler, its public defects fixed."""

    name = "entropix"
    Settings = EntropixSettings
    needs_attentions = True

    def __init__(self, settings: EntropixSettings | None = None, lm: Any = None):
        super().__init__(settings, lm)
        self.generator = torch.Generator()
        self.pause_id: int | None = None

    def start(self, ctx: RunContext) -> None:
        self.generator = torch.Generator().manual_seed(ctx.seed)  # the five draws: never the column's draw
        text = self.settings.pause_text
        ids = self.lm.tokenizer.encode(text, add_special_tokens=False) if text and self.lm is not None else []
        self.pause_id = ids[0] if ids else None

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        if view.attentions is None:
            raise PlaygroundError("entropix needs attention weights (grouped or eager attention, not sdpa)")
        ent, vent = logit_stats(view.logits)
        stats = {"ent": ent, "vent": vent, **attention_stats(view.attentions[-1], view.input_ids.numel())}
        state = quadrant(ent, vent)
        signals = {"state": state, **{k: round(v, 6) for k, v in stats.items()}}
        trace = view.record_stages
        if state == LELV:
            token = argmax_token(view.logits)
            stages = [point_mass_stage("argmax", "LELV: low entropy, low varentropy", view.logits, token)]
            return Decision(token=token, params={}, signals=signals, stages=stages if trace else [])
        after_pause = self.pause_id is not None and int(view.input_ids[-1]) == self.pause_id
        if state == HELV and self.pause_id is not None and not after_pause:
            signals["paused"] = True
            stages = [point_mass_stage("pause", f"HELV: the pause token {s.pause_text!r}", view.logits, self.pause_id)]
            return Decision(token=self.pause_id, params={}, signals=signals, stages=stages if trace else [])
        params = quadrant_params(state, stats, s.temperature, s.top_p, s.top_k, s.min_p)
        stages = [Stage("quadrant", f"{state}: " + ", ".join(f"{k}={v:.3g}" for k, v in params.items()))] \
            if trace else None
        probs = sampling_probs(view.logits, view.input_ids, params["temperature"], params["top_k"],
                               params["top_p"], params["min_p"], stages=stages, likely=view.likely)
        if state != MIDDLE:
            return Decision(probs=probs, params=params, signals=signals, stages=stages or [])
        token, drawn = best_of(probs, view.logits, s.candidates, self.generator)
        signals["candidates"] = drawn
        # the token is the sampler's own choice; probs is the law it was chosen by (the row's sampler view)
        law = best_of_distribution(probs, view.logits, s.candidates)
        if trace:
            stages.append(Stage(f"best_of_{s.candidates}", f"{s.candidates} own draws, the best clean log-p wins",
                                probs=law))
        return Decision(token=token, probs=law, params=params, signals=signals, stages=stages or [])
