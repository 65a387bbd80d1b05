"""The adaptive entropy sampler: signals, schedules, states, lookahead."""
from __future__ import annotations

import math

import pytest
import torch

from playground.engine import ColumnSpec, Engine, RunOptions
from playground.samplers import SAMPLERS, RunContext, SettingsError, StepView, make_settings
from playground.samplers.adaptive import (
    COLD,
    HOT,
    MIXED,
    AdaptiveEntropySampler,
    AdaptiveSettings,
    attention_entropy,
    existing_positions,
    lookahead_candidates,
    masked_attention_entropy,
    schedule,
    state_of,
)
from playground.samplers.temperature import sampling_probs

from margins import assert_greedy_decided

V = 64  # vocabulary of the constructed views


def bits(*p: float) -> float:
    return -sum(x * math.log2(x) for x in p if x > 0)


def view(logits, input_ids, attn_rows, layers: int = 2) -> StepView:
    """A constructed step: ``attn_rows`` [heads, n] is every layer's newest-query attention."""
    rows = torch.tensor(attn_rows, dtype=torch.float32)
    ids = torch.tensor(input_ids, dtype=torch.long)
    return StepView(step=0, logits=torch.as_tensor(logits, dtype=torch.float32), input_ids=ids, n_prompt=len(ids),
                    attentions=rows.expand(layers, *rows.shape).clone())


def peaked_logits(top: int = 0) -> torch.Tensor:
    """Token entropy ~0: one token far above the rest."""
    logits = torch.full((V,), -30.0)
    logits[top] = 30.0
    return logits


UNIFORM_LOGITS = torch.zeros(V)  # token entropy exactly 1


# ---- schedules ----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha, table", [
    (0.0, (0.319, 57, 0.85, 1.036)),
    (1.0, (0.700, 105, 0.888, 1.150)),
    (1.8, (1.022, 145, 0.912, 1.250)),
])
def test_schedules_match_the_issue_table_and_a_tanh_rederivation(alpha, table):
    got = schedule(alpha)
    # independent form: 1/(1+e^-x) = (1 + tanh(x/2)) / 2, so each sigmoid becomes a tanh
    temperature = 0.7 + 0.6 * math.tanh(0.75 * (alpha - 1))
    top_p = 0.85 + 0.1 * math.tanh(0.4 * alpha)
    rep = 1.15 + 0.15 * math.tanh(alpha - 1)
    # top_k: atan(-1) = -pi/4 -> 10 + 190/4 = 57.5; atan(0) = 0 -> 105; atan(0.8) -> 145.8
    top_k = {0.0: 57, 1.0: 105, 1.8: int(10 + 190 * (math.atan2(0.8, 1.0) / math.pi + 0.5))}[alpha]
    assert got["temperature"] == pytest.approx(temperature, abs=1e-9)
    assert got["top_p"] == pytest.approx(top_p, abs=1e-9)
    assert got["repetition_penalty"] == pytest.approx(rep, abs=1e-9)
    assert got["top_k"] == top_k and isinstance(got["top_k"], int)
    t, k, p, r = table
    assert (got["temperature"], got["top_p"], got["repetition_penalty"]) == pytest.approx((t, p, r), abs=1e-3)
    assert got["top_k"] == k


def test_cold_can_never_reach_the_seed_readme_range():
    # alpha >= 0 always; every schedule is increasing, so alpha = 0 gives the smallest values
    lows = [schedule(a / 100) for a in range(0, 201)]
    assert min(s["top_k"] for s in lows) == 57
    assert min(s["temperature"] for s in lows) > 0.3
    assert all(a["top_k"] <= b["top_k"] and a["temperature"] < b["temperature"] for a, b in zip(lows, lows[1:]))


# ---- signals and states -------------------------------------------------------------------


def test_attention_entropy_is_one_for_a_uniform_row_over_existing_positions():
    n_slots, n_existing = 10, 6
    row = torch.zeros(n_slots)
    row[:n_existing] = 1 / n_existing
    mask = existing_positions(n_slots, n_existing, "cpu")
    assert float(masked_attention_entropy(row, mask)) == pytest.approx(1.0, abs=1e-6)
    # unfilled/future slots holding garbage change nothing once masked...
    garbage = row.clone()
    garbage[n_existing:] = torch.tensor([5.0, 0.3, 2.0, 7.0])
    assert float(masked_attention_entropy(garbage, mask)) == pytest.approx(1.0, abs=1e-6)
    # ...and would change the value if they were counted
    assert float(masked_attention_entropy(garbage)) < 0.9
    # the normaliser is log2 of the EXISTING positions, not of the slots: 6 of 10 counted is not 1
    assert float(masked_attention_entropy(row)) == pytest.approx(math.log2(6) / math.log2(10), abs=1e-6)


