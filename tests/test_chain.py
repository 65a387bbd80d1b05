"""The temperature chain's other members (typical-p, ε, η, top-nσ, XTC, DRY) and mirostat v2."""
from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from playground.columns import ColumnSpec
from playground.engine import Engine, RunOptions
from playground.samplers import SettingsError, make_settings
from playground.samplers.chain import (DRYLogitsProcessor, TopKTopPLogitsWarper, TopNSigmaLogitsWarper,
                                       XTCLogitsWarper, breaker_ids, dry_match_lengths, z_function)
from playground.samplers.mirostat import MirostatSampler, mirostat_probs
from playground.samplers.temperature import sampling_probs

PROMPT = "The ancient door creaked open"
IDS = torch.tensor([0])


def kept(probs: torch.Tensor) -> list[int]:
    return torch.nonzero(probs > 0).flatten().tolist()


def chain(**settings):
    """The chain members a temperature column with these settings switches on (no model needed)."""
    return make_settings("temperature", settings).processors(None, torch.Generator().manual_seed(0))


# ---- top-nσ ---------------------------------------------------------------------------------


def test_top_n_sigma_keeps_the_tokens_within_n_sigma_of_the_max_at_any_temperature():
    logits = torch.tensor([4.0, 3.0, 2.0, 0.0, -1.0, -5.0])
    mean = sum(logits.tolist()) / 6
    sigma = math.sqrt(sum((x - mean) ** 2 for x in logits.tolist()) / 6)  # population σ = 2.99
    for n in (0.5, 1.0, 2.0):
        expected = [i for i, x in enumerate(logits.tolist()) if x >= 4.0 - n * sigma]
        out = TopNSigmaLogitsWarper(n)(IDS.view(1, -1), logits.view(1, -1))
        assert kept(torch.softmax(out[0], -1)) == expected
        for t in (0.3, 1.0, 2.5):  # the kept set ignores temperature
            probs = sampling_probs(logits, IDS, t, top_k=0, top_p=1.0, extra=chain(top_n_sigma=n))
            assert kept(probs) == expected
    assert kept(torch.softmax(TopNSigmaLogitsWarper(1.0)(IDS.view(1, -1), logits.view(1, -1))[0], -1)) == [0, 1, 2]
    with_inf = torch.tensor([[4.0, -math.inf, 3.0, 2.0]])  # -inf logits stay out of σ
    assert torch.isfinite(TopNSigmaLogitsWarper(1.0)(IDS.view(1, -1), with_inf)[0, 0])


# ---- XTC --------------------------------------------------------------------------------------


def test_xtc_removes_every_top_choice_but_the_least_likely_never_newline_or_eos():
    p = torch.tensor([0.40, 0.25, 0.20, 0.10, 0.05])
    scores = p.log().view(1, -1)
    always = XTCLogitsWarper(0.15, 1.0, torch.Generator().manual_seed(0))
    assert kept(torch.softmax(always(IDS.view(1, -1), scores)[0], -1)) == [2, 3, 4]  # 0.40, 0.25 go; 0.20 stays
    assert always.last_applied
    protected = XTCLogitsWarper(0.15, 1.0, torch.Generator().manual_seed(0), protected={0})
    assert kept(torch.softmax(protected(IDS.view(1, -1), scores)[0], -1)) == [0, 2, 3, 4]
    one_above = XTCLogitsWarper(0.3, 1.0, torch.Generator().manual_seed(0))  # only one token >= 0.3: no change
    assert torch.equal(one_above(IDS.view(1, -1), scores), scores) and not one_above.last_applied


def test_xtc_coin_comes_from_its_own_generator_with_the_given_chance():
    p = torch.tensor([0.5, 0.3, 0.2])
    xtc = XTCLogitsWarper(0.1, 0.3, torch.Generator().manual_seed(5))
    fired = 0
    for _ in range(2000):
        xtc(IDS.view(1, -1), p.log().view(1, -1))
        fired += xtc.last_applied
    assert abs(fired / 2000 - 0.3) < 0.04


# ---- DRY --------------------------------------------------------------------------------------


