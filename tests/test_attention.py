"""Grouped attention: eager attention's outputs and weights, without copying the cache per query head."""
from __future__ import annotations

import torch

from playground import compare
from playground.attention import GROUPED, register

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

PROMPT = "The ancient door creaked open"


def _outputs(lm, implementation: str, ids: torch.Tensor, step: torch.Tensor):
    """A 12-token causal forward, then one cached decoding step; logits and weights of both."""
    from transformers import DynamicCache

    lm.model.set_attn_implementation(implementation)
    try:
        with torch.inference_mode():
            cache = DynamicCache(config=lm.model.config)
            first, cache = lm.forward(ids, cache, output_attentions=True)
            second, _ = lm.forward(step, cache, output_attentions=True)
    finally:
        lm.model.set_attn_implementation("eager")
    return [first.logits, second.logits, *first.attentions, *second.attentions]


def test_grouped_attention_gives_eager_logits_and_weights_with_grouped_query_heads(tiny_llama):
    assert tiny_llama.n_kv_heads < tiny_llama.n_heads  # 2 query heads per key/value head
    torch.manual_seed(0)
    ids = torch.randint(3, 1000, (3, 12))
    step = torch.randint(3, 1000, (3, 1))
    eager = _outputs(tiny_llama, "eager", ids, step)
    grouped = _outputs(tiny_llama, register(), ids, step)
    assert len(grouped) == 2 + 2 * tiny_llama.n_layers
    assert grouped[2].shape == (3, tiny_llama.n_heads, 12, 12)  # causal weights of the 12-token pass
    assert float(grouped[2][0, 0, 0, 1:].abs().max()) == 0.0  # the first token sees only itself
    for a, b in zip(grouped, eager):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())


def test_the_default_model_decodes_through_grouped_attention_with_eager_tokens_and_r(real_lm):
    assert real_lm.model.config._attn_implementation == GROUPED
    samplers = ["greedy", "adaptive_entropy"]
    with recorded_draws() as margins:
        grouped = compare(real_lm, PROMPT, samplers, max_new_tokens=16)
    assert_greedy_decided(grouped.columns[0].rows)  # two attention kernels: decided tokens only
    assert_draws_decided(margins)
    real_lm.model.set_attn_implementation("eager")
    try:
        eager = compare(real_lm, PROMPT, samplers, max_new_tokens=16)
    finally:
        real_lm.model.set_attn_implementation(GROUPED)
    for g, e in zip(grouped.columns, eager.columns):
        assert g.tokens == e.tokens
        for rg, re in zip(g.rows, e.rows):
            assert abs(rg.order_parameter - re.order_parameter) < 1e-4
            assert abs(rg.entropy - re.entropy) < 1e-4
