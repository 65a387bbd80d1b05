"""The temperature sampler's distribution and the telemetry statistics, against direct computations."""
from __future__ import annotations

import math

import pytest
import torch

from playground.samplers import StepView, make_settings
from playground.samplers.temperature import TemperatureSampler
from playground.telemetry import distribution_stats


def reference_probs(logits, history, temperature, top_k, top_p, min_p, penalty):
    """Written out by hand, rule by rule, in generate's order."""
    x = logits.clone().double()
    for t in set(history):
        x[t] = x[t] / penalty if x[t] > 0 else x[t] * penalty
    x = x / temperature
    if top_k:
        kth = torch.sort(x, descending=True).values[top_k - 1]
        x[x < kth] = -math.inf
    p = torch.softmax(x, 0)
    order = torch.argsort(p, descending=True)
    keep, total = [], 0.0
    for i in order.tolist():  # smallest set whose mass reaches top_p
        keep.append(i)
        total += float(p[i])
        if total >= top_p:
            break
    mask = torch.full_like(x, -math.inf)
    mask[keep] = 0.0
    x = x + mask
    p = torch.softmax(x, 0)
    if min_p:
        x[p < min_p * p.max()] = -math.inf
    return torch.softmax(x, 0)


@pytest.mark.parametrize("temperature, top_k, top_p, min_p, penalty", [
    (0.8, 40, 0.92, 0.0, 1.0),
    (1.3, 0, 0.5, 0.0, 1.0),
    (0.6, 5, 1.0, 0.0, 1.3),
    (1.0, 0, 1.0, 0.1, 1.0),
])
def test_distribution_equals_direct_softmax_of_processed_logits(temperature, top_k, top_p, min_p, penalty):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, generator=g) * 3
    history = [3, 7, 7, int(logits.argmax()), int(logits.argmin())]
    settings = make_settings("temperature", {"temperature": temperature, "top_k": top_k, "top_p": top_p,
                                             "min_p": min_p, "repetition_penalty": penalty})
    view = StepView(step=0, logits=logits, input_ids=torch.tensor(history), n_prompt=len(history))
    probs = TemperatureSampler(settings).decide(view).probs
    ref = reference_probs(logits, history, temperature, top_k, top_p, min_p, penalty)
    assert torch.allclose(probs.double(), ref, atol=1e-6)
    assert (probs > 0).sum() == (ref > 0).sum()


def test_zero_temperature_is_greedy():
    logits = torch.tensor([0.1, 2.0, 1.9])
    view = StepView(step=0, logits=logits, input_ids=torch.tensor([0]), n_prompt=1)
    decision = TemperatureSampler(make_settings("temperature", {"temperature": "0"})).decide(view)
    assert decision.token == 1 and decision.probs is None


def test_entropy_and_varentropy_match_a_direct_computation():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, -math.inf], [0.0, 0.0, 0.0, 0.0, 0.0]])
    stats = distribution_stats(logits)
    for row in range(2):
        p = [math.exp(v) for v in logits[row].tolist()]
        z = sum(p)
        p = [v / z for v in p if v > 0]
        h = -sum(v * math.log(v) for v in p)
        h_bits = h / math.log(2)
        var = sum(v * (math.log2(v) + h_bits) ** 2 for v in p)
        assert float(stats.entropy[row]) == pytest.approx(h, rel=1e-5)
        assert float(stats.entropy_bits_norm[row]) == pytest.approx(h_bits / math.log2(5), rel=1e-5)
        assert float(stats.varentropy[row]) == pytest.approx(var, rel=1e-4, abs=1e-6)
    assert float(stats.varentropy[1]) == pytest.approx(0.0, abs=1e-6)  # uniform: every surprisal equal
    assert float(stats.entropy_bits_norm[1]) == pytest.approx(4 / 5 * 0 + math.log2(5) / math.log2(5))
