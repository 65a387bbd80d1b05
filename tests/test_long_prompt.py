"""Long prompts and hostile input: a prefill linear in memory with a one-pass prefill's tokens, the cap, bad text."""
from __future__ import annotations

import gc
import sys

import pytest
import torch

from playground import PlaygroundError, compare, inputs, models
from playground.bench import peak_rss_growth_gb
from playground.engine import Engine, RunOptions
from playground.rows import RowPlan
from playground.prompts import BENCHMARK_PROMPTS

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

FOUR = ["greedy", "temperature", "phase_slip", "adaptive_entropy"]


def full_attention_prefill(self, run):
    """A prefill of the whole prompt in one pass with every attention map (memory quadratic in the prompt)."""
    out, cache = self.lm.forward(run.prompt_tensor.view(1, -1), None, output_attentions=run.need_attn,
                                 logits_to_keep=1)
    run.plan = RowPlan(cache)
    attn = torch.stack([a[:, :, -1, :] for a in out.attentions], 1) if run.need_attn else None
    return out.logits[:, -1, :].float(), attn


def tokens_and_r(run):
    return ([c.tokens for c in run.columns],
            [[r.order_parameter_layers for r in c.rows] for c in run.columns])


@pytest.mark.slow
@pytest.mark.parametrize("prompt", [*BENCHMARK_PROMPTS, " ".join(BENCHMARK_PROMPTS) * 4])
def test_short_prompts_give_the_full_attention_prefills_tokens_and_r(real_lm, monkeypatch, prompt):
    monkeypatch.setattr(models, "PREFILL_CHUNK", 64)  # the long one (~300 tokens) goes in several chunks
    with recorded_draws() as margins:
        new = compare(real_lm, prompt, FOUR, seed=5, max_new_tokens=12)
    assert_greedy_decided(new.columns[0].rows)  # two prefills, other kernels: decided tokens only
    assert_draws_decided(margins)
    monkeypatch.setattr(Engine, "_prefill", full_attention_prefill)
    old = compare(real_lm, prompt, FOUR, seed=5, max_new_tokens=12)
    (new_tokens, new_r), (old_tokens, old_r) = tokens_and_r(new), tokens_and_r(old)
    assert new_tokens == old_tokens
    for a, b in zip(new_r, old_r):  # float32 rounding: the two prefills run different kernels at 9-32 rows
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")
def test_a_2000_token_prompt_runs_in_memory_linear_in_the_prompt(real_lm):
    prompt = "word " * 2000  # 2,001 tokens: a whole-prompt pass with weights keeps 30 x 9 x 2001^2 floats = 4.3 GB
    assert len(real_lm.encode(prompt)) == 2001
    runs = []
    gc.collect()
    growth = peak_rss_growth_gb(lambda: runs.append(compare(real_lm, prompt, ["greedy", "temperature"],
                                                            max_new_tokens=2)))
    # KV cache: 2 rows x 2,003 positions x 30 layers x 2 x 3 heads x 64 x 4 bytes = 0.18 GB
    assert growth < 1.0, f"peak RSS grew by {growth:.2f} GB"
    assert all(len(c.tokens) == 2 for c in runs[0].columns)


# ---- the cap --------------------------------------------------------------------------------------
def test_the_prompt_cap_defaults_to_the_context_locally_and_4096_on_spaces(tiny_llama, monkeypatch):
    monkeypatch.delenv("PLAYGROUND_MAX_PROMPT_TOKENS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert inputs.max_prompt_tokens(tiny_llama) == tiny_llama.max_context == 512
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setattr(tiny_llama, "max_context", 8192)
    assert inputs.max_prompt_tokens(tiny_llama) == 4096
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "100")
    assert inputs.max_prompt_tokens(tiny_llama) == 100
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "99999")
    assert inputs.max_prompt_tokens(tiny_llama) == 8192  # never above the context
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "lots")
    with pytest.raises(PlaygroundError, match="PLAYGROUND_MAX_PROMPT_TOKENS must be an integer"):
        inputs.max_prompt_tokens(tiny_llama)


