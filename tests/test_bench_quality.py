"""The quality benchmark: its metrics on hand-made inputs, its determinism, resume and flag checks."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from playground import bench_quality as bq
from playground import metrics
from playground.cli import main
from playground.engine import ColumnSpec, Engine, RunOptions
from playground.samplers import SAMPLERS, PlaygroundError


# ---- metrics on texts with known answers ------------------------------------------------

def test_type_token_ratio_lowercases_strips_punctuation_and_includes_prompt():
    assert metrics.type_token_ratio("The cat. The cat, the dog") == pytest.approx(3 / 6)  # the, cat, dog
    assert metrics.type_token_ratio(" b a", "A") == pytest.approx(2 / 3)  # "a b a"


def test_distinct_n_pools_ngrams_across_sequences():
    assert metrics.distinct_n([[1, 2, 3, 1, 2]], 2) == pytest.approx(3 / 4)  # (1,2) twice
    assert metrics.distinct_n([[1, 2], [1, 2]], 2) == pytest.approx(1 / 2)  # the same bigram in both
    assert metrics.distinct_n([[1, 2, 3], [1, 2, 3, 4]], 3) == pytest.approx(2 / 3)


def test_rep_n_counts_repeated_ngrams_within_one_sequence():
    assert metrics.rep_n([1, 2, 1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 5)
    assert metrics.rep_n([1, 2, 3, 4], 2) == 0.0


# ---- perplexity ---------------------------------------------------------------------------

def hand_perplexity(model, prompt_ids: list[int], continuation_ids: list[int]) -> float:
    """exp(-mean log p(x_t | x_<t)) over the continuation only, by log_softmax of one full forward."""
    ids = torch.tensor([prompt_ids + continuation_ids])
    with torch.no_grad():
        log_p = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    n = len(prompt_ids)
    picked = [log_p[n - 1 + i, tok] for i, tok in enumerate(continuation_ids)]
    return math.exp(-float(sum(picked)) / len(picked))


def test_perplexity_masks_the_prompt(tiny_llama):
    prompt, continuation = [1, 400, 2000, 37], [512, 9, 777, 3000, 45]
    expected = hand_perplexity(tiny_llama.model, prompt, continuation)
    assert metrics.perplexity(tiny_llama.model, prompt, continuation) == pytest.approx(expected, rel=1e-5)
    # the prompt is masked: the whole sequence's perplexity is a different number
    assert hand_perplexity(tiny_llama.model, prompt[:1], prompt[1:] + continuation) != pytest.approx(expected, rel=1e-3)


def test_sample_perplexity_is_the_generating_models_loss_on_the_continuation(tiny_llama):
    prompt = "Once upon a time"
    run = Engine(tiny_llama).run(prompt, [ColumnSpec("temperature")], RunOptions(seed=3, max_new_tokens=8))
    config = bq.Config("standard T=0.8", "temperature", (), 0.8)
    row = bq.sample_row(config, 0, 0, 3, prompt, run.columns[0], run.elapsed_s, 1, None)
    expected = hand_perplexity(tiny_llama.model, run.prompt_ids, run.columns[0].tokens)
    assert row["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert row["token_ids"] == " ".join(map(str, run.columns[0].tokens))
    assert math.isnan(row["scorer_perplexity"])


def test_scorer_grades_the_decoded_text_with_its_own_tokenizer(tiny_gpt2):
    prompt, text = "The ancient door creaked open", " and a cold wind came in."
    expected = hand_perplexity(tiny_gpt2.model, tiny_gpt2.tokenizer(prompt).input_ids,
                               tiny_gpt2.tokenizer(text, add_special_tokens=False).input_ids)
    assert bq.scorer_perplexity(tiny_gpt2, prompt, text) == pytest.approx(expected, rel=1e-5)
    assert math.isnan(bq.scorer_perplexity(tiny_gpt2, prompt, ""))


# ---- configurations ----------------------------------------------------------------------

def test_protocol_configurations_in_one_run():
    configs = bq.build_configs(None, None, [])
    present = [label for label, sampler, _, _ in bq.PROTOCOL if sampler in SAMPLERS]
    assert [c.label for c in configs] == present
    assert {c.group for c in configs} == {0}
    by_label = {c.label: c for c in configs}
    if "phase_slip T=0.8" in by_label:  # equal temperature: the standard sampler's T, top-k and top-p
        assert dict(by_label["phase_slip T=0.8"].settings) == {"temperature": 0.8, "top_k": 40, "top_p": 0.92}
        assert by_label["phase_slip T=0.65"].settings == ()


def test_absent_sampler_is_skipped_with_a_note():
    registry = dict(SAMPLERS)
    del SAMPLERS["phase_slip"]
    try:
        notes: list[str] = []
        configs = bq.build_configs(None, None, notes)
    finally:  # restored in its order: the page lists the samplers in registry order
        SAMPLERS.clear()
        SAMPLERS.update(registry)
    assert not any(c.sampler == "phase_slip" for c in configs)
    assert any("phase_slip" in n for n in notes)


def test_sweep_runs_each_sampling_configuration_at_each_temperature():
    configs = bq.build_configs(["greedy", "temperature"], [0.5, 1.0], [])
    assert [(c.label, c.temperature, dict(c.settings), c.group) for c in configs] == [
        ("greedy", None, {}, 0),
        ("standard T=0.5", 0.5, {"temperature": 0.5}, 0),
        ("standard T=1", 1.0, {"temperature": 1.0}, 1),
    ]


# ---- runs: determinism, resume, outputs ----------------------------------------------------

def options(out, **kw) -> bq.QualityOptions:
    base = dict(rounds=2, prompts=2, max_new_tokens=6, samplers=["greedy", "temperature"], out=out,
                timing_tokens=0, progress=False)
    return bq.QualityOptions(**{**base, **kw})


def quality_columns(path):
    return pd.read_csv(path).drop(columns=list(bq.TIMING_COLUMNS))


def test_two_runs_give_identical_results(tiny_llama, tmp_path):
    bq.run_quality(tiny_llama, options(tmp_path / "a"), log=lambda m: None)
    bq.run_quality(tiny_llama, options(tmp_path / "b"), log=lambda m: None)
    a, b = quality_columns(tmp_path / "a/results.csv"), quality_columns(tmp_path / "b/results.csv")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 3 * 2 * 2  # configurations (greedy, standard, min-p 0.1) x prompts x rounds
    assert sorted(set(a["seed"])) == [0, 1, 1000, 1001]  # prompt_index * 1000 + round
    sampled = a[a["config"] == "standard T=0.8"]
    assert sampled["text"].nunique() > 1  # the rounds' seeds differ, so do the texts


def test_resume_after_interruption_gives_the_same_summary(tiny_llama, tmp_path):
    full = bq.run_quality(tiny_llama, options(tmp_path / "full"), log=lambda m: None)
    part = bq.run_quality(tiny_llama, options(tmp_path / "part", max_samples=3), log=lambda m: None)
    # a run is a prompt's 3 columns x 2 rounds (its samples): stopped after that first whole run
    assert len(pd.read_csv(tmp_path / "part/results.csv")) == 6
    assert sum(r["samples"] for r in part["configurations"]) == 6
    bq.run_quality(tiny_llama, options(tmp_path / "part"), log=lambda m: None)
    resumed = pd.read_csv(tmp_path / "part/results.csv")
    assert len(resumed) == 12 and not resumed.duplicated(["config", "prompt_index", "round"]).any()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full/summary.csv"),
                                  pd.read_csv(tmp_path / "part/summary.csv"))
    assert [r["samples"] for r in full["configurations"]] == [4, 4, 4]


def test_ctrl_c_keeps_finished_samples_and_a_rerun_completes_them(tiny_llama, tmp_path, monkeypatch):
    real_run, calls = Engine.run, []

    def run_then_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", run_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        bq.run_quality(tiny_llama, options(tmp_path / "cut", rounds=3, prompts=2), log=lambda m: None)
    assert len(pd.read_csv(tmp_path / "cut/results.csv")) == 9  # one finished run: three columns x three rounds
    monkeypatch.setattr(Engine, "run", real_run)
    bq.run_quality(tiny_llama, options(tmp_path / "cut", rounds=3, prompts=2), log=lambda m: None)
    bq.run_quality(tiny_llama, options(tmp_path / "whole", rounds=3, prompts=2), log=lambda m: None)
    pd.testing.assert_frame_equal(quality_columns(tmp_path / "cut/results.csv"),
                                  quality_columns(tmp_path / "whole/results.csv"))


def test_summary_is_mean_and_std_over_samples_and_distinct_over_prompts(tiny_llama, tmp_path):
    summary = bq.run_quality(tiny_llama, options(tmp_path), log=lambda m: None)
    results = pd.read_csv(tmp_path / "results.csv", dtype={"token_ids": str})
    row = next(r for r in summary["configurations"] if r["config"] == "standard T=0.8")
    sub = results[results["config"] == "standard T=0.8"]
    assert row["perplexity_mean"] == pytest.approx(sub["perplexity"].mean(), rel=1e-5)
    assert row["perplexity_std"] == pytest.approx(sub["perplexity"].std(ddof=0), rel=1e-4)
    per_prompt = [metrics.distinct_n([list(map(int, s.split())) for s in g["token_ids"]], 3)
                  for _, g in sub.groupby("prompt_index")]
    assert row["distinct_3_mean"] == pytest.approx(sum(per_prompt) / len(per_prompt), rel=1e-5)
    assert {p.name for p in tmp_path.iterdir()} >= {"results.csv", "summary.csv", "summary.json", "frontier.html"}
    fig = bq.frontier_figure(summary)
    assert {t.name for t in fig.data} == {"greedy", "temperature"}
    assert all(t.error_x.array is not None and t.error_y.array is not None for t in fig.data)


def test_rerun_with_other_settings_into_the_same_folder_is_refused(tiny_llama, tmp_path):
    bq.run_quality(tiny_llama, options(tmp_path, prompts=1, rounds=1), log=lambda m: None)
    with pytest.raises(PlaygroundError, match="max_new_tokens"):
        bq.run_quality(tiny_llama, options(tmp_path, prompts=1, rounds=1, max_new_tokens=7), log=lambda m: None)


# ---- bad flags -----------------------------------------------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--rounds", "0"], "--rounds"),
    (["--samplers", "greedy,nucleus"], "nucleus"),
    (["--sweep", "temperature="], "--sweep"),
    (["--sweep", "temperature=0.5,hot"], "--sweep"),
    (["--sweep", "top_k=10,20"], "--sweep"),
    (["--sweep", "temperature=0.5,-1"], "--sweep"),
    (["--prompts", "6"], "--prompts"),
])
def test_bad_flags_are_refused_with_one_line(flags, named, capsys, tmp_path):
    assert main(["bench", "quality", "--out", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and named in err and "\n" not in err
    assert not (tmp_path / "results.csv").exists()


def test_a_prompts_file_gives_prompts_times_rounds_times_samplers_rows(tiny_llama, tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# my prompts\nThe first one\n\nA second prompt\n  # indented comment\nThird, and last\n",
                    encoding="utf-8")
    texts = bq.read_prompts_file(path)
    assert texts == ["The first one", "A second prompt", "Third, and last"]
    summary = bq.run_quality(tiny_llama, options(tmp_path / "out", prompts=None, prompt_texts=texts, rounds=2),
                             log=lambda m: None)
    frame = pd.read_csv(tmp_path / "out" / "results.csv")
    configs = len(bq.build_configs(["greedy", "temperature"], None, []))  # greedy, standard, min-p 0.1
    assert len(frame) == 3 * 2 * configs  # 3 prompts x 2 rounds x the samplers' configurations
    assert sorted(set(frame["prompt_index"])) == [0, 1, 2]
    assert summary["protocol"]["prompt_set"] == texts
    with pytest.raises(bq.PlaygroundError, match="different benchmark"):  # another prompt set, same folder
        bq.run_quality(tiny_llama, options(tmp_path / "out", prompts=None, prompt_texts=texts[:2], rounds=2),
                       log=lambda m: None)
    (tmp_path / "empty.txt").write_text("# nothing\n", encoding="utf-8")
    assert main(["bench", "quality", "--out", str(tmp_path / "e"), "--prompts-file", str(tmp_path / "empty.txt")]) == 2


def test_the_protocol_has_the_new_samplers_at_equal_temperature():
    labels = {label: (sampler, overrides, t) for label, sampler, overrides, t in bq.PROTOCOL}
    assert labels["min_p 0.1 T=0.8"] == ("temperature", {"top_k": 0, "top_p": 1.0, "min_p": 0.1}, 0.8)
    assert labels["mirostat tau=5"][0] == "mirostat" and labels["entropix"][0] == "entropix"
    assert len(bq.build_configs(None, None, [])) <= bq.MAX_COLUMNS  # still one batched run


# ---- bench speed's command line ---------------------------------------------------------
def test_bench_speed_refuses_an_unknown_measure_before_loading_a_model(capsys, monkeypatch):
    from playground import bench

    monkeypatch.setattr(bench, "model_from_arguments", lambda args: pytest.fail("a model was loaded"))
    assert main(["bench", "speed", "--only", "order_parameter_overhead,warp_speed"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --only: unknown measure warp_speed;") and "order_parameter_overhead" in err


def test_bench_speed_quick_runs_fewer_tokens_once_and_reports_each_measure(tiny_llama, capsys, monkeypatch):
    import json

    from playground import bench

    monkeypatch.setattr(bench, "model_from_arguments", lambda args: tiny_llama)
    # the warm-up's samplers that a 4-layer model can run (Phase-Slip searches 6 layers)
    monkeypatch.setattr(bench, "SAMPLERS", {name: SAMPLERS[name] for name in ("greedy", "temperature")})
    assert main(["bench", "speed", "--quick", "--only", "order_parameter_overhead", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert (result["tokens"], result["repeats"]) == (bench.QUICK_TOKENS, bench.QUICK_REPEATS)
    assert list(result["measure_wall_s"]) == ["order_parameter_overhead"] and result["order_parameter_overhead"] > 0
    assert "bench speed" in err and "1/1" in err and "order_parameter_overhead" in err  # the progress line


def test_the_rounds_of_a_prompt_are_the_samples_of_its_runs_within_the_row_cap(monkeypatch):
    configs = bq.build_configs(None, None, [])  # eight configurations in one group
    monkeypatch.setenv("PLAYGROUND_MAX_ROWS", "20")
    assert bq.rounds_per_run(configs, 40, "cpu") == 2  # 8 columns x 2 samples = 16 <= 20 < 24
    monkeypatch.delenv("PLAYGROUND_MAX_ROWS")
    assert bq.rounds_per_run(configs, 40, "cuda") == 32  # 256 rows: 8 x 32, and at most 32 samples
    assert bq.rounds_per_run(configs, 4, "cuda") == 4
    assert bq.plan(configs, 2, 5, 2) == [(0, range(0, 2), 0), (0, range(2, 4), 0), (0, range(4, 5), 0),
                                         (1, range(0, 2), 0), (1, range(2, 4), 0), (1, range(4, 5), 0)]


def test_a_benchmark_round_is_its_runs_sample_seeded_prompt_index_1000_plus_round(tiny_llama, tmp_path, monkeypatch):
    seen = []
    real_run = Engine.run

    def recording(self, prompt, specs, options=None, *args, **kwargs):
        seen.append((options.seed, options.samples))
        return real_run(self, prompt, specs, options, *args, **kwargs)

    monkeypatch.setattr(Engine, "run", recording)
    bq.run_quality(tiny_llama, options(tmp_path, rounds=3, prompts=2), log=lambda m: None)
    assert seen == [(0, 3), (1000, 3)]  # one run per prompt, its rounds the samples: seed + i = round i's
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["seed"]) == [p * 1000 + r for p in range(2) for r in range(3) for _ in range(3)]


def test_bench_speed_sessions_reports_the_forward_passes_share_of_each_side(tiny_llama, capsys, monkeypatch):
    import json

    from playground import bench

    monkeypatch.setattr(bench, "model_from_arguments", lambda args: tiny_llama)
    monkeypatch.setattr(bench, "SAMPLERS", {name: SAMPLERS[name] for name in ("greedy", "temperature")})
    assert main(["bench", "speed", "--quick", "--only", "sessions8_vs_one", "--json"]) == 0
    result = json.loads(capsys.readouterr()[0])
    for side in ("sessions8", "sessions1"):
        assert 0 < result[f"{side}_forward_s"] < result[f"{side}_wall_s"]  # passes, and the runs' own work beside
    assert result["sessions8_forward_vs_one"] == pytest.approx(
        result["sessions8_forward_s"] / result["sessions1_forward_s"], rel=0.02)


def test_the_sessions_ratios_take_the_fastest_runs_and_the_median_of_the_pairs():
    from playground.bench import session_ratios

    samples = {"one": [(2.0, 1.0), (4.0, 1.5), (3.0, 1.2)], "eight": [(8.0, 2.5), (9.0, 3.0), (9.0, 2.0)]}
    result = session_ratios(samples)
    assert result["sessions8_vs_one"] == 4.0  # 8 s over 2 s: each side's fastest run
    assert result["sessions8_vs_one_paired"] == 3.0  # the pairs read 4, 2.25 and 3
    assert (result["sessions8_forward_vs_one"], result["sessions8_wall_s"]) == (2.5, 8.0)  # the fastest runs: 2.5 s over 1.0 s
