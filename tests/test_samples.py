"""Many samples per column: sample i is the one-sample run with seed + i, the statistics, the cap, the JSON."""
from __future__ import annotations

import math
from unittest import mock
from urllib.parse import parse_qsl

import pytest
import torch

import playground.engine as engine
from playground import samples as stats
from playground.engine import ColumnSpec, RunOptions, branch_point, compare
from playground.samplers import PlaygroundError

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

PROMPT = "The ancient door creaked open"
SEED, N, TOKENS = 2, 3, 6
# every sampler; the adaptive one always COLD, so every token is a lookahead over candidate rows
EVERY_SAMPLER = [ColumnSpec("greedy"), ColumnSpec("temperature", {"temperature": 1.0}), ColumnSpec("phase_slip"),
                 ColumnSpec("adaptive_entropy", {"cold_point": 2.5, "hot_point": 3.0}, "adaptive always COLD"),
                 ColumnSpec("mirostat"), ColumnSpec("entropix")]


@pytest.fixture(scope="module")
def many(real_lm):
    """One run of every sampler, N samples each, and the one-sample runs with seed + i it must equal."""
    options = dict(max_new_tokens=TOKENS, record_order_parameter=False)
    run = compare(real_lm, PROMPT, EVERY_SAMPLER, seed=SEED, samples=N, **options)
    singles = []
    for i in range(N):
        with recorded_draws() as margins:  # a batch of 3 x 6 columns rounds unlike one of 6: decided draws only
            single = compare(real_lm, PROMPT, EVERY_SAMPLER, seed=SEED + i, **options)
        assert_draws_decided(margins)
        assert_greedy_decided(single.columns[0].rows)
        singles.append(single)
    return run, singles


def test_sample_0_of_every_column_is_the_one_sample_run(many):
    run, singles = many
    assert [c.tokens for c in run.columns] == [c.tokens for c in singles[0].columns]
    assert all(run.samples[c][0] is run.columns[c] for c in range(len(run.columns)))


def test_sample_i_is_the_one_sample_run_with_seed_plus_i(many):
    run, singles = many
    assert any(r.extra.get("lookahead") for s in run.samples[3] for r in s.rows)  # candidate rows were used
    assert len(run.samples[0]) == 1  # greedy: decoded once
    for c in range(1, len(EVERY_SAMPLER)):
        assert [s.tokens for s in run.samples[c]] == [single.columns[c].tokens for single in singles]
    assert len({tuple(s.tokens) for s in run.samples[1]}) > 1  # the seeds do differ
    data = run.to_json()
    for c, col in enumerate(data["columns"]):
        assert [s["tokens"] for s in col["samples"]] == [single.columns[c].tokens for single in singles]


# ---- the statistics ----------------------------------------------------------------------------
def test_t_quantile_matches_the_table():
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.706204736, abs=1e-8)
    assert stats.t_quantile(0.975, 3) == pytest.approx(3.182446305, abs=1e-8)
    assert stats.t_quantile(0.975, 31) == pytest.approx(2.039513446, abs=1e-8)


def test_paired_interval_on_a_constructed_case():
    xs, ys = [3.0, 5.0, 4.0, 8.0], [1.0, 2.0, 4.0, 3.0]  # differences 2, 3, 0, 5
    mean = 2.5
    sd = math.sqrt(((2 - mean) ** 2 + (3 - mean) ** 2 + (0 - mean) ** 2 + (5 - mean) ** 2) / 3)
    half = 3.182446305284263 * sd / math.sqrt(4)  # t(0.975, 3) from a table
    out = stats.paired_difference(xs, ys, better=+1)
    assert out["mean_difference"] == pytest.approx(mean, abs=1e-9)
    assert out["sd"] == pytest.approx(sd, abs=1e-9)
    assert out["ci95"] == pytest.approx([mean - half, mean + half], abs=1e-8)
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (3, 1, 0, 4)
    lower_is_better = stats.paired_difference(xs, ys, better=-1)
    assert (lower_is_better["wins"], lower_is_better["ties"], lower_is_better["losses"]) == (0, 1, 3)


def test_a_column_compared_with_itself_differs_by_exactly_zero(tiny_llama):
    data = compare(tiny_llama, "Hello world", ["temperature", "greedy"], seed=4, samples=5,
                   max_new_tokens=8).to_json()
    col = data["columns"][0]
    assert len({s["text"] for s in col["samples"]}) > 1  # samples that differ from each other
    for paired in (stats.paired_comparison(col, col), {m: col["paired"][m] for m in stats.PAIRED_METRICS}):
        for metric, p in paired.items():
            assert p["mean_difference"] == 0.0 and p["ci95"] == [0.0, 0.0], metric
            assert (p["wins"], p["losses"], p["ties"], p["n"]) == (0, 0, 5, 5), metric
    assert data["columns"][1]["paired"]["reference_label"] == col["label"]