def test_a_prompt_over_the_cap_is_refused_before_any_forward_pass(tiny_llama, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "50")
    calls = []
    hook = tiny_llama.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        prompt = "word " * 59  # 60 tokens
        with pytest.raises(PlaygroundError, match=r"the prompt is 60 tokens; this playground accepts at most 50 "
                                                  r"\(PLAYGROUND_MAX_PROMPT_TOKENS\)"):
            compare(tiny_llama, prompt, ["greedy"], max_new_tokens=2)
        assert calls == []
        monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "60")  # the cap raised: the same prompt runs
        assert len(compare(tiny_llama, prompt, ["greedy"], max_new_tokens=2).columns[0].tokens) == 2
        assert calls
    finally:
        hook.remove()


# ---- text that is not text ------------------------------------------------------------------------
BAD_TEXT = [
    ("The door \ud800 opened", "invalid character(s) (a lone UTF-16 surrogate, U+D800 at position 9)"),
    ("The door\x00 opened", "1 control character(s) (U+0000 at position 8)"),
    ("\x00", "1 control character(s) (U+0000 at position 0)"),
    ("a\x1b[31mred\x07", "2 control character(s) (U+001B at position 1, U+0007 at position 9)"),
]


@pytest.mark.parametrize("prompt, message", BAD_TEXT)
def test_text_that_is_not_text_is_a_clear_error(tiny_llama, prompt, message):
    with pytest.raises(PlaygroundError, match=__import__("re").escape(message)):
        compare(tiny_llama, prompt, ["greedy"], max_new_tokens=2)


def test_tabs_and_newlines_are_text(tiny_llama):
    assert compare(tiny_llama, "a\tb\r\nc", ["greedy"], max_new_tokens=1).columns[0].tokens


def test_the_cli_refuses_a_lone_surrogate_with_one_line(capsys):
    from playground import cli

    # a byte that is not UTF-8 in argv arrives as a lone surrogate (surrogateescape)
    assert cli.main(["compare", "--prompt", "caf\udce9", "--samplers", "greedy", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lone UTF-16 surrogate, U+DCE9 at position 3" in err[0]


def test_a_run_that_fails_halfway_keeps_its_tokens(tiny_llama, monkeypatch):
    forward = Engine._forward
    calls = []

    def failing(self, run, rows):
        calls.append(1)
        if len(calls) > 3:  # three decoding steps go through (the prefill is no step), then the model fails
            raise RuntimeError("out of memory (simulated)")
        return forward(self, run, rows)

    monkeypatch.setattr(Engine, "_forward", failing)
    stream = Engine(tiny_llama).stream("Once upon a time", ["greedy"], RunOptions(max_new_tokens=10))
    seen = []
    with pytest.raises(RuntimeError, match="simulated"):
        for run in stream:
            seen.append(len(run.columns[0].tokens))
    assert seen[-1] == 4 and run.columns[0].tokens  # the prefill's token and three more: still there
    assert tiny_llama.lock.acquire(timeout=1)  # and the model is free again
    tiny_llama.lock.release()


def test_calibration_prefills_a_long_text_in_chunks_with_the_same_scores(tiny_llama, monkeypatch):
    from playground.calibration import calibrate_heads

    text = "The keeper climbed the stairs to light the lamp. " * 12  # ~130 tokens
    whole = calibrate_heads(tiny_llama, text, search_layers=2, n_heads=2, use_cache=False)
    calls = []
    hook = tiny_llama.model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        kwargs["input_ids"].shape[1] if kwargs.get("input_ids") is not None else args[0].shape[1]), with_kwargs=True)
    monkeypatch.setattr(models, "EAGER_PREFILL_CHUNK", 16)
    try:
        chunked = calibrate_heads(tiny_llama, text, search_layers=2, n_heads=2, use_cache=False)
    finally:
        hook.remove()
    assert max(calls) <= 16 and len(calls) > len(text.split()) // 16  # the context went in chunks of 16
    assert chunked.heads == whole.heads
    for a, b in zip(chunked.scores, whole.scores):
        assert a.score == pytest.approx(b.score, rel=1e-3, abs=1e-9) and a.flip_rate == b.flip_rate
