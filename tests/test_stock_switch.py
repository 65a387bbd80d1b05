"""One switch turns off every change made to a stock model: then the model is stock transformers' own."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from playground import PlaygroundError, compare
from playground.kernels import MeasuredLinear
from playground.model_changes import CHANGES, LOGIT_TOLERANCE, kv_cache, stock_requested
from playground.models import load_model, load_stock_model
from playground.norms import fused_norms
from playground.prompts import BENCHMARK_PROMPTS

PROMPT = "The ancient door creaked open"


@pytest.fixture(scope="module")
def stock_lm():
    return load_model(stock=True)


@pytest.fixture(scope="module")
def baseline():
    return load_stock_model()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits


def test_the_switch_reads_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_STOCK", raising=False)
    assert stock_requested() is False and stock_requested(True) is True
    monkeypatch.setenv("PLAYGROUND_STOCK", "1")
    assert stock_requested() is True and stock_requested(False) is False
    monkeypatch.setenv("PLAYGROUND_STOCK", "maybe")
    with pytest.raises(PlaygroundError, match="PLAYGROUND_STOCK must be 1 or 0.*'maybe'"):
        stock_requested()


def test_every_change_is_listed_with_what_it_does_and_why():
    assert [c.name for c in CHANGES] == ["float32 head", "one-call RMS norms", "grouped attention",
                                         "measured linear kernels", "growing KV cache", "side rows from their layer"]
    assert all(c.does and c.why for c in CHANGES)


def test_stock_runs_get_a_plain_dynamic_cache(tiny_llama):
    assert all(type(layer).__name__ == "DynamicLayer" for layer in kv_cache(tiny_llama.model.config, 40, True).layers)
    assert all(type(layer).__name__ == "GrowingLayer" for layer in kv_cache(tiny_llama.model.config, 40, False).layers)


@pytest.mark.slow
def test_with_the_switch_on_the_model_is_stock_transformers_own(stock_lm, real_lm):
    model = stock_lm.model
    assert stock_lm.stock and not real_lm.stock
    assert fused_norms(model) == 0 and not any(isinstance(m, MeasuredLinear) for m in model.modules())
    assert model.config._attn_implementation == "eager"  # stock's attention that returns weights
    assert fused_norms(real_lm.model) == 2 * real_lm.n_layers + 1
    assert real_lm.model.config._attn_implementation == "grouped"
    run = compare(stock_lm, PROMPT, ["greedy", "phase_slip"], max_new_tokens=4)
    assert type(run.cache) is DynamicCache and type(run.cache.layers[0]).__name__ == "DynamicLayer"
    assert not stock_lm.joins_side_rows and real_lm.joins_side_rows
    assert {layer.keys.shape[0] for layer in run.cache.layers} == {3}  # the side row whole, from the first layer


@pytest.mark.slow
def test_with_the_switch_on_logits_equal_stock_transformers_bit_for_bit(stock_lm, baseline):
    eager = load_stock_model()
    eager.set_attn_implementation("eager")
    for prompt in BENCHMARK_PROMPTS:
        ids = torch.tensor([stock_lm.encode(prompt)])
        with stock_lm.lock, stock_lm.fast_attention():  # a pass without weights: sdpa, stock's default
            fast = _logits(stock_lm.model, ids)
        assert torch.equal(fast, _logits(baseline, ids))
        assert torch.equal(_logits(stock_lm.model, ids), _logits(eager, ids))  # with weights: eager


@pytest.mark.slow
def test_with_the_switch_on_greedy_tokens_equal_stock_generate(stock_lm, baseline):
    ids = torch.tensor([stock_lm.encode(PROMPT)])
    with torch.inference_mode():
        expected = baseline.generate(ids, do_sample=False, max_new_tokens=16, pad_token_id=2)[0, ids.shape[1]:]
    run = compare(stock_lm, PROMPT, ["greedy"], max_new_tokens=16, record_order_parameter=False)
    assert run.columns[0].tokens == expected.tolist()


@pytest.mark.slow
def test_with_the_switch_off_logits_agree_with_stock_within_the_stated_tolerance(real_lm, baseline):
    assert not real_lm.stock and fused_norms(real_lm.model) > 0  # the changes are in force
    worst = 0.0
    for prompt in BENCHMARK_PROMPTS:
        ids = torch.tensor([real_lm.encode(prompt)])
        expected = _logits(baseline, ids)
        changed = _logits(real_lm.model, ids)
        worst = max(worst, float((changed - expected).abs().max()))
    assert worst <= LOGIT_TOLERANCE, f"max |logit difference| {worst:.2e} > {LOGIT_TOLERANCE:.0e}"
