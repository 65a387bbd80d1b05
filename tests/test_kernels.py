"""Linear kernels chosen by measurement: every choice computes the same function and the same tokens."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from playground import compare, kernels
from playground.kernels import KERNELS, MeasuredLinear
from playground.model_changes import use_measured_kernels

from margins import LOGIT_NOISE, assert_greedy_decided

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
    measured = {1: "stock", 2: "onednn", 4: "weight_left", 8: "packed", 16: "onednn", 32: "stock", 48: "onednn",
                64: "weight_left"}
    filled = kernels._fill_rows(measured)
    assert list(filled) == list(range(1, 65))
    assert [filled[r] for r in (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 48, 49, 64)] == [
        "stock", "onednn", "weight_left", "weight_left", "packed", "packed", "onednn", "onednn", "stock", "stock",
        "onednn", "onednn", "weight_left", "weight_left"]


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
                        "16": slow_first, "32": slow_first, "48": slow_first,
                        "64": {"stock": 2.0, "onednn": 1.0, "weight_left": 3.0}},
             "16x8": {str(r): slow_first for r in kernels.MEASURED_ROWS}}
    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    monkeypatch.setattr(kernels, "kernel_table", lambda *a: table)
    chosen = use_measured_kernels(model, "toy")
    assert [chosen["8x16+b"][r] for r in (1, 2, 3, 4, 5, 8, 9, 32, 48, 49, 64)] == [
        "stock", "stock", "weight_left", "weight_left", "onednn", "onednn", "stock", "stock", "stock", "onednn",
        "onednn"]
    assert type(model[0]) is MeasuredLinear and model[0].kernel_by_rows[3] is KERNELS["weight_left"]
    assert 1 not in model[0].kernel_by_rows and 40 not in model[0].kernel_by_rows  # stock: nn.Linear's own path
    assert 65 not in model[0].kernel_by_rows  # above the measured rows: stock
    assert type(model[1]) is torch.nn.Linear  # stock at every row count: a plain layer
    assert kernels.packed_bytes(model) == 0


@pytest.mark.skipif(not kernels.packed_available(), reason="no MKL packed sgemm in this torch build")
@pytest.mark.parametrize("rows", [1, 3, 5, 8, 9, 16, 17])
def test_the_packed_kernel_is_the_linear_function_at_any_row_count(rows):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 96)
    packed = kernels.pack_weight(layer.weight)
    for x in (torch.randn(1, rows, 64), torch.randn(rows, 64)):
        with torch.inference_mode():
            y = kernels.packed_linear(x, layer.weight, layer.bias, packed)
        assert y.shape == (*x.shape[:-1], 96)
        assert torch.allclose(y, torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)


def _packed_fastest(layers, name, cache):
    """A kernel table where packed is fastest at 3-16 rows for every shape, saving 1 ms a layer."""
    return {kernels._shape_key(m): {str(r): {"stock": 2.0, "packed": 1.0} if 2 < r <= 16 else {"stock": 1.0}
                                    for r in kernels.MEASURED_ROWS} for m in layers}


def test_packed_copies_go_to_the_most_time_saved_per_byte_within_the_budget():
    layers = [torch.nn.Linear(10, 10), torch.nn.Linear(10, 10), torch.nn.Linear(100, 10), torch.nn.Linear(10, 20)]
    ms = {"small": {"stock": 2.0, "packed": 1.0},  # 10x10: 1 ms saved per layer, 2 layers, 800 bytes
          "big": {"stock": 2.0, "packed": 1.5},  # 100x10: 0.5 ms, 4,000 bytes
          "never": {"stock": 1.0, "packed": 3.0}}  # 10x20: packed is never faster
    table = {"10x10+b": {"4": ms["small"], "32": {"stock": 1.0}},
             "100x10+b": {"4": ms["big"], "8": {"stock": 3.0, "packed": 1.0}},  # its best row count: 2 ms
             "10x20+b": {"4": ms["never"]}}
    assert kernels.shapes_to_pack(table, layers, budget=10_000) == {"10x10+b", "100x10+b"}
    # per byte: 10x10 saves 2 ms / 800 B, 100x10 2 ms / 4,000 B: the budget takes the first only
    assert kernels.shapes_to_pack(table, layers, budget=3_999) == {"10x10+b"}
    assert kernels.shapes_to_pack(table, layers, budget=799) == set()


@pytest.mark.parametrize("value,budget", [("0", 0), ("1.5", 1_500_000), (" 200 ", 200_000_000)])
def test_the_pack_budget_is_read_in_megabytes(monkeypatch, value, budget):
    monkeypatch.setenv("PLAYGROUND_PACK_MB", value)
    assert kernels.pack_budget_bytes() == budget


@pytest.mark.parametrize("value", ["-1", "lots", "nan"])
def test_a_bad_pack_budget_is_refused(monkeypatch, value):
    monkeypatch.setenv("PLAYGROUND_PACK_MB", value)
    with pytest.raises(ValueError, match="PLAYGROUND_PACK_MB must be a number of megabytes >= 0"):
        kernels.pack_budget_bytes()


def test_without_a_set_budget_packed_copies_may_take_an_eighth_of_the_memory(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_PACK_MB", raising=False)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pytest.skip("this system does not report its memory")
    assert kernels.pack_budget_bytes() == total // 8


@pytest.mark.skipif(not kernels.packed_available(), reason="no MKL packed sgemm in this torch build")
@pytest.mark.parametrize("budget_mb,packed", [("0", False), ("1000", True)])
def test_packed_layers_are_those_the_budget_allows_and_their_copies_are_counted(monkeypatch, tiny_llama,
                                                                                budget_mb, packed):
    model = tiny_llama.model
    monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
    monkeypatch.setenv("PLAYGROUND_PACK_MB", budget_mb)
    monkeypatch.setattr(kernels, "kernel_table", _packed_fastest)
    with kernels_restored(model):
        chosen = use_measured_kernels(model, "toy")
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert all((by_rows[5] == "packed") == packed and by_rows[16] == ("packed" if packed else "stock")
                   and by_rows[17] == "stock" for by_rows in chosen.values())
        with torch.inference_mode():
            model(torch.randint(3, 1000, (1, 1)))  # one and two rows run stock: no copy is made
            model(torch.randint(3, 1000, (2, 1)))
        assert kernels.packed_bytes(model) == 0
        ids = torch.randint(3, 1000, (9, 1))  # 9 rows: two packed calls, the second padded
        with torch.inference_mode():
            logits = model(ids).logits
        assert kernels.packed_bytes(model) == (sum(m.weight.numel() * 4 for m in linears) if packed else 0)
        with torch.inference_mode():
            for m in linears:
                m.kernel_by_rows = {}
            stock_logits = model(ids).logits
        assert torch.allclose(logits, stock_logits, atol=1e-4)


@pytest.mark.skipif(not kernels.packed_available() or not Path("/proc/self/status").is_file(),
                    reason="needs MKL's packed sgemm and Linux's /proc")
def test_a_packed_copy_takes_the_memory_of_its_weight_as_packed_bytes_counts_it():
    # a fresh process: in this one, memory freed by earlier tests is reused and hides the growth
    script = """