def brute_force_match_lengths(context: list[int], breakers: set[int]) -> dict[int, int]:
    best: dict[int, int] = {}
    length = len(context)
    for end in range(length - 1):
        n = 0
        while n <= end and context[end - n] == context[length - 1 - n] and context[end - n] not in breakers:
            n += 1
        if n:
            best[context[end + 1]] = max(best.get(context[end + 1], 0), n)
    return best


def test_dry_match_lengths_equal_a_brute_force_search():
    rng = random.Random(0)
    assert z_function([1, 1, 2, 1, 1]) == [5, 1, 0, 2, 1]
    for _ in range(200):
        context = [rng.randrange(4) for _ in range(rng.randrange(1, 40))]
        breakers = {3} if rng.random() < 0.5 else set()
        assert dry_match_lengths(context, breakers) == brute_force_match_lengths(context, breakers)


def test_dry_penalty_is_multiplier_times_base_to_the_excess_and_zero_across_a_breaker():
    dry = DRYLogitsProcessor(multiplier=0.8, base=1.75, allowed_length=2, breakers={9})
    context = [5, 1, 2, 3, 4, 7, 1, 2, 3]  # "1 2 3" came before, followed by 4: n = 3
    assert dry.penalties(context) == {4: pytest.approx(0.8 * 1.75 ** (3 - 2))}
    scores = torch.zeros(1, 10)
    out = dry(torch.tensor([context]), scores)
    assert out[0, 4] == pytest.approx(-0.8 * 1.75) and torch.count_nonzero(out) == 1
    # the breaker 9 cuts the repeat "1 2 3" to "2 3": n = 2 = allowed_length, so multiplier · base^0
    assert dry.penalties([5, 1, 2, 3, 4, 7, 1, 9, 2, 3]) == {4: pytest.approx(0.8)}
    assert dry.penalties([1, 9, 3, 4, 1, 9, 3]) == {}  # "1 9 3" repeats, but no match may cross 9: n = 1
    assert DRYLogitsProcessor(0.8, 1.75, 2, set()).penalties([1, 9, 3, 4, 1, 9, 3]) == {4: pytest.approx(0.8 * 1.75)}
    assert dry.penalties([1, 2, 3, 1, 2]) == {3: pytest.approx(0.8)}  # n = allowed_length: multiplier · base^0


def test_dry_breakers_are_the_tokens_whose_text_contains_one(real_lm):
    ids = breaker_ids(real_lm.tokenizer, ["\n", ":"])
    newline = real_lm.tokenizer.encode("\n", add_special_tokens=False)
    assert set(newline) <= ids
    assert real_lm.tokenizer.encode(" door", add_special_tokens=False)[0] not in ids
    assert all(("\n" in real_lm.tokenizer.decode([i]) or ":" in real_lm.tokenizer.decode([i])) for i in list(ids)[:50])


# ---- typical, ε, η ----------------------------------------------------------------------------


def test_epsilon_eta_and_typical_keep_what_their_formulas_say():
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.04, 0.01])
    logits = p.log()
    assert kept(sampling_probs(logits, IDS, 1.0, top_k=0, top_p=1.0, extra=chain(epsilon=0.05))) == [0, 1, 2, 3]
    entropy = float(-(p * p.log()).sum())
    eta = 0.2
    bound = min(eta, math.sqrt(eta) * math.exp(-entropy))
    assert kept(sampling_probs(logits, IDS, 1.0, top_k=0, top_p=1.0, extra=chain(eta=eta))) == \
        [i for i, x in enumerate(p.tolist()) if x >= bound]
    # typical: rank by |surprisal - H|, keep until the mass reaches typical_p
    order = sorted(range(6), key=lambda i: abs(-math.log(p[i]) - entropy))
    mass, typical = 0.0, []
    for i in order:
        typical.append(i)
        mass += float(p[i])
        if mass >= 0.6:
            break
    assert kept(sampling_probs(logits, IDS, 1.0, top_k=0, top_p=1.0, extra=chain(typical_p=0.6))) == sorted(typical)