def test_attention_entropy_values_and_head_mean():
    rows = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    per_head = masked_attention_entropy(rows, existing_positions(3, 3, "cpu"))
    expected = [0.0, bits(0.25, 0.75) / math.log2(3), 1.0]
    assert per_head.tolist() == pytest.approx(expected, abs=1e-6)
    assert attention_entropy(rows) == pytest.approx(sum(expected) / 3, abs=1e-6)
    # a single existing position: nothing to be uncertain about
    assert float(masked_attention_entropy(torch.tensor([1.0, 0.4]), existing_positions(2, 1, "cpu"))) == 0.0


def test_sampler_masks_attention_to_the_tokens_that_exist():
    # 3 tokens exist, the row has 5 slots: the 2 future ones carry garbage
    sampler = AdaptiveEntropySampler(AdaptiveSettings(lookahead=False))
    d = sampler.decide(view(UNIFORM_LOGITS, [5, 6, 7], [[1 / 3, 1 / 3, 1 / 3, 0.9, 0.9]] * 3))
    assert d.signals["attention_entropy"] == pytest.approx(1.0, abs=1e-6)
    assert d.signals["token_entropy"] == pytest.approx(1.0, abs=1e-6)
    assert d.signals["adaptive_alpha"] == pytest.approx(2.0, abs=1e-5)


@pytest.mark.parametrize("alpha, state", [
    (0.0, COLD), (math.nextafter(0.6, 0.0), COLD), (0.6, MIXED), (1.0, MIXED),
    (1.8, MIXED), (math.nextafter(1.8, 2.0), HOT), (2.0, HOT),
])
def test_state_thresholds_are_exact(alpha, state):
    assert state_of(alpha, 0.6, 1.8) == state


def test_state_and_parameters_follow_the_smoothed_alpha_including_this_step():
    # alphas 2, 0, 0 (uniform/peaked logits x uniform/one-hot attention), window 2 -> smoothed 2, 1, 0
    sampler = AdaptiveEntropySampler(AdaptiveSettings(smoothing_window=2, lookahead=False))
    hot = view(UNIFORM_LOGITS, [1, 2], [[0.5, 0.5]] * 3)
    cold = view(peaked_logits(), [1, 2], [[1.0, 0.0]] * 3)
    got = [sampler.decide(v) for v in (hot, cold, cold)]
    assert [d.signals["adaptive_alpha"] for d in got] == pytest.approx([2.0, 0.0, 0.0], abs=1e-5)
    assert [d.signals["adaptive_alpha_smoothed"] for d in got] == pytest.approx([2.0, 1.0, 0.0], abs=1e-5)
    assert [d.signals["state"] for d in got] == [HOT, MIXED, COLD]
    assert got[1].params == pytest.approx(schedule(got[1].signals["adaptive_alpha_smoothed"]))
    # start() forgets the previous run's history
    sampler.start(RunContext(seed=0, prompt_ids=torch.tensor([1, 2])))
    assert sampler.decide(cold).signals["adaptive_alpha_smoothed"] == pytest.approx(0.0, abs=1e-5)


# ---- repetition penalty -------------------------------------------------------------------


def rep_logits() -> torch.Tensor:
    logits = torch.full((V,), -4.0)
    logits[3], logits[4], logits[5] = 1.0, -0.5, 0.5  # a positive and a negative candidate for penalty
    return logits


@pytest.mark.parametrize("token", [3, 4])  # logit +1.0 and -0.5
def test_repetition_penalty_lowers_a_repeated_token_whatever_its_sign(token):
    attn = [[0.25, 0.25, 0.25, 0.25]] * 3  # same length and attention: same alpha, same parameters
    fresh = AdaptiveEntropySampler(AdaptiveSettings(lookahead=False)).decide(view(rep_logits(), [9, 10, 11, 12], attn))
    again = AdaptiveEntropySampler(AdaptiveSettings(lookahead=False)).decide(view(rep_logits(), [9, 10, 11, token], attn))
    assert fresh.params == again.params and fresh.params["repetition_penalty"] > 1.0
    assert 0.0 < float(again.probs[token]) < float(fresh.probs[token])


def test_repetition_penalty_sees_only_the_last_repetition_window_tokens():
    attn = [[0.25, 0.25, 0.25, 0.25]] * 3
    settings = AdaptiveSettings(lookahead=False, repetition_window=2)
    fresh = AdaptiveEntropySampler(settings).decide(view(rep_logits(), [9, 10, 11, 12], attn))
    old = AdaptiveEntropySampler(settings).decide(view(rep_logits(), [3, 10, 11, 12], attn))  # outside the window
    recent = AdaptiveEntropySampler(settings).decide(view(rep_logits(), [9, 10, 3, 12], attn))
    assert torch.equal(old.probs, fresh.probs)
    assert float(recent.probs[3]) < float(fresh.probs[3])


