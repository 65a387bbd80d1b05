"""Any device, any dtype: tensors follow the model's device, statistics stay float32,
bfloat16 parts from float32 only where its precision can flip a margin, and device or dtype mistakes are clear errors."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from playground import cli, compare
from playground.calibration import calibrate_heads
from playground.columns import ColumnSpec
from playground.models import Float32Head, ModelLoadError, load_model, pick_device, pick_dtype
from playground.prompts import BENCHMARK_PROMPTS

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

FOUR = ["greedy", "temperature", "phase_slip", "adaptive_entropy"]
# every sampler, every chain member, the adaptive lookahead: each path that makes tensors
EVERY_PATH = [*FOUR, "mirostat", "entropix",
              ColumnSpec("temperature", {"dry_multiplier": 0.8, "xtc_probability": 1.0, "xtc_threshold": 0.05,
                                         "eta": 0.01, "epsilon": 0.001, "typical_p": 0.9, "top_n_sigma": 1.0,
                                         "repetition_penalty": 1.2, "min_p": 0.05}),
              ColumnSpec("adaptive_entropy", {"lookahead": True})]


@pytest.fixture(scope="module")
def bf16_lm(real_lm):
    return load_model(dtype="bfloat16")


def test_no_run_tensor_is_made_without_naming_its_device(real_lm):
    """With the default device set to ``meta``, a tensor made without ``device=`` lands there, and mixing
    it with the model's CPU tensors raises: every path of a run must name the model's device (or the
    CPU, for the random draws) to pass."""
    with recorded_draws() as margins:
        expected = compare(real_lm, "The ancient door creaked open", EVERY_PATH, max_new_tokens=6, seed=3)
    assert_greedy_decided(expected.columns[0].rows)  # the sdpa run below is another numeric path
    assert_draws_decided(margins)
    torch.set_default_device("meta")
    try:
        run = compare(real_lm, "The ancient door creaked open", EVERY_PATH, max_new_tokens=6, seed=3)
        sdpa = compare(real_lm, "The ancient door creaked open", ["greedy", "temperature", "phase_slip"],
                       max_new_tokens=6, seed=3, record_order_parameter=False)
        calibration = calibrate_heads(real_lm, use_cache=False)
    finally:
        torch.set_default_device(None)
    assert [c.tokens for c in run.columns] == [c.tokens for c in expected.columns]
    assert [c.tokens for c in sdpa.columns] == [c.tokens for c in expected.columns[:3]]
    assert calibration.heads == calibrate_heads(real_lm).heads


def test_bfloat16_runs_all_four_samplers_with_finite_telemetry(bf16_lm):
    assert bf16_lm.dtype == torch.bfloat16 and isinstance(bf16_lm.model.get_output_embeddings(), Float32Head)
    run = compare(bf16_lm, BENCHMARK_PROMPTS[1], FOUR, max_new_tokens=12, seed=0)
    rows = [row for c in run.columns for row in c.rows]
    assert len(rows) == 4 * 12
    for row in rows:
        assert all(math.isfinite(x) for x in (row.entropy, row.varentropy, row.prob, row.sampler_prob))
        assert 0.0 <= row.order_parameter <= 1.0 + 1e-6
    assert isinstance(bf16_lm.model.get_output_embeddings(), Float32Head)  # a run's attention switches keep it


def bfloat16_ulp(x: float) -> float:
    """The spacing of bfloat16 numbers at ``x``: 8 significant bits, so 2^(floor(log2 |x|) - 7)."""
    return 2.0 ** (math.floor(math.log2(abs(x))) - 7)


def _last_logits(lm, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return lm.model(torch.tensor([ids], device=lm.device)).logits[0, -1].double().cpu()


def test_bfloat16_greedy_parts_from_float32_only_where_bfloat16_precision_can_flip_a_margin(
        real_lm, bf16_lm, capsys):
    """Where bfloat16 and float32 greedy part, bfloat16 took float32's runner-up, at a margin its precision can flip.

    The bound. bfloat16 keeps 8 significant bits, so near a logit z its numbers are ulp(z) = 2^(floor(log2|z|) - 7)
    apart (0.125 for z in [16, 32)). Every bfloat16 rounding in the layers below the head moves a logit, and the
    float32 head then computes the rounded state exactly; taking one ulp of error per logit, a top-two margin
    z_a - z_b (nats: it is log p_a / p_b) moves by at most 2 ulp(z_a). So bfloat16 can take the runner-up b only
    where float32's own margin is in (0, 2 ulp(z_a)). (Measured on the five prompts x 16 tokens, teacher-forced:
    the margin moved by at most 1.6 ulp.) Where the rows part, bfloat16 must also have decided by value: its own
    top two differ. A half-precision head, or a half-precision softmax, rounds two near-tied values to the same
    number and greedy then picks by token id; ``test_a_half_precision_head_turns_near_ties_into_exact_ties``
    shows such a head does exactly that on these prompts.

    How many tokens agree is a measurement, not an assertion: which near-ties flip depends on the CPU's bfloat16
    kernels (16, 11, 16, 16, 16 of 16 on an AVX-512 machine; 1, 4, 16, 16, 16 on an AVX2 one)."""
    agreed, margins = [], []
    for prompt in BENCHMARK_PROMPTS:
        full = compare(real_lm, prompt, ["greedy"], max_new_tokens=16)
        half = compare(bf16_lm, prompt, ["greedy"], max_new_tokens=16).columns[0].tokens
        tokens = full.columns[0].tokens
        k = next((i for i, (a, b) in enumerate(zip(tokens, half)) if a != b), len(half))
        agreed.append(k)
        if k == len(half):
            continue
        history = full.prompt_ids + tokens[:k]  # the same for both: they agreed before k
        z32, z16 = _last_logits(real_lm, history), _last_logits(bf16_lm, history)
        a, b = tokens[k], half[k]
        assert int(z32.topk(2).indices[1]) == b, (prompt, k)  # bfloat16 took float32's runner-up
        margin = float(z32[a] - z32[b])
        margins.append(round(margin / bfloat16_ulp(float(z32[a])), 3))
        assert 0 < margin < 2 * bfloat16_ulp(float(z32[a])), (prompt, k, margin)
        assert float(z16[b] - z16[a]) > 0, (prompt, k)  # decided by value, not a tie broken by token id
    with capsys.disabled():
        print(f"\nbfloat16 greedy agrees with float32 on the first {agreed} of 16 tokens; "
              f"float32 margins where they part, in bfloat16 ulps of the top logit: {margins}")


def test_a_half_precision_head_turns_near_ties_into_exact_ties(real_lm, bf16_lm):
    """The check above can fail: with bfloat16's own head (logits rounded to bfloat16) the top two logits tie
    exactly at some of the near-ties of the five prompts' float32 greedy texts, and with the float32 head never.
    (A margin under ulp/2 ties unless the two values straddle a rounding boundary; these texts have several
    margins under 0.01 nats, ulp 0.0625-0.25.)"""
    head = bf16_lm.model.get_output_embeddings()
    half_head = torch.nn.Linear(head.weight.shape[1], head.weight.shape[0], bias=False, dtype=torch.bfloat16)
    half_head.weight = torch.nn.Parameter(head.weight.detach().bfloat16(), requires_grad=False)
    ties = {"float32 head": 0, "bfloat16 head": 0}
    for prompt in BENCHMARK_PROMPTS:
        run = compare(real_lm, prompt, ["greedy"], max_new_tokens=16)
        ids = torch.tensor([run.prompt_ids + run.columns[0].tokens])
        with torch.inference_mode():
            hidden = bf16_lm.model.model(ids).last_hidden_state[0, len(run.prompt_ids) - 1:-1]
            for name, proj in (("float32 head", head), ("bfloat16 head", half_head)):
                top2 = proj(hidden).float().topk(2, dim=-1).values
                ties[name] += int((top2[:, 0] == top2[:, 1]).sum())
    assert ties["float32 head"] == 0 and ties["bfloat16 head"] >= 1, ties


def test_the_float32_head_is_the_half_precision_head_computed_wide(bf16_lm):
    head = bf16_lm.model.get_output_embeddings()
    hidden = torch.randn(2, 3, head.weight.shape[1], dtype=torch.bfloat16)
    logits = head(hidden)
    assert logits.dtype == torch.float32
    expected = hidden.double() @ head.weight.double().T
    assert torch.allclose(logits.double(), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(head.weight.bfloat16(), bf16_lm.model.get_input_embeddings().weight)  # the same weights


def test_device_and_dtype_defaults_and_overrides(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_DEVICE", raising=False)
    monkeypatch.delenv("PLAYGROUND_DTYPE", raising=False)
    here = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert pick_device() == torch.device(here)
    assert pick_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert pick_dtype(None, torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv("PLAYGROUND_DTYPE", "float16")
    assert pick_dtype(None, torch.device("cpu")) == torch.float16
    monkeypatch.setenv("PLAYGROUND_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"dtype": "int8"}, "unknown dtype 'int8'"),
    *([({"device": "cuda"}, "not available on this machine")] if not torch.cuda.is_available() else []),
])
def test_a_bad_device_or_dtype_is_a_clear_error(kwargs, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(**kwargs)


def test_cli_takes_device_and_dtype(bf16_lm, capsys):
    assert cli.main(["compare", "--prompt", BENCHMARK_PROMPTS[0], "--samplers", "greedy", "--max-new-tokens", "4",
                     "--device", "cpu", "--dtype", "bf16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = compare(bf16_lm, BENCHMARK_PROMPTS[0], ["greedy"], max_new_tokens=4).columns[0].tokens
    assert [t["id"] for t in out["columns"][0]["tokens"]] == expected
    assert cli.main(["compare", "--prompt", "Hi", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_a_limited_cpu_capability_is_the_one_the_kernels_use():
    """``PLAYGROUND_TEST_CPU=default bash scripts/test.sh`` really runs the suite on ATen's plain kernels."""
    asked = os.environ.get("ATEN_CPU_CAPABILITY")
    if not asked:
        pytest.skip("the CPU's own capability (ATEN_CPU_CAPABILITY not set)")
    assert torch.backends.cpu.get_cpu_capability().lower() == asked.lower()
