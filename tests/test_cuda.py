"""The engine on CUDA; skipped where there is no CUDA device.

Greedy on CUDA gives the CPU's tokens, Phase-Slip at noise 0 gives the temperature column's
tokens, and every tensor a run hands its samplers and telemetry, and its KV cache, is on CUDA.
"""
from __future__ import annotations

import pytest
import torch

from playground import compare, engine as engine_module
from playground.columns import ColumnSpec
from playground.engine import Engine, RunOptions
from playground.models import load_model
from playground.prompts import BENCHMARK_PROMPTS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.fixture(scope="module")
def cuda_lm():
    return load_model(device="cuda", dtype="float32")


def test_the_default_on_cuda_is_bfloat16_on_the_gpu():
    lm = load_model(device="cuda")
    assert lm.device.type == "cuda" and lm.dtype == torch.bfloat16


def test_greedy_on_cuda_gives_the_cpu_tokens(real_lm, cuda_lm):
    for prompt in BENCHMARK_PROMPTS:
        cpu = compare(real_lm, prompt, ["greedy"], max_new_tokens=16).columns[0].tokens
        gpu = compare(cuda_lm, prompt, ["greedy"], max_new_tokens=16).columns[0].tokens
        assert gpu == cpu, prompt


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_phase_slip_at_noise_zero_is_temperature_on_cuda(dtype):
    lm = load_model(device="cuda", dtype=dtype)
    sampling = {"temperature": 0.65, "top_k": 40, "top_p": 0.92}
    run = compare(lm, BENCHMARK_PROMPTS[0], [
        ColumnSpec("temperature", sampling),
        ColumnSpec("phase_slip", {**sampling, "noise_scale": 0.0, "calibrate": False})], max_new_tokens=24, seed=5)
    assert run.columns[0].tokens == run.columns[1].tokens


def test_no_tensor_of_a_run_is_left_on_the_cpu(monkeypatch):
    lm = load_model(device="cuda")
    seen: list[tuple[str, torch.device]] = []
    stats, order, view = engine_module.distribution_stats, engine_module.kuramoto.attention_order_parameter, \
        Engine._view

    def record(name, fn):
        def wrapped(*args, **kwargs):
            seen.extend((name, a.device) for a in args if isinstance(a, torch.Tensor))
            return fn(*args, **kwargs)
        return wrapped

    def spy_view(self, *args, **kwargs):
        v = view(self, *args, **kwargs)
        seen.extend((f"view.{k}", t.device) for k, t in vars(v).items() if isinstance(t, torch.Tensor))
        return v

    monkeypatch.setattr(engine_module, "distribution_stats", record("distribution_stats", stats))
    monkeypatch.setattr(engine_module.kuramoto, "attention_order_parameter", record("order_parameter", order))
    monkeypatch.setattr(Engine, "_view", spy_view)
    engine = Engine(lm)
    run = engine.run(BENCHMARK_PROMPTS[2], ["greedy", "temperature", "phase_slip", "adaptive_entropy", "mirostat",
                                            "entropix"], RunOptions(max_new_tokens=8))
    assert all(len(c.tokens) == 8 or c.finish_reason == "eos" for c in run.columns)
    names = {name for name, _ in seen}
    assert {"distribution_stats", "order_parameter", "view.logits", "view.input_ids", "view.attentions"} <= names
    assert [(name, d) for name, d in seen if d.type != "cuda"] == []
    assert {layer.keys.device.type for layer in run.cache.layers} == {"cuda"}
    assert {layer.values.device.type for layer in run.cache.layers} == {"cuda"}