def test_summary_and_pooled_distinct_n(tiny_llama):
    data = compare(tiny_llama, "Hello world", ["temperature", "greedy"], seed=4, samples=4,
                   max_new_tokens=8).to_json()
    temp, greedy = data["columns"]
    perplexities = [s["metrics"]["perplexity"] for s in temp["samples"]]
    summary = temp["sample_summary"]["metrics"]["perplexity"]
    assert summary["mean"] == pytest.approx(sum(perplexities) / 4, abs=1e-9)
    assert summary["sd"] == pytest.approx(torch.tensor(perplexities, dtype=torch.float64).std().item(), abs=1e-9)
    ids = [s["tokens"] for s in temp["samples"]]
    grams = [tuple(t[i:i + 2]) for t in ids for i in range(len(t) - 1)]
    assert temp["sample_summary"]["pooled"]["distinct_2"] == len(set(grams)) / len(grams)
    # greedy: decoded once, four identical samples; pooled distinct-2 is a quarter of one sample's
    assert greedy["decoded_once"] and greedy["sample_summary"]["distinct_texts"] == 1
    assert greedy["sample_summary"]["pooled"]["distinct_2"] == pytest.approx(greedy["metrics"]["distinct_2"] / 4)


# ---- the first token ---------------------------------------------------------------------------
def test_each_first_token_is_where_the_step0_cdf_crosses_its_seeds_first_u(real_lm):
    spec = ColumnSpec("temperature", {"temperature": 1.0, "top_k": 0, "top_p": 1.0})
    seen: list[torch.Tensor] = []
    real = engine.draw

    def recording(probs, u, support=None):
        seen.append(probs.detach().to("cpu", torch.float64).clone())
        return real(probs, u, support)

    with mock.patch.object(engine, "draw", recording):
        data = compare(real_lm, PROMPT, [spec], seed=SEED, samples=32, max_new_tokens=1).to_json()
    col = data["columns"][0]
    assert len(seen) == 32 and all(torch.equal(p, seen[0]) for p in seen)  # one step-0 distribution for all
    cdf = torch.cumsum(seen[0], 0)
    for i, sample in enumerate(col["samples"]):
        u = float(torch.rand((), generator=torch.Generator().manual_seed(SEED + i), dtype=torch.float64))
        crossing = int((cdf <= u * cdf[-1]).sum())  # the first token whose CDF exceeds u
        assert sample["tokens"][0] == crossing
    histogram = stats.first_token_histogram(col)
    firsts = [s["tokens"][0] for s in col["samples"]]
    assert sum(h["count"] for h in histogram) == 32
    for h in histogram[:-1]:
        assert h["count"] == firsts.count(h["id"])
        assert h["sampler_prob"] == pytest.approx(float(seen[0][h["id"]] / seen[0].sum()), abs=1e-6)
    assert len(set(firsts)) > 1


# ---- the cap -----------------------------------------------------------------------------------
def test_a_request_over_the_row_cap_is_refused_before_any_forward_pass(tiny_llama, monkeypatch):
    monkeypatch.setenv(stats.ROW_CAP_ENV, "6")
    calls = []
    hook = tiny_llama.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(PlaygroundError, match="cap of 6 rows"):
            compare(tiny_llama, "Hello world", ["temperature", "phase_slip"], samples=4, max_new_tokens=2)
        assert calls == []
        compare(tiny_llama, "Hello world", ["temperature", "greedy"], samples=3, max_new_tokens=2)  # 6: allowed
        assert calls
    finally:
        hook.remove()
    for bad in (0, 33, True):
        with pytest.raises(PlaygroundError, match="samples must be an integer in 1..32"):
            stats.check_samples(bad, 1, 0, "cpu")
    with pytest.raises(PlaygroundError, match="reference must be a column in 0..1"):
        stats.check_samples(2, 2, 2, "cpu")
    monkeypatch.setenv(stats.ROW_CAP_ENV, "many")
    with pytest.raises(PlaygroundError, match=stats.ROW_CAP_ENV):
        stats.row_cap("cpu")