import torch
from playground import kernels
def resident_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
weight = torch.randn(1536, 576)
before = resident_bytes()
copies = [kernels.pack_weight(weight) for _ in range(40)]  # 141 MB of weights
print((resident_bytes() - before) / len(copies) / (weight.numel() * 4))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0.8 < float(out.stdout.split()[-1]) < 1.25


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
    timed = set(AVAILABLE) | ({"packed"} if kernels.packed_available() else set())
    assert set(first["16x8"]["16"]) == timed and all(ms > 0 for ms in first["16x8"]["4"].values())
    assert set(first["16x8"]["32"]) == set(AVAILABLE)  # packed: at most 16 rows (two packed calls)
    monkeypatch.setattr(kernels, "time_shape", lambda *a: pytest.fail("timed again despite the cache"))
    assert kernels.kernel_table(layers, "toy", tmp_path) == first


def test_a_cached_table_without_every_row_count_is_measured_again(tmp_path, monkeypatch):
    layers = [torch.nn.Linear(8, 16)]
    path = kernels._cache_file(tmp_path, "toy")
    path.write_text('{"8x16+b": {"1": {"stock": 1.0}}}')  # an older build's rows
    assert set(kernels.kernel_table(layers, "toy", tmp_path)["8x16+b"]) == {str(r) for r in kernels.MEASURED_ROWS}


def test_an_unknown_kernel_mode_is_refused(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_KERNELS", "fastest")
    with pytest.raises(ValueError, match="PLAYGROUND_KERNELS must be one of stock, onednn, weight_left, auto"):
        use_measured_kernels(torch.nn.Linear(2, 2), "toy")


@pytest.mark.slow
def test_every_kernel_choice_gives_the_same_logits_and_greedy_tokens(real_lm, monkeypatch):
    ids = torch.tensor([real_lm.encode(PROMPT)] * 4)  # 4 rows: where the kernels differ most
    results = {}
    with kernels_restored(real_lm.model):
        for mode in ("stock", *AVAILABLE[1:], "auto"):
            monkeypatch.setenv("PLAYGROUND_KERNELS", mode)
            use_measured_kernels(real_lm.model, real_lm.name)
            with torch.inference_mode():
                logits = real_lm.model(ids[:, -1:]).logits  # one position, 4 rows
            results[mode] = (logits, compare(real_lm, PROMPT, ["greedy"], max_new_tokens=32).columns[0].tokens)
        if kernels.packed_available():  # every layer packed, whatever this machine measures
            monkeypatch.setenv("PLAYGROUND_KERNELS", "auto")
            monkeypatch.setenv("PLAYGROUND_PACK_MB", "10000")
            monkeypatch.setattr(kernels, "kernel_table", _packed_fastest)
            use_measured_kernels(real_lm.model, real_lm.name)
            with torch.inference_mode():
                logits = real_lm.model(ids[:, -1:]).logits
            assert kernels.packed_bytes(real_lm.model) > 500e6  # every layer's copy, made on first use
            results["packed"] = (logits, compare(real_lm, PROMPT, ["greedy"], max_new_tokens=32).columns[0].tokens)
    assert len(results) == len(AVAILABLE) + 1 + kernels.packed_available()
    assert_greedy_decided(compare(real_lm, PROMPT, ["greedy"], max_new_tokens=32).columns[0].rows)  # no near-tie
    for mode, (logits, tokens) in results.items():
        assert torch.allclose(logits, results["stock"][0], atol=LOGIT_NOISE), mode  # rounding: 1.5e-4 on AVX2
        assert tokens == results["stock"][1], mode


def test_a_cpu_limited_to_fewer_instructions_has_a_table_of_its_own(tmp_path, monkeypatch):
    for name in kernels.ISA_LIMITS:
        monkeypatch.delenv(name, raising=False)
    native = kernels._cache_file(tmp_path, "toy")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = kernels._cache_file(tmp_path, "toy")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert len({native, limited, kernels._cache_file(tmp_path, "toy")}) == 3
