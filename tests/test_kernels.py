"""Linear kernels chosen by measurement: every choice computes the same function and the same tokens."""
from __future__ import annotations

import pytest
import torch

from playground import compare, kernels
from playground.kernels import MeasuredLinear

PROMPT = "The ancient door creaked open"


def test_rows_between_measured_counts_follow_the_next_measured_count():
    assert kernels._fill_rows([4, 8]) == [3, 4, 5, 6, 7, 8]
    assert kernels._fill_rows([1]) == [1]
    assert kernels._fill_rows([]) == []


@pytest.mark.skipif(not kernels.onednn_available(), reason="no oneDNN in this torch build")
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 40])
def test_a_measured_linear_is_the_linear_function_whichever_kernel_runs(rows):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96)
    x = torch.randn(1, rows, 64)
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
    layer.__class__ = MeasuredLinear
    for onednn_rows in (frozenset(), frozenset(range(1, 9))):
        layer.onednn_rows = onednn_rows
        with torch.inference_mode():
            assert torch.allclose(layer(x), expected, atol=1e-5)


def test_the_timing_table_is_cached_per_machine_and_model(tmp_path, monkeypatch):
    layers = [torch.nn.Linear(8, 16), torch.nn.Linear(8, 16), torch.nn.Linear(16, 8, bias=False)]
    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    first = kernels.kernel_table(layers, "toy", tmp_path)
    assert set(first) == {"8x16+b", "16x8"} and set(first["16x8"]) == {"1", "2", "4", "8"}
    monkeypatch.setattr(kernels, "time_shape", lambda *a: pytest.fail("timed again despite the cache"))
    assert kernels.kernel_table(layers, "toy", tmp_path) == first


def test_an_unknown_kernel_mode_is_refused(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_KERNELS", "fastest")
    with pytest.raises(ValueError, match="PLAYGROUND_KERNELS must be one of stock, onednn, auto"):
        kernels.choose_linear_kernels(torch.nn.Linear(2, 2), "toy")


@pytest.mark.slow
def test_every_kernel_choice_gives_the_same_logits_and_greedy_tokens(real_lm, monkeypatch):
    ids = torch.tensor([real_lm.encode(PROMPT)] * 4)  # 4 rows: the batch size where oneDNN may be chosen
    chosen = {layer: layer.onednn_rows for layer in real_lm.model.modules() if isinstance(layer, MeasuredLinear)}
    results = {}
    try:
        for mode in ("stock", "onednn", "auto"):
            monkeypatch.setenv("PLAYGROUND_KERNELS", mode)
            kernels.choose_linear_kernels(real_lm.model, real_lm.name)
            with torch.inference_mode():
                logits = real_lm.model(ids[:, -1:]).logits  # one position, 4 rows
            results[mode] = (logits, compare(real_lm, PROMPT, ["greedy"], max_new_tokens=32).columns[0].tokens)
    finally:
        for layer, rows in chosen.items():
            layer.onednn_rows = rows
    for mode in ("onednn", "auto"):
        assert torch.allclose(results[mode][0], results["stock"][0], atol=1e-4)
        assert results[mode][1] == results["stock"][1]