# ---- lookahead ----------------------------------------------------------------------------


def test_lookahead_candidates_are_the_top_tokens_within_the_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.0, 0.3, 0.15])
    assert lookahead_candidates(probs, 3, 0.9) == [1, 3, 4]  # mass above the 3rd: 0.8 < 0.9
    assert lookahead_candidates(probs, 3, 0.75) == [1, 3]  # mass above the 3rd: 0.8 >= 0.75
    assert lookahead_candidates(probs, 3, 0.4) == [1]
    assert lookahead_candidates(torch.tensor([0.0, 0.95, 0.05]), 3, 0.9) == [1]  # at least one
    assert lookahead_candidates(torch.tensor([0.0, 1.0, 0.0]), 3, 1.0) == [1]  # never a zero-probability token


def test_lookahead_chooses_the_minimum_score_candidate():
    always_cold = AdaptiveSettings(cold_point=2.5, hot_point=3.0)
    sampler = AdaptiveEntropySampler(always_cold)
    logits = torch.full((V,), -20.0)
    logits[7], logits[8], logits[9] = 3.0, 2.6, 2.2  # three likely tokens
    d = sampler.decide(view(logits, [1, 2], [[0.5, 0.5]] * 3))
    assert d.signals["state"] == COLD and d.probs is None
    assert d.candidates == [7, 8, 9]
    # candidate 0: uniform heads; 1: heads at entropy 0 and 1; 2: both heads at H(0.13, 0.87)
    h = bits(0.13, 0.87)
    cand_rows = [[[0.5, 0.5], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]], [[0.13, 0.87], [0.13, 0.87]]]
    views = [view(logits, [1, 2], rows) for rows in cand_rows]
    expected = [0.8 * 1.0, 0.8 * 0.5 + 0.2 * 0.25, 0.8 * h]
    # the winner has the HIGHER mean entropy (0.557 > 0.5): the variance term decides
    assert h > 0.5 and expected[2] < expected[1] < expected[0]
    k, signals = sampler.choose(views)
    assert k == 2
    assert signals["lookahead"] is True
    assert signals["lookahead_scores"] == pytest.approx(expected, abs=1e-5)
    # without the variance term the lower mean entropy wins
    k, _ = AdaptiveEntropySampler(AdaptiveSettings(cold_point=2.5, hot_point=3.0, var_entropy_weight=0.0)).choose(views)
    assert k == 1


def test_lookahead_is_skipped_outside_cold_and_when_off():
    logits = torch.full((V,), -20.0)
    logits[7], logits[8] = 3.0, 1.0  # at T ~0.33 token 8 keeps < 1% of the mass
    mixed = AdaptiveEntropySampler().decide(view(UNIFORM_LOGITS, [1, 2], [[1.0, 0.0]] * 3))  # alpha 1
    assert mixed.signals["state"] == MIXED and mixed.candidates is None and mixed.probs is not None
    assert mixed.signals["lookahead"] is False
    cold = view(logits, [1, 2], [[1.0, 0.0]] * 3)
    assert AdaptiveEntropySampler().decide(cold).candidates == [7]  # alpha ~0.1: COLD, one candidate
    off = AdaptiveEntropySampler(AdaptiveSettings(lookahead=False)).decide(cold)
    assert off.signals["state"] == COLD and off.candidates is None and off.probs is not None


# ---- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, named", [
    ({"cold_point": "1.8", "hot_point": "0.6"}, "cold_point"),
    ({"cold_point": "1.0", "hot_point": "1.0"}, "cold_point"),
    ({"smoothing_window": "0"}, "smoothing_window"),
    ({"repetition_window": "-5"}, "repetition_window"),
    ({"entropy_weight": "-0.1"}, "entropy_weight"),
    ({"var_entropy_weight": "-1"}, "var_entropy_weight"),
    ({"spec_top_k": "0"}, "spec_top_k"),
    ({"spec_top_p": "0"}, "spec_top_p"),
    ({"spec_top_p": "1.5"}, "spec_top_p"),
    ({"cold_point": "nan"}, "cold_point"),
    ({"smoothing_window": "2.5"}, "smoothing_window"),
])
def test_bad_settings_are_refused_by_name(overrides, named):
    with pytest.raises(SettingsError, match=f"adaptive_entropy.{named}"):
        make_settings("adaptive_entropy", overrides)


