"""Explain: each token's chain trace, where two columns part and which stage parted them, the chain order."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from unittest import mock
from urllib.parse import parse_qsl

import pytest
import torch

import playground
from playground.divergence import divergence, first_difference
from playground.engine import ColumnSpec, Engine, RunOptions
from playground.errors import SettingsError
from playground.explain import format_trace, trace, trace_table
from playground.samplers import make_settings
from playground.samplers.base import Stage
from playground.samplers.temperature import (DEFAULT_ORDER, LINKS, TEMPERATURE_LAST, TemperatureSampler,
                                             chain_order, sampling_probs)
from playground.telemetry import distribution_stats
from playground.traces import CLEAN_WINDOW, DRAW, OWN, chain_trace, clean_windows

LOGITS = torch.tensor([3.0, 2.6, 2.1, 1.2, 0.4, 0.0, -0.7, -2.0])
IDS = torch.tensor([0])
PROMPT = "The old lighthouse keeper"


def softmax64(x: list[float]) -> list[float]:
    top = max(v for v in x if v != -math.inf)
    e = [math.exp(v - top) if v != -math.inf else 0.0 for v in x]
    return [v / sum(e) for v in e]


def by_hand(logits: list[float], temperature: float, top_k: int, top_p: float, min_p: float) -> list[list[float]]:
    """The four distributions of temperature -> top-k -> top-p -> min-p, in float64 from the definitions."""
    scores = [v / temperature for v in logits]
    after_t = softmax64(scores)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept_k = set(order[:top_k])
    scores = [v if i in kept_k else -math.inf for i, v in enumerate(scores)]
    after_k = softmax64(scores)
    mass, kept_p = 0.0, set()
    for i in order:  # the nucleus: the most likely tokens until their mass reaches top_p
        if after_k[i] == 0 or mass >= top_p:
            continue
        kept_p.add(i)
        mass += after_k[i]
    scores = [v if i in kept_p else -math.inf for i, v in enumerate(scores)]
    after_p = softmax64(scores)
    kept_m = {i for i, p in enumerate(after_p) if p >= min_p * max(after_p)}
    after_m = softmax64([v if i in kept_m else -math.inf for i, v in enumerate(scores)])
    return [after_t, after_k, after_p, after_m]


def test_each_stage_of_a_fixed_chain_equals_a_hand_computation_and_the_last_is_the_draws_own():
    stages: list[Stage] = []
    probs = sampling_probs(LOGITS, IDS, 0.7, top_k=5, top_p=0.9, min_p=0.2, stages=stages)
    assert [s.name for s in stages] == ["temperature", "top_k", "top_p", "min_p"]
    assert [s.param for s in stages] == ["temperature=0.7", "top_k=5", "top_p=0.9", "min_p=0.2"]
    t = chain_trace(0, LOGITS, stages, token=1, u=0.5, how=DRAW, final=probs, with_draws=True)
    assert t.tokens == list(range(8))  # every token of this vocabulary is tracked, in clean order
    hand = [softmax64(LOGITS.tolist()), *by_hand(LOGITS.tolist(), 0.7, 5, 0.9, 0.2)]
    for s, expected in enumerate(hand):
        assert t.probs[s].tolist() == pytest.approx(expected, abs=2e-7), t.stages[s].name
        assert t.stages[s].support == sum(p > 0 for p in expected)
        assert t.stages[s].entropy == pytest.approx(-sum(p * math.log(p) for p in expected if p > 0), abs=1e-6)
    assert torch.equal(t.probs[-1], probs.double())  # the very floats the engine draws from
    removed = {j: t.removed_by(j) for j in range(8)}
    assert removed[5] == removed[6] == removed[7] == "top_k"
    assert [removed[j] for j in range(5)].count(None) == t.stages[-1].support
    assert any(r in ("top_p", "min_p") for r in removed.values())
    rows = trace_table(t.to_json(str))
    gone = [r for r in rows if r["top_k"] == "removed"]
    assert len(gone) == 3 and all(r["min_p"] == "0" for r in gone)
    assert t.stages[-1].draw == playground.engine.draw(probs, 0.5)


@pytest.mark.parametrize("chain", [dict(temperature=0.7, top_k=40, top_p=0.9), dict(temperature=1.3, top_p=0.95),
                                   dict(temperature=0.8, min_p=0.02), dict(temperature=1.0, top_k=0)])
def test_a_large_vocabulary_trace_reads_every_stage_as_a_full_read_would(chain):
    """The shortcuts (a few survivors read alone, a temperature's top tokens taken from the stage before)
    give each stage's support, entropy, tracked probabilities and ranks as a read of all 49,152 would, up to
    float rounding (a rank within the ranks of its probability's rounding)."""
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(3)) * 3
    logits[7] = logits[9] = float(logits.max()) + 1  # a tie among the most likely tokens
    stages: list[Stage] = []
    probs = sampling_probs(logits, IDS, stages=stages, **chain)
    t = chain_trace(0, logits, stages, token=playground.engine.draw(probs, 0.3), u=0.3, how=DRAW, final=probs,
                    with_draws=True)
    index = torch.tensor(t.tokens)
    for s, scores in enumerate([logits, *(stage.scores for stage in stages)]):
        read = probs if s == len(stages) else torch.log_softmax(scores.float(), -1).exp()  # the whole vocabulary
        assert t.stages[s].support == int((read > 0).sum()), t.stages[s].name
        exact = torch.softmax(scores.double(), -1)
        assert t.stages[s].entropy == pytest.approx(float(-torch.special.xlogy(exact, exact).sum()), rel=2e-5)
        assert t.probs[s].tolist() == pytest.approx(read[index].tolist(), rel=1e-6, abs=1e-12)
        for q, rank in zip(t.probs[s].float(), t.ranks[s].tolist()):  # a read on survivors rounds its own way:
            low, high = 1 + int((read > q * (1 + 1e-6)).sum()), 1 + int((read > q * (1 - 1e-6)).sum())
            assert (rank == 0) if q == 0 else low <= rank <= high, t.stages[s].name  # ranks as a full read's then
        assert t.stages[s].draw == playground.engine.draw(read, 0.3), t.stages[s].name
    assert torch.equal(t.probs[-1], probs[index].double())


def test_a_trace_from_the_batched_clean_window_equals_one_that_reads_the_clean_logits_itself():
    logits = torch.randn(3, 49152, generator=torch.Generator().manual_seed(4)) * 3
    logits[1, 11] = logits[1, 12] = float(logits[1].max()) + 1  # a tie at the top
    stats = distribution_stats(logits)
    for row, window in enumerate(clean_windows(stats.probs)):
        assert window.support == 49152 and window.values.shape == (CLEAN_WINDOW,)
        stages: list[Stage] = []
        probs = sampling_probs(logits[row], IDS, 0.8, top_k=40, top_p=0.9, stages=stages)
        token = playground.engine.draw(probs, 0.4)
        alone = chain_trace(0, logits[row], stages, token, 0.4, DRAW, final=probs, with_draws=True)
        batched = chain_trace(0, logits[row], stages, token, 0.4, DRAW, final=probs, with_draws=True,
                              clean=(stats.probs[row], float(stats.entropy[row]), window))
        assert batched.tokens == alone.tokens and torch.equal(batched.ranks, alone.ranks)
        assert torch.allclose(batched.probs, alone.probs, rtol=1e-6, atol=0)
        assert [s.support for s in batched.stages] == [s.support for s in alone.stages]


def test_a_stage_that_reorders_looks_for_its_most_likely_tokens_among_the_clean_ones_first():
    """A penalty's or a mixture's stage: its top tokens come from the clean window when they are there (no top-k
    over the vocabulary), from a top-k when one is not; either way the ranks and tokens of a full read."""
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(6)) * 3
    stats = distribution_stats(logits)
    window = clean_windows(stats.probs)[0]
    clean = (stats.probs[0], float(stats.entropy[0]), window)
    for boosted, topks in ((int(window.ids[100]), 0), (int(logits.argmin()), 1)):  # inside the window; far outside
        scores = logits.clone()
        scores[boosted] = float(logits.max()) + 2
        with mock.patch.object(torch, "topk", wraps=torch.topk) as topk:
            t = chain_trace(0, logits, [Stage("mix", scores=scores)], boosted, 0.5, OWN, clean=clean)
        assert topk.call_count == topks
        read = torch.log_softmax(scores, -1).exp()
        assert set(torch.topk(read, 5).indices.tolist()) <= set(t.tokens)
        assert t.ranks[1, t.tokens.index(boosted)] == 1
        assert t.ranks[1].tolist() == [1 + int((read > q).sum()) for q in t.probs[1].float()]


