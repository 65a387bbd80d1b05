"""entropix: the quadrants on constructed logits and attention, the best of five, and the public defects fixed."""
from __future__ import annotations

import math

import pytest
import torch

from playground.columns import ColumnSpec
from playground.engine import Engine, RunOptions, draw
from playground.samplers import make_settings
from playground.samplers.base import StepView
from playground.samplers.entropix import (HEHV, HELV, LEHV, LELV, MIDDLE, EntropixSampler, attention_stats,
                                          best_of, best_of_distribution, logit_stats, quadrant)
from playground.samplers.temperature import sampling_probs


def spike_with_tail(top: float, tail_tokens: int) -> torch.Tensor:
    """Logits of p = top on token 0 and (1 - top) spread evenly over ``tail_tokens`` others."""
    p = torch.full((tail_tokens + 1,), (1 - top) / tail_tokens, dtype=torch.float64)
    p[0] = top
    return p.log()


CONSTRUCTED = {  # (ent, vent) in bits of each, worked out in the comments
    LELV: torch.tensor([30.0] + [0.0] * 15),  # one certain token: ent ~ 0, vent ~ 0
    HELV: torch.zeros(16),  # uniform over 16: ent = 4, vent = 0
    LEHV: spike_with_tail(0.9, 2 ** 16),  # ent ~ 2.07, vent ~ 33
    HEHV: spike_with_tail(0.5, 2 ** 20),  # ent ~ 11, vent ~ 100
    MIDDLE: torch.zeros(4),  # uniform over 4: ent = 2, vent = 0
}


def view(logits: torch.Tensor, heads: int = 3, n: int = 6) -> StepView:
    attention = torch.softmax(torch.randn(2, heads, n, generator=torch.Generator().manual_seed(0)), -1)
    return StepView(step=0, logits=logits.float(), input_ids=torch.arange(n), n_prompt=n, attentions=attention)


@pytest.mark.parametrize("state", list(CONSTRUCTED))
def test_each_quadrant_is_reached(state):
    ent, vent = logit_stats(CONSTRUCTED[state])
    assert quadrant(ent, vent) == state
    sampler = EntropixSampler(make_settings("entropix"))
    sampler.generator = torch.Generator().manual_seed(0)
    decision = sampler.decide(view(CONSTRUCTED[state]))
    assert decision.signals["state"] == state
    assert {"ent", "vent", "attn_ent", "attn_vent", "agreement", "interaction_strength"} <= set(decision.signals)
    if state == LELV:
        assert decision.token == 0 and decision.probs is None
    elif state == MIDDLE:
        assert decision.token in decision.signals["candidates"] and len(decision.signals["candidates"]) == 5
    else:
        assert decision.token is None and decision.probs is not None


def test_logit_stats_by_hand():
    ent, vent = logit_stats(spike_with_tail(0.9, 2 ** 16))
    h = -(0.9 * math.log2(0.9) + 0.1 * math.log2(0.1 / 2 ** 16))
    v = 0.9 * (math.log2(0.9) + h) ** 2 + 0.1 * (math.log2(0.1 / 2 ** 16) + h) ** 2
    assert ent == pytest.approx(h, rel=1e-9) and vent == pytest.approx(v, rel=1e-9)


def test_the_middle_quadrant_keeps_the_most_likely_of_its_candidates():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5])
    probs = torch.softmax(logits, -1)
    generator = torch.Generator().manual_seed(3)
    for _ in range(50):
        token, drawn = best_of(probs, logits, 5, generator)
        assert len(drawn) == 5 and token == min(drawn)  # index order is clean-logit order here
    # the law of the best of five, against draws
    law = best_of_distribution(probs, logits, 5)
    assert float(law.sum()) == pytest.approx(1.0)
    counts = torch.zeros(6)
    for _ in range(4000):
        counts[best_of(probs, logits, 5, generator)[0]] += 1
    assert torch.allclose(counts / 4000, law.float(), atol=0.03)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def public_multinomial(probs: torch.Tensor, generator: torch.Generator) -> int:
    """The public port's draw: argmax(p / u) with u uniform (exponential u would be proportional)."""
    u = torch.rand(probs.shape, generator=generator)
    return int((probs / u).argmax())