def test_settings_arrive_as_strings():
    s = make_settings("adaptive_entropy", {"lookahead": "false", "smoothing_window": "1", "spec_top_p": "0.5"})
    assert (s.lookahead, s.smoothing_window, s.spec_top_p) == (False, 1, 0.5)
    assert SAMPLERS["adaptive_entropy"] is AdaptiveEntropySampler


# ---- through the engine -------------------------------------------------------------------

PROMPT = "The quick brown fox"


def test_deterministic_for_a_seed_on_the_engine(tiny_llama):
    engine = Engine(tiny_llama)
    cols = [ColumnSpec("adaptive_entropy"), ColumnSpec("adaptive_entropy", {"cold_point": 2.5, "hot_point": 3.0})]
    runs = [engine.run(PROMPT, cols, RunOptions(seed=s, max_new_tokens=10, record_order_parameter=False))
            for s in (7, 7)]
    assert [c.tokens for c in runs[0].columns] == [c.tokens for c in runs[1].columns]
    sampled, cold = runs[0].columns
    assert all(r.state in (MIXED, HOT) and r.extra["lookahead"] is False for r in sampled.rows)  # random model
    assert len(cold.rows) == 10 and all(r.state == COLD and r.extra["lookahead"] for r in cold.rows)
    assert [r.adaptive_alpha for r in cold.rows] == [r.adaptive_alpha for r in runs[1].columns[1].rows]


def test_engine_lookahead_matches_a_cache_free_reference_decode(tiny_llama):
    """Always COLD with one candidate: each token is the top of the processed distribution, whose
    parameters come from alpha; recompute all of it with full forwards (no cache, no engine)."""
    n_new, window = 8, 3
    overrides = {"cold_point": 2.5, "hot_point": 3.0, "spec_top_k": 1, "smoothing_window": window}
    run = Engine(tiny_llama).run(PROMPT, [ColumnSpec("adaptive_entropy", overrides)],
                                 RunOptions(seed=0, max_new_tokens=n_new, record_order_parameter=False))
    ids = torch.tensor(tiny_llama.encode(PROMPT))
    alphas, tokens = [], []
    with torch.inference_mode():
        for _ in range(n_new):
            out = tiny_llama.model(ids.view(1, -1), output_attentions=True)
            logits = out.logits[0, -1].float()
            p = torch.softmax(logits, -1)
            h_tok = float(-(p * torch.log2(p)).sum() / math.log2(p.numel()))
            a = out.attentions[-1][0, :, -1, :]  # [heads, n], causal: all n positions exist
            h_attn = float((-(a * torch.log2(a)).sum(-1) / math.log2(a.shape[-1])).mean())
            alphas.append(h_tok + h_attn)
            recent = alphas[-window:]
            params = schedule(sum(recent) / len(recent))
            probs = sampling_probs(logits, ids, params["temperature"], params["top_k"], params["top_p"],
                                   repetition_penalty=params["repetition_penalty"], penalty_ids=ids[-128:])
            tokens.append(int(probs.argmax()))
            ids = torch.cat([ids, torch.tensor([tokens[-1]])])
    rows = run.columns[0].rows
    assert run.columns[0].tokens == tokens
    assert [r.adaptive_alpha for r in rows] == pytest.approx(alphas, abs=1e-4)


def test_real_model_runs_beside_greedy_and_temperature(real_lm):
    run = Engine(real_lm).run("Once upon a time", ["greedy", "temperature", "adaptive_entropy"],
                              RunOptions(seed=0, max_new_tokens=8))
    greedy, temperature, adaptive = run.columns
    assert len(adaptive.rows) == 8
    raw = []
    for row in adaptive.rows:
        raw.append(row.adaptive_alpha)
        assert 0.0 <= row.adaptive_alpha <= 2.0
        assert row.state in (COLD, MIXED, HOT)
        smoothed = sum(raw[-4:]) / len(raw[-4:])  # the default window
        assert row.adaptive_alpha_smoothed == pytest.approx(smoothed, abs=1e-9)
        assert row.params == pytest.approx(schedule(smoothed))
        assert row.state == state_of(smoothed)
        assert isinstance(row.extra["lookahead"], bool)
    assert all(r.adaptive_alpha is None and r.state is None for r in greedy.rows + temperature.rows)
    # adaptive rows do not disturb their neighbours: greedy alone makes the same tokens
    alone = Engine(real_lm).run("Once upon a time", ["greedy"], RunOptions(seed=0, max_new_tokens=8))
    assert_greedy_decided(alone.columns[0].rows)  # 1 row and 3+ rows run other kernels
    assert alone.columns[0].tokens == greedy.tokens