def test_a_clean_distribution_with_few_tokens_orders_the_tracked_ones_by_their_clean_probability():
    logits = torch.full((100,), -math.inf)
    logits[40:] = torch.linspace(-2.0, 3.0, 60)  # 60 tokens with p > 0: the clean read holds its survivors
    stages: list[Stage] = []
    probs = sampling_probs(logits, IDS, 1.0, top_k=0, top_p=0.9, stages=stages)
    t = chain_trace(0, logits, stages, token=99, u=0.999, how=DRAW, final=probs)
    assert t.tokens[:10] == list(range(99, 89, -1))  # the clean top-10, most likely first
    assert t.ranks[0].tolist()[:10] == list(range(1, 11)) and t.stages[0].support == 60


def test_ranks_count_the_more_likely_tokens_and_a_removed_one_has_none():
    stages: list[Stage] = []
    probs = sampling_probs(LOGITS, IDS, 1.0, top_k=3, stages=stages)
    t = chain_trace(0, LOGITS, stages, token=0, u=0.1, how=DRAW, final=probs)
    assert t.ranks[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert t.ranks[1].tolist() == [1, 2, 3, 0, 0, 0, 0, 0]


def test_a_float64_last_stage_ranks_its_tokens_by_its_own_floats():
    """Mirostat's and entropix's laws are float64: two probabilities 1e-12 apart have two ranks, as they
    would not in float32 (the clean stage stays float32 beside it)."""
    final = torch.tensor([0.25, 0.25 + 1e-12, 0.2, 0.15, 0.15 - 1e-12, 0.1, 0.05 - 1e-12 + 1e-12, 0.0],
                         dtype=torch.float64)
    t = chain_trace(0, LOGITS, [Stage("law", probs=final)], token=1, u=0.3, how=DRAW, final=final)
    by_token = dict(zip(t.tokens, t.ranks[1].tolist()))
    assert [by_token[i] for i in range(8)] == [2, 1, 3, 4, 5, 6, 7, 0]
    assert t.probs.dtype == torch.float64 and t.probs[1, t.tokens.index(1)] == 0.25 + 1e-12


def test_the_chain_order_setting_is_checked_and_names_a_bad_link():
    assert chain_order("") == LINKS == chain_order(DEFAULT_ORDER)
    moved = chain_order("min_p>temperature")
    assert moved.index("min_p") < moved.index("top_k") < moved.index("temperature")
    assert chain_order(TEMPERATURE_LAST)[-1] == "temperature"
    with pytest.raises(SettingsError, match="unknown link 'top_q'"):
        make_settings("temperature", {"order": "top_k>top_q"})
    with pytest.raises(SettingsError, match="link 'top_k' is listed twice"):
        make_settings("phase_slip", {"order": "top_k>top_p>top_k"})
    assert make_settings("temperature", {"order": DEFAULT_ORDER}).order == ""  # the default, however spelled


def test_temperature_last_is_the_hand_computed_distribution():
    logits = LOGITS.tolist()
    probs = sampling_probs(LOGITS, IDS, 1.5, min_p=0.3, order=chain_order(TEMPERATURE_LAST))
    p = softmax64(logits)
    kept = [v if pi >= 0.3 * max(p) else -math.inf for v, pi in zip(logits, p)]  # min-p before temperature
    assert probs.tolist() == pytest.approx(softmax64([v / 1.5 for v in kept]), abs=2e-7)
    first = sampling_probs(LOGITS, IDS, 1.5, min_p=0.3)  # the default order: temperature first
    assert int((first > 0).sum()) > int((probs > 0).sum())


def test_top_p_before_top_k_runs_the_two_links_apart():
    stages: list[Stage] = []
    sampling_probs(LOGITS, IDS, 1.0, top_k=2, top_p=0.5, order=chain_order("top_p>top_k"), stages=stages)
    assert [s.name for s in stages] == ["top_p", "top_k"]


def _temperature_trace(temperature: float, u: float, with_draws: bool = True):
    view = playground.samplers.StepView(step=0, logits=LOGITS, input_ids=IDS, n_prompt=1, record_stages=True)
    sampler = TemperatureSampler(make_settings("temperature", {"temperature": temperature, "top_k": 0,
                                                               "top_p": 1.0}))
    decision = sampler.decide(view)
    token = playground.engine.draw(decision.probs, u)
    return chain_trace(0, LOGITS, decision.stages, token, u, DRAW, final=decision.probs, with_draws=with_draws)


def test_a_divergence_names_its_step_u_tokens_and_the_temperature_that_parted_them():
    u = 0.62
    cold, hot = _temperature_trace(0.5, u), _temperature_trace(1.6, u)
    assert cold.token != hot.token
    clean_draw = playground.engine.draw(torch.softmax(LOGITS, -1), u)
    tokens = [[4, 4, cold.token], [4, 4, hot.token]]
    filler = _temperature_trace(1.0, 0.01)
    d = divergence(0, 1, ["T 0.5", "T 1.6"], tokens, [[filler, filler, cold], [filler, filler, hot]], str)
    assert d.step == 2 and d.u == u
    assert [s.token for s in d.sides] == [cold.token, hot.token]
    for side, t in zip(d.sides, (cold, hot)):
        low, high = side.interval
        assert low <= u < high
        assert side.moved_by == ("temperature" if t.token != clean_draw else None)
    assert f"both drew u = {u:.3f}" in d.sentence and "part at token 3" in d.sentence
    assert "temperature=1.6 moves the draw" in d.sentence


def test_greedy_takes_the_argmax_whatever_u_is_and_columns_that_agree_never_part():
    u = 0.9
    sampled = _temperature_trace(1.0, u)
    greedy = chain_trace(0, LOGITS, [Stage("argmax", probs=torch.nn.functional.one_hot(
        torch.tensor(0), 8).float())], 0, u, OWN, with_draws=True)
    assert sampled.token != 0
    d = divergence(0, 1, ["greedy", "T 1"], [[0], [sampled.token]], [[greedy], [sampled]], str)
    assert "column 1 (greedy) takes the argmax '0' whatever u is" in d.sentence
    same = divergence(0, 1, ["a", "b"], [[1, 2], [1, 2, 3]], [[], []], str)
    assert same.step is None and "never part" in same.sentence and "column 1 ended" in same.sentence
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2 and first_difference([1], [1, 2]) is None


# ---- the real model -------------------------------------------------------------------------------

EVERY = ["greedy", "temperature", "phase_slip", "adaptive_entropy", "mirostat", "entropix",
         ColumnSpec("temperature", {"temperature": 1.2, "top_k": 0, "top_p": 0.9, "min_p": 0.05,
                                    "order": "min_p>temperature"})]


@pytest.fixture(scope="module")
def every_run(real_lm):
    return Engine(real_lm).run(PROMPT, EVERY, RunOptions(max_new_tokens=12, seed=3))


@pytest.mark.slow
def test_every_samplers_last_stage_is_its_rows_sampler_probability(every_run):
    for column in every_run.columns:
        assert len(column.traces) == len(column.rows) == 12
        for row, t in zip(column.rows, column.traces):
            j = t.tokens.index(row.id)
            assert float(t.probs[-1, j]) == pytest.approx(row.sampler_prob, rel=1e-6), column.label
            assert t.stages[0].name == "clean" and t.step == row.step
            assert float(t.probs[0, j]) == pytest.approx(row.prob, rel=1e-4)
            if t.how == DRAW and t.interval:
                assert t.interval[0] <= t.u < t.interval[1]
    names = {c.sampler_name: [s.name for s in c.traces[0].stages] for c in every_run.columns}
    assert names["greedy"] == ["clean", "argmax"]
    assert names["phase_slip"][:3] == ["clean", "perturbed", "fusion"]
    assert names["mirostat"] == ["clean", "temperature", "mu_cut"]
    assert names["adaptive_entropy"][:2] == ["clean", "alpha"]


@pytest.mark.slow
def test_a_phase_slip_trace_at_zero_noise_is_the_temperature_trace(real_lm):
    settings = {"temperature": 0.65, "top_k": 40, "top_p": 0.92}
    run = Engine(real_lm).run(PROMPT, [ColumnSpec("temperature", settings),
                                       ColumnSpec("phase_slip", {**settings, "noise_scale": 0.0})],
                              RunOptions(max_new_tokens=6, seed=1))
    plain, slip = run.columns
    assert plain.tokens == slip.tokens
    for a, b in zip(plain.traces, slip.traces):
        chain = [i for i, s in enumerate(b.stages) if s.name not in ("perturbed", "fusion")]
        assert [b.stages[i].name for i in chain] == [s.name for s in a.stages]
        assert a.tokens == b.tokens
        assert torch.equal(a.probs, b.probs[chain]) and torch.equal(a.ranks, b.ranks[chain])


@pytest.mark.slow
def test_every_pair_of_a_real_run_parts_where_its_tokens_first_differ_at_the_same_u(real_lm):
    specs = ["temperature", ColumnSpec("temperature", {"temperature": 1.3}), "phase_slip", "greedy"]
    run = Engine(real_lm).run(PROMPT, specs, RunOptions(max_new_tokens=16, seed=5))
    generator = torch.Generator().manual_seed(5)
    us = [float(torch.rand((), generator=generator, dtype=torch.float64)) for _ in range(16)]
    pairs = run.divergences()
    assert len(pairs) == 6
    for d in pairs:
        a, b = run.columns[d.a].tokens, run.columns[d.b].tokens
        if d.step is None:
            assert a == b
            continue
        assert a[:d.step] == b[:d.step] and a[d.step] != b[d.step]
        assert d.u == us[d.step]
        assert all(t.step == d.step for t in (run.columns[d.a].traces[d.step], run.columns[d.b].traces[d.step]))
        assert all(s.draws[0]["token"] is not None for s in d.sides)  # shared history: every stage's draw kept
    exported = run.to_json()["divergences"]
    assert [(e["a"], e["b"], e["step"], e["sentence"]) for e in exported] == \
        [(d.a, d.b, d.step, d.sentence) for d in pairs]


@pytest.mark.slow
def test_the_default_order_spelled_out_gives_the_same_tokens(real_lm):
    spelled = ColumnSpec("temperature", {"order": DEFAULT_ORDER, "temperature": 1.1})
    run = Engine(real_lm).run(PROMPT, [ColumnSpec("temperature", {"temperature": 1.1}), spelled],
                              RunOptions(max_new_tokens=10, seed=2))
    assert run.columns[0].tokens == run.columns[1].tokens
    assert run.columns[1].label == run.columns[0].label + " #2"  # the default order is not a change


@pytest.mark.slow
def test_a_share_link_carries_the_order_and_reproduces_the_texts(real_lm):
    from playground.ui.columns import setting_fields
    from playground.ui.links import read_query, share_query

    spec = ColumnSpec("temperature", {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.1,
                                      "order": TEMPERATURE_LAST})
    query = dict(parse_qsl(share_query(PROMPT, "default", False, [spec], 8, 4)))
    found, problems = read_query(query, setting_fields())
    assert not problems and found["columns"][0].settings["order"] == TEMPERATURE_LAST
    first = Engine(real_lm).run(PROMPT, [spec], RunOptions(max_new_tokens=8, seed=4))
    again = Engine(real_lm).run(found["prompt"], found["columns"], RunOptions(max_new_tokens=8, seed=4))
    assert first.columns[0].text == again.columns[0].text
    assert "order=" in first.columns[0].label
    assert [s.name for s in first.columns[0].traces[0].stages][-1] == "temperature"


@pytest.mark.slow
def test_no_traces_are_exported_unless_asked_and_a_run_without_them_says_so(real_lm, every_run):
    data = every_run.to_json()
    assert all("traces" not in c for c in data["columns"])
    assert len(data["divergences"]) == 21
    with_traces = every_run.to_json(traces=True)
    assert with_traces["columns"][2]["traces"][3] == every_run.trace(2, 3)
    bare = Engine(real_lm).run(PROMPT, ["temperature", "greedy"], RunOptions(max_new_tokens=3, record_traces=False))
    assert bare.to_json()["divergences"] == [] and bare.columns[0].traces == []
    with pytest.raises(playground.PlaygroundError, match="recorded no chain traces"):
        bare.trace(0, 0)
    with pytest.raises(playground.PlaygroundError, match="step must be in 0..11"):
        every_run.trace(0, 12)


@pytest.mark.slow
def test_a_trace_decoded_again_from_the_json_equals_the_recorded_one(real_lm, every_run):
    data = json.loads(json.dumps(every_run.to_json()))
    for column, step in ((1, 0), (3, 7), (6, 11)):
        assert trace(real_lm, data, column, step) == every_run.trace(column, step)
    assert "token 8" in format_trace(trace(real_lm, data, 3, 7))


@pytest.mark.slow
def test_compare_explain_and_the_explain_command(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "playground", *args], capture_output=True, text=True, timeout=600)

    out = cli("compare", "--prompt", PROMPT, "--samplers", "greedy,temperature", "--max-new-tokens", "6",
              "--seed", "0", "--explain")
    assert out.returncode == 0, out.stderr
    assert "where the columns part:" in out.stdout and "columns 1 and 2 " in out.stdout
    out = cli("compare", "--prompt", PROMPT, "--samplers", "greedy,temperature", "--max-new-tokens", "6",
              "--seed", "0", "--json", "--traces")
    path = tmp_path / "run.json"
    path.write_text(out.stdout)
    data = json.loads(out.stdout)
    shown = cli("explain", str(path), "--column", "2", "--step", "3")
    assert shown.returncode == 0, shown.stderr
    chosen = data["columns"][1]["traces"][2]
    assert "token 3" in shown.stdout and "temperature=0.8" in shown.stdout and "top_p=0.92" in shown.stdout
    assert f"id {chosen['token']}" in shown.stdout
    bad = cli("explain", str(path), "--column", "3", "--step", "1")
    assert bad.returncode == 2 and "column must be in 1..2" in bad.stderr


def test_a_runs_traces_pickle_as_plain_data_with_the_texts_they_name():
    import pickle

    from playground.traces import RunTraces

    stages: list[Stage] = []
    probs = sampling_probs(LOGITS, IDS, 0.7, top_k=5, top_p=0.9, stages=stages)
    t = chain_trace(0, LOGITS, stages, token=1, u=0.5, how=DRAW, final=probs, with_draws=True)
    kept = RunTraces.of([[t]], lambda i: f"<{i}>")
    again = pickle.loads(pickle.dumps(kept))
    assert torch.equal(again.columns[0][0].probs, t.probs) and torch.equal(again.columns[0][0].ranks, t.ranks)
    assert again.trace(0, 0) == kept.trace(0, 0) and again.trace(0, 0)["tokens"][0]["text"] == "<0>"
