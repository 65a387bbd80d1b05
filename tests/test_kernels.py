"""Linear kernels chosen by measurement: every choice computes the same function and the same tokens."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from playground import compare, kernels
from playground.kernels import KERNELS, MeasuredLinear

PROMPT = "The ancient door creaked open"
AVAILABLE = [k for k in KERNELS if k != "onednn" or kernels.onednn_available()]


@contextmanager
def kernels_restored(model):
    """Put every linear layer's class, kernels and packed copy back as they were (shared model fixtures)."""
    saved = [(m, type(m), getattr(m, "kernel_by_rows", {}), getattr(m, "packed_weight", None))
             for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        yield
    finally:
        for layer, cls, by_rows, packed in saved:
            layer.__class__, layer.kernel_by_rows, layer.packed_weight = cls, by_rows, packed


def test_rows_between_measured_counts_follow_the_next_measured_count():
    measured = {1: "stock", 2: "onednn", 4: "weight_left", 8: "packed", 32: "stock"}
    filled = kernels._fill_rows(measured)
    assert list(filled) == list(range(1, 33))
    assert [filled[r] for r in (1, 2, 3, 4, 5, 8, 9, 32)] == [
        "stock", "onednn", "weight_left", "weight_left", "packed", "packed", "stock", "stock"]


@pytest.mark.parametrize("kernel", AVAILABLE)
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 40])
@pytest.mark.parametrize("bias", [True, False])
def test_a_measured_linear_is_the_linear_function_whichever_kernel_runs(kernel, rows, bias):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96, bias=bias)
    for x in (torch.randn(1, rows, 64), torch.randn(rows, 64)):
        expected = torch.nn.functional.linear(x, layer.weight, layer.bias)
        layer.__class__ = MeasuredLinear
        layer.kernel_by_rows = {r: KERNELS[kernel] for r in range(1, 41)}
        with torch.inference_mode():
            y = layer(x)
        assert y.shape == expected.shape and y.is_contiguous()
        assert torch.allclose(y, expected, atol=1e-5)


def test_each_shape_and_row_count_gets_the_fastest_kernel_of_the_table(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8, bias=False))
    slow_first = {"stock": 1.0, "onednn": 2.0, "weight_left": 3.0}
    table = {"8x16+b": {"1": slow_first, "2": slow_first,
                        "4": {"stock": 3.0, "onednn": 2.0, "weight_left": 1.0},
                        "8": {"stock": 3.0, "onednn": 1.0, "weight_left": 2.0},
                        "32": slow_first},
             "16x8": {r: slow_first for r in ("1", "2", "4", "8", "32")}}
    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    monkeypatch.setattr(kernels, "kernel_table", lambda *a: table)
    chosen = kernels.choose_linear_kernels(model, "toy")
    assert [chosen["8x16+b"][r] for r in (1, 2, 3, 4, 5, 8, 9, 32)] == [
        "stock", "stock", "weight_left", "weight_left", "onednn", "onednn", "stock", "stock"]
    assert type(model[0]) is MeasuredLinear and model[0].kernel_by_rows[3] is KERNELS["weight_left"]
    assert 1 not in model[0].kernel_by_rows and 40 not in model[0].kernel_by_rows  # stock: nn.Linear's own path
    assert type(model[1]) is torch.nn.Linear  # stock at every row count: a plain layer
    assert kernels.packed_bytes(model) == 0


@pytest.mark.skipif(not kernels.packed_available(), reason="no MKL packed sgemm in this torch build")
@pytest.mark.parametrize("rows", [1, 3, 5, 8])
def test_the_packed_kernel_is_the_linear_function_up_to_its_packed_row_count(rows):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96)
    packed = kernels.pack_weight(layer.weight)
    for x in (torch.randn(1, rows, 64), torch.randn(rows, 64)):
        with torch.inference_mode():
            y = kernels.packed_linear(x, layer.weight, layer.bias, packed)
        assert y.shape == (*x.shape[:-1], 96)
        assert torch.allclose(y, torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)