@pytest.mark.parametrize("top_k,top_p", [(40, 0.92), (5, 0.5), (1, 0.9), (100, 0.999), (49152, 0.3)])
def test_top_k_then_top_p_in_one_pass_keeps_what_the_two_warpers_keep(top_k, top_p):
    torch.manual_seed(top_k)
    two = LogitsProcessorList([TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)])
    for scale in (0.5, 4.0, 20.0):
        logits = torch.randn(1, 49152) * scale
        assert torch.equal(TopKTopPLogitsWarper(top_k, top_p)(IDS.view(1, -1), logits), two(IDS.view(1, -1), logits))
    k = min(top_k, 500)
    tied = torch.randn(1, 1000)
    order = tied[0].argsort(descending=True)
    tied[0, order[k - 1:k + 3]] = tied[0, order[k - 1]].item()  # four tokens share the k-th score
    result = TopKTopPLogitsWarper(k, 1.0 - 1e-9)(IDS.view(1, -1), tied)
    assert torch.equal(result, TopKLogitsWarper(k)(IDS.view(1, -1), tied))  # all tied tokens kept, as top-k does
    assert int(torch.isfinite(result).sum()) == k + 3


def test_top_k_then_top_p_with_a_hint_keeps_what_it_keeps_without_one_even_where_the_hint_misses():
    logits = torch.randn(1, 49152, generator=torch.Generator().manual_seed(6)) * 3
    order = logits[0].argsort(descending=True)
    tied = logits.clone()
    tied[0, order[40]] = tied[0, order[39]].item()
    hints = {"the clean top-64": order[:64], "missing the best token": order[1:65],
             "shuffled": order[:64][torch.randperm(64, generator=torch.Generator().manual_seed(0))]}
    for scores in (logits, tied, logits / 0.7):
        plain = TopKTopPLogitsWarper(40, 0.9)(IDS.view(1, -1), scores)
        for name, likely in hints.items():
            hinted = TopKTopPLogitsWarper(40, 0.9, likely)
            assert torch.equal(hinted(IDS.view(1, -1), scores), plain), name


def test_top_k_then_top_p_names_its_survivors_for_the_trace_and_none_on_a_tie():
    warper = TopKTopPLogitsWarper(40, 0.9)
    warper.keep_top_k = True
    logits = torch.randn(1, 49152, generator=torch.Generator().manual_seed(5)) * 3
    warper(IDS.view(1, -1), logits)
    assert torch.equal(warper.kept, torch.nonzero(torch.isfinite(warper.top_k_scores[0])).flatten())
    tied = logits.clone()
    order = tied[0].argsort(descending=True)
    tied[0, order[40]] = tied[0, order[39]].item()  # the 41st shares the 40th score: the two warpers' own path
    warper(IDS.view(1, -1), tied)
    assert warper.kept is None and int(torch.isfinite(warper.top_k_scores).sum()) == 41


def test_off_values_are_the_generate_chain_bit_for_bit(real_lm):
    torch.manual_seed(1)
    off = dict(typical_p=1.0, epsilon=0.0, eta=0.0, top_n_sigma=0.0, xtc_probability=0.0, dry_multiplier=0.0)
    assert chain(**off) == {}
    reference = LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(40), TopPLogitsWarper(0.92)])
    for _ in range(5):
        logits = torch.randn(real_lm.model.config.vocab_size) * 4
        expected = torch.softmax(reference(IDS.view(1, -1), logits.view(1, -1)), -1)[0]
        assert torch.equal(sampling_probs(logits, IDS, 0.8, 40, 0.92, extra=chain(**off)), expected)
    options = RunOptions(seed=9, max_new_tokens=16)
    run = Engine(real_lm).run(PROMPT, ["temperature", ColumnSpec("temperature", off),
                                       ColumnSpec("temperature", {"xtc_probability": 1e-12})], options)
    tokens = [c.tokens for c in run.columns]
    assert tokens[0] == tokens[1] == tokens[2]  # XTC on but never firing: its coin is not the column's draw