def test_draws_are_proportional_and_the_public_argmax_p_over_u_is_not():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1])
    generator = torch.Generator().manual_seed(0)
    n = 20_000
    ours = torch.zeros(4)
    public = torch.zeros(4)
    for _ in range(n):
        ours[draw(probs, float(torch.rand((), generator=generator)))] += 1
        public[public_multinomial(probs, generator)] += 1
    fives = torch.bincount(torch.multinomial(probs, n, replacement=True, generator=generator), minlength=4).float()
    critical = 16.27  # chi-square, 3 degrees of freedom, p = 0.001
    assert chi_square(ours, probs) < critical and chi_square(fives, probs) < critical
    assert chi_square(public, probs) > 10 * critical  # 680 here: 0.59 of the draws go to p = 0.5


def public_min_p(logits: torch.Tensor, temperature: float, min_p: float) -> torch.Tensor:
    """The public port: the probabilities are taken, then min-p filters the logits, which nothing reads again."""
    probs = torch.softmax(logits / temperature, -1)
    p_max = probs.max()
    logits = torch.where(probs < min_p * p_max, torch.full_like(logits, -math.inf), logits)  # noqa: F841
    return probs


def test_min_p_takes_effect():
    logits = torch.tensor([3.0, 2.5, 0.0, -1.0])
    ours = sampling_probs(logits, torch.tensor([0]), 1.0, top_k=0, top_p=1.0, min_p=0.1)
    public = public_min_p(logits, 1.0, 0.1)
    assert (ours[2:] == 0).all() and (ours[:2] > 0).all()  # p of tokens 2, 3 < 0.1 · p_max
    assert (public[2:] > 0).all()  # the public min-p never applies
    # in the MIDDLE quadrant the sampler's own min-p (>= 0.01) removes what it should
    tail = torch.tensor([2.0, 2.0, 2.0, 2.0, -8.0])  # ent ~ 2 bits: MIDDLE; token 4's p ~ 1e-5
    sampler = EntropixSampler(make_settings("entropix", {"top_k": 0, "top_p": 1.0}))
    sampler.generator = torch.Generator().manual_seed(0)
    decision = sampler.decide(view(tail))
    assert decision.signals["state"] == MIDDLE and decision.params["min_p"] >= 0.01
    assert float(decision.probs[4]) == 0.0


def test_attention_statistics_ignore_empty_cache_slots():
    rows = torch.softmax(torch.randn(4, 7, generator=torch.Generator().manual_seed(1)), -1)
    padded = torch.cat([rows, torch.zeros(4, 5)], -1)  # five empty slots after the seven positions
    assert attention_stats(padded, 7) == pytest.approx(attention_stats(rows, 7))
    # the public port took the softmax of scores over every slot, empty ones (score 0) included
    scores = torch.log(rows)
    public = torch.softmax(torch.cat([scores, torch.zeros(4, 5)], -1), -1)
    public_ent = float(-(public * public.log2()).sum(-1).mean())
    assert abs(public_ent - attention_stats(rows, 7)["attn_ent"]) > 0.1


def test_pause_text_emits_its_token_once_then_samples(real_lm):
    settings = make_settings("entropix", {"pause_text": "..."})
    sampler = EntropixSampler(settings, real_lm)
    sampler.start(type("Ctx", (), {"seed": 0, "prompt_ids": torch.tensor([1])})())
    pause = real_lm.tokenizer.encode("...", add_special_tokens=False)[0]
    uniform = torch.zeros(real_lm.model.config.vocab_size)  # HELV: ent = log2 V, vent = 0
    first = sampler.decide(view(uniform))
    assert first.signals["state"] == HELV and first.token == pause
    after = view(uniform)
    after.input_ids = torch.tensor([5, 6, pause])
    second = sampler.decide(after)
    assert second.token is None and second.probs is not None  # right after the pause: sample, hotter


def test_entropix_on_the_default_model(real_lm):
    run = Engine(real_lm).run("The ancient door creaked open", ["entropix", ColumnSpec("entropix", {"pause_text": ""})],
                              RunOptions(seed=2, max_new_tokens=24))
    first, second = run.columns
    assert first.tokens == second.tokens  # same spec, same tokens (the five draws use the sampler's generator)
    states = {row.state for row in first.rows}
    assert states <= {LELV, HELV, LEHV, HEHV, MIDDLE} and len(first.rows) >= 1
    for row in first.rows:
        assert {"ent", "vent", "attn_ent", "attn_vent", "agreement", "interaction_strength"} <= set(row.extra)
        assert 0 < row.sampler_prob <= 1 and math.isfinite(row.sampler_entropy)