@pytest.mark.skipif(not kernels.packed_available(), reason="no MKL packed sgemm in this torch build")
def test_only_the_output_layer_is_packed_and_its_copy_is_counted(monkeypatch, tiny_llama):
    model = tiny_llama.model
    seen = {}

    def table(layers, name, cache, packable):
        seen["packable"] = set(packable)
        return {kernels._shape_key(m): {str(r): {"stock": 2.0, "packed": 1.0} if r <= 8 else {"stock": 1.0}
                                        for r in kernels.MEASURED_ROWS} for m in layers}

    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    monkeypatch.setattr(kernels, "kernel_table", table)
    with kernels_restored(model):
        chosen = kernels.choose_linear_kernels(model, "toy")
        head = model.get_output_embeddings()
        assert seen["packable"] == {kernels._shape_key(head)}
        assert chosen[kernels._shape_key(head)][5] == "packed" and chosen[kernels._shape_key(head)][9] == "stock"
        assert kernels.packed_bytes(model) == head.packed_weight.numel() * 4 > 0
        ids = torch.randint(3, 1000, (5, 1))
        with torch.inference_mode():
            packed_logits = model(ids).logits
            head.kernel_by_rows = {}
            stock_logits = model(ids).logits
        assert torch.allclose(packed_logits, stock_logits, atol=1e-4)


def test_a_layer_moved_off_the_cpu_runs_the_stock_linear():
    layer = torch.nn.Linear(8, 16)
    layer.__class__ = MeasuredLinear
    layer.kernel_by_rows = {r: lambda *a: pytest.fail("a CPU kernel ran on another device") for r in range(1, 33)}
    layer.to("meta")
    assert layer(torch.empty(5, 8, device="meta")).shape == (5, 16)


def test_the_timing_table_is_cached_per_machine_and_model(tmp_path, monkeypatch):
    layers = [torch.nn.Linear(8, 16), torch.nn.Linear(8, 16), torch.nn.Linear(16, 8, bias=False)]
    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    first = kernels.kernel_table(layers, "toy", tmp_path)
    assert set(first) == {"8x16+b", "16x8"} and set(first["16x8"]) == {str(r) for r in kernels.MEASURED_ROWS}
    assert set(first["16x8"]["4"]) == set(AVAILABLE) and all(ms > 0 for ms in first["16x8"]["4"].values())
    monkeypatch.setattr(kernels, "time_shape", lambda *a: pytest.fail("timed again despite the cache"))
    assert kernels.kernel_table(layers, "toy", tmp_path) == first


def test_an_unknown_kernel_mode_is_refused(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_KERNELS", "fastest")
    with pytest.raises(ValueError, match="PLAYGROUND_KERNELS must be one of stock, onednn, weight_left, auto"):
        kernels.choose_linear_kernels(torch.nn.Linear(2, 2), "toy")


@pytest.mark.slow
def test_every_kernel_choice_gives_the_same_logits_and_greedy_tokens(real_lm, monkeypatch):
    ids = torch.tensor([real_lm.encode(PROMPT)] * 4)  # 4 rows: where the kernels differ most
    results = {}
    with kernels_restored(real_lm.model):
        for mode in ("stock", *AVAILABLE[1:], "auto"):
            monkeypatch.setenv("PLAYGROUND_KERNELS", mode)
            kernels.choose_linear_kernels(real_lm.model, real_lm.name)
            with torch.inference_mode():
                logits = real_lm.model(ids[:, -1:]).logits  # one position, 4 rows
            results[mode] = (logits, compare(real_lm, PROMPT, ["greedy"], max_new_tokens=32).columns[0].tokens)
    assert len(results) == len(AVAILABLE) + 1
    for mode, (logits, tokens) in results.items():
        assert torch.allclose(logits, results["stock"][0], atol=1e-4), mode
        assert tokens == results["stock"][1], mode