def test_chain_settings_are_validated_with_the_setting_named():
    for settings, part in (({"typical_p": 0}, "temperature.typical_p must be in (0, 1]"),
                           ({"epsilon": 1.5}, "temperature.epsilon must be in [0, 1)"),
                           ({"top_n_sigma": -1}, "temperature.top_n_sigma must be in [0, 100]"),
                           ({"xtc_probability": 2}, "temperature.xtc_probability must be in [0, 1]"),
                           ({"dry_base": 0.5}, "temperature.dry_base must be in [1, 10]"),
                           ({"dry_sequence_breakers": "[1]"}, "temperature.dry_sequence_breakers must be a JSON list")):
        with pytest.raises(SettingsError, match=part.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
            make_settings("temperature", settings)
    with pytest.raises(SettingsError, match="phase_slip.eta must be"):
        make_settings("phase_slip", {"eta": -1})


def test_every_setting_has_a_one_line_help():
    from playground.ui.columns import setting_fields

    for f in setting_fields():
        assert f.help and "\n" not in f.help and len(f.help) < 160, f.key


def test_dry_and_top_n_sigma_change_a_real_run(real_lm):
    options = RunOptions(seed=3, max_new_tokens=40)
    run = Engine(real_lm).run("Repeat after me: the cat sat on the mat. The cat sat on the mat. The cat",
                              ["temperature", ColumnSpec("temperature", {"dry_multiplier": 0.8}),
                               ColumnSpec("temperature", {"top_n_sigma": 1.0, "temperature": 1.5, "top_k": 0})],
                              options)
    plain, dry, sigma = run.columns
    assert dry.tokens != plain.tokens
    assert all(row.support >= 1 for row in sigma.rows)


# ---- mirostat ---------------------------------------------------------------------------------


def test_mirostat_cut_off_and_mu_moving_toward_the_target():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -2.0])
    p = torch.softmax(logits.double(), -1)
    mu = 2.0
    q = mirostat_probs(logits, mu)
    expected = [i for i in range(5) if -math.log2(p[i]) <= mu]
    assert kept(q) == expected and float(q.sum()) == pytest.approx(1.0)
    assert kept(mirostat_probs(logits, 0.0)) == [0]  # the most likely token always stays
    sampler = MirostatSampler(make_settings("mirostat", {"tau": 3.0, "eta": 0.5}))
    sampler.start(SimpleNamespace(seed=0))
    assert sampler.mu == 6.0
    out = sampler.update(4, 2 ** -7.0)  # a 7-bit surprise, above τ = 3: μ falls by η (7 - 3)
    assert out["surprise"] == pytest.approx(7.0) and sampler.mu == pytest.approx(6.0 - 0.5 * 4.0)
    sampler.update(0, 2 ** -1.0)  # 1 bit, below τ: μ rises
    assert sampler.mu == pytest.approx(4.0 + 0.5 * 2.0)


def test_mirostat_keeps_the_mean_surprise_near_tau_on_the_default_model(real_lm):
    run = Engine(real_lm).run("Write a long story about a lighthouse keeper.", ["mirostat"],
                              RunOptions(seed=0, max_new_tokens=200, chat=True, record_order_parameter=False))
    rows = run.columns[0].rows
    surprises = [row.extra["surprise"] for row in rows]
    assert all(row.extra["surprise"] == pytest.approx(-math.log2(row.sampler_prob)) for row in rows)
    mean = sum(surprises) / len(surprises)
    print(f"mirostat tau=5: {len(rows)} tokens, mean observed surprise {mean:.3f} bits, "
          f"mu from {rows[0].extra['mu']:.2f} to {rows[-1].extra['mu_next']:.2f}")
    assert len(rows) >= 100 and abs(mean - 5.0) < 1.0


def test_xtc_on_a_model_protects_its_newline_and_eos(real_lm):
    settings = make_settings("temperature", {"xtc_probability": 1.0, "xtc_threshold": 0.1})
    xtc = settings.processors(real_lm, torch.Generator().manual_seed(0))["xtc"]
    newline = real_lm.tokenizer.encode("\n", add_special_tokens=False)
    assert set(xtc.protected) == set(real_lm.eos_ids) | set(newline)
    off = make_settings("temperature", {"xtc_probability": 1.0, "xtc_threshold": 0.6})  # above 0.5: off
    assert "xtc" not in off.processors(real_lm, torch.Generator())
