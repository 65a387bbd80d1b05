"""The growing KV cache: DynamicCache's contents, written in place instead of concatenated."""
from __future__ import annotations

import torch
from transformers import DynamicCache

from playground import compare
from playground.cache import GrowingLayer, growing_cache

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

PROMPT = "The ancient door creaked open"


def _feed(cache, steps):
    """Prefill 5 positions on 1 row, fork to 3 rows, decode, crop, re-index, edit in place (every layer)."""
    torch.manual_seed(0)

    def update(rows, n):
        keys, values = torch.randn(rows, 2, n, 4), torch.randn(rows, 2, n, 4)
        return [layer.update(keys, values) for layer in cache.layers][0]

    layer = cache.layers[0]
    update(1, 5)
    cache.batch_repeat_interleave(3)
    pointers, rows = [], 3
    for step in range(steps):
        keys, values = update(rows, 1)
        pointers.append(keys.data_ptr())
        if step == 3:
            cache.crop(-2)
        if step == 5:
            cache.batch_select_indices(torch.tensor([2, 0]))
            rows = 2
            update(rows, 1)
            layer.values[1, :, -3:] += 1.0  # a side row's in-place perturbation
    return layer.keys.clone(), layer.values.clone(), pointers


def test_a_growing_layer_holds_what_a_dynamic_layer_holds(tiny_llama):
    config = tiny_llama.model.config
    expected = _feed(DynamicCache(config=config), 9)
    got = _feed(growing_cache(config, capacity_limit=64), 9)
    assert type(growing_cache(config).layers[0]) is GrowingLayer
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert got[0].shape == (2, 2, 5 + 6 - 2 + 1 + 3, 4)
    assert len(set(got[2][:3])) == 1  # the first decoding steps write into one buffer: no copy per step
    assert len(set(expected[2][:3])) == 3  # torch.cat: a new tensor every step


def test_capacity_stops_at_the_limit_and_grows_by_doubling_without_one(tiny_llama):
    config = tiny_llama.model.config
    for limit, capacities in ((12, [10, 12]), (None, [10, 22])):
        cache = growing_cache(config, capacity_limit=limit)
        layer = cache.layers[0]
        layer.update(torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))
        seen = [layer.key_buffer.shape[2]]
        for _ in range(6):
            layer.update(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
        seen.append(layer.key_buffer.shape[2])
        assert seen == capacities and layer.get_seq_length() == 11


def test_runs_decode_the_same_tokens_through_the_growing_cache(real_lm, monkeypatch):
    samplers = ["greedy", "temperature", "phase_slip", "adaptive_entropy"]  # side rows, lookahead rows, re-indexing
    with recorded_draws() as margins:
        growing = compare(real_lm, PROMPT, samplers, max_new_tokens=24, seed=3)
    assert_greedy_decided(growing.columns[0].rows)  # two caches, other copies: decided tokens only
    assert_draws_decided(margins)
    monkeypatch.setattr("playground.model_changes.growing_cache",
                        lambda config, capacity=None: DynamicCache(config=config))
    plain = compare(real_lm, PROMPT, samplers, max_new_tokens=24, seed=3)
    for g, p in zip(growing.columns, plain.columns):
        assert g.tokens == p.tokens
        assert [round(r.entropy, 5) for r in g.rows] == [round(r.entropy, 5) for r in p.rows]


def test_a_re_index_selects_into_a_buffer_the_next_update_writes_into(tiny_llama):
    config = tiny_llama.model.config
    cache = growing_cache(config, capacity_limit=64)
    layer = cache.layers[0]
    keys, values = torch.randn(3, 2, 6, 4), torch.randn(3, 2, 6, 4)
    layer.update(keys, values)
    layer.batch_select_indices(torch.tensor([2, 0, 0]))
    assert torch.equal(layer.keys, keys[[2, 0, 0]]) and torch.equal(layer.values, values[[2, 0, 0]])
    selected = layer.keys.data_ptr()
    assert selected == layer.key_buffer.data_ptr() and layer.key_buffer.shape[2] > 6  # room to grow
    new_keys = torch.randn(3, 2, 1, 4)
    layer.update(new_keys, torch.randn(3, 2, 1, 4))
    assert layer.keys.data_ptr() == selected  # written in place: no second copy
    assert torch.equal(layer.keys[:, :, :6], keys[[2, 0, 0]]) and torch.equal(layer.keys[:, :, 6:], new_keys)


def test_a_re_index_copies_only_the_rows_that_change_and_gives_back_rows_that_went(tiny_llama):
    config = tiny_llama.model.config
    layer = growing_cache(config, capacity_limit=64).layers[0]
    keys = torch.randn(4, 2, 6, 4)
    layer.update(keys, keys.clone())
    layer.batch_select_indices(torch.tensor([0, 1, 2, 3, 3, 3]))  # two rows more: a buffer with room for two more
    buffer = layer.key_buffer
    assert buffer.shape[0] == 8 and torch.equal(layer.keys, keys[[0, 1, 2, 3, 3, 3]])
    kept = buffer[0].clone()
    layer.batch_select_indices(torch.tensor([0, 5, 2, 1, 4]))  # rows 1 and 3 change places; row 0 stays
    assert layer.key_buffer is buffer and torch.equal(layer.keys, keys[[0, 3, 2, 1, 3]])
    assert torch.equal(buffer[0], kept)
    layer.batch_select_indices(torch.tensor([2, 0, 3, 4, 1, 0, 0]))  # seven of eight rows: in place still
    assert layer.key_buffer is buffer and torch.equal(layer.keys, keys[[2, 0, 1, 3, 3, 0, 0]])
    layer.batch_select_indices(torch.tensor([3]))  # one row of eight: a fresh buffer of its own size
    assert layer.key_buffer is not buffer and layer.key_buffer.shape[0] == 1
    assert torch.equal(layer.keys, keys[[3]]) and torch.equal(layer.values, keys[[3]])