# ---- JSON, CSV, links, branches ---------------------------------------------------------------
def test_the_run_json_keeps_sample_0_and_gains_samples(tiny_llama):
    run = compare(tiny_llama, "Hello world", ["temperature", "greedy"], seed=9, samples=3, max_new_tokens=5,
                  reference=1)
    data = run.to_json()
    assert data["samples"] == 3 and data["reference_column"] == 1 and "samples_note" in data
    one = compare(tiny_llama, "Hello world", ["temperature", "greedy"], seed=9, max_new_tokens=5).to_json()
    assert set(one) == set(data) and set(one["columns"][0]) == set(data["columns"][0])
    assert set(data["columns"][0]) - {"sampler", "label", "settings", "spec", "text", "finish_reason", "tokens",
                                      "metrics"} == {"decoded_once", "samples", "sample_summary", "paired"}
    for col, alone in zip(data["columns"], one["columns"]):
        assert set(col["tokens"][0]) == set(alone["tokens"][0]) and set(col["metrics"]) == set(alone["metrics"])
        assert [s["seed"] for s in col["samples"]] == [9, 10, 11] and [s["sample"] for s in col["samples"]] == [0, 1, 2]
        first = col["samples"][0]
        assert first["tokens"] == [r["id"] for r in col["tokens"]] and first["text"] == col["text"]
        assert set(first) == {"sample", "seed", "text", "finish_reason", "tokens", "metrics"}
        assert set(col["sample_summary"]) == {"metrics", "pooled", "distinct_texts"}
        assert col["paired"]["reference"] == 1 and col["paired"]["interval"] == "paired t, 95%"
    frame = stats.samples_frame(data)
    assert len(frame) == 6 and list(frame["seed"]) == [9, 10, 11, 9, 10, 11]
    specs, options, parent = branch_point(tiny_llama, data, 0, 2, 17)
    assert (options.samples, options.reference) == (3, 1)
    assert branch_point(tiny_llama, run, 0, 2, 17)[1].samples == 3


def test_a_branch_runs_every_sample_from_the_branch_point(real_lm):
    spec = ColumnSpec("temperature", {"temperature": 1.0})
    seed = 3  # its branch's draws are decided
    run = compare(real_lm, PROMPT, [spec], seed=seed, samples=N, max_new_tokens=TOKENS)
    child = engine.branch(real_lm, run, 0, 3, 17)
    assert child.options.samples == N and len(child.samples[0]) == N
    assert child.prompt_ids[-4:] == [*run.columns[0].tokens[:3], 17]
    for i in range(N):  # sample i of the branch: the one-sample branch of the same prefix, seed + i
        with recorded_draws() as margins:
            alone = engine.Engine(real_lm).run(PROMPT, [spec], RunOptions(seed=seed + i, max_new_tokens=TOKENS),
                                               parent=child.parent)
        assert_draws_decided(margins)
        assert child.samples[0][i].tokens == alone.columns[0].tokens


def test_a_share_link_carries_samples():
    from playground import ui

    query = ui.share_query("hi", "default", False, [ColumnSpec("greedy")], 12, 3, None, samples=8)
    found, problems = ui.read_query(dict(parse_qsl(query)), ui.setting_fields())
    assert problems == [] and found["samples"] == 8
    found, problems = ui.read_query({"samples": "40"}, [])
    assert "samples" not in found and problems == ["samples out of range: 40"]


def test_options_default_to_one_sample():
    assert (RunOptions().samples, RunOptions().reference) == (1, 0)


def test_the_scatter_has_a_point_per_sample_and_a_mean_per_column(tiny_llama):
    from playground import plots

    data = compare(tiny_llama, "Hello world", ["temperature", "greedy", "mirostat"], seed=1, samples=8,
                   max_new_tokens=5).to_json()
    fig = plots.samples_scatter(data)
    points = [t for t in fig.data if t.marker.symbol != "x"]
    means = [t for t in fig.data if t.marker.symbol == "x"]
    assert [len(t.x) for t in points] == [8, 8, 8]
    for trace, mean, col in zip(points, means, data["columns"]):
        assert list(trace.y) == [s["metrics"]["distinct_2"] for s in col["samples"]]
        assert mean.x[0] == pytest.approx(col["sample_summary"]["metrics"]["perplexity"]["mean"], abs=1e-6)
    bars = plots.first_token_figure(data, 0).data
    histogram = stats.first_token_histogram(data["columns"][0])
    assert [int(t) for t in bars[0].text] == [b["count"] for b in histogram] and sum(b["count"] for b in histogram) == 8
    assert list(bars[1].y) == [b["sampler_prob"] for b in histogram]


def test_compare_samples_prints_each_columns_summary_and_the_paired_comparisons(tiny_llama, capsys, monkeypatch):
    import json

    from playground import cli

    monkeypatch.setattr(cli, "model_from_arguments", lambda args: tiny_llama)
    argv = ["compare", "--prompt", "Hello world", "--samplers", "greedy,temperature", "--samples", "4",
            "--max-new-tokens", "4"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "4 samples per column" in out and "greedy (decoded once)" in out and "paired with 'greedy'" in out
    assert cli.main(argv + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["samples"] == 4 and [len(c["samples"]) for c in data["columns"]] == [4, 4]
    assert cli.main(argv + ["--reference", "3"]) == 2
    assert "--reference must be a column in 1..2, got 3" in capsys.readouterr().err
