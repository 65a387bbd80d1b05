"""Columns are configurations (sampler + settings + label); presets, sweeps, branching, the sampler's own view."""
from __future__ import annotations

import json
import math

import pytest
import torch

from playground import cli
from playground.columns import (PRESETS, ColumnSpec, check_columns, column_labels, columns_from_json, parse_column,
                                parse_sweep, preset, split_top_level, sweep)
from playground.draw import draw
from playground.engine import Engine, RunOptions, branch
from playground.samplers import PlaygroundError, SettingsError
from playground.samplers.temperature import sample_decision
from playground.telemetry import sampler_view

PROMPT = "The ancient door creaked open"


def texts(run):
    return [c.text for c in run.columns]


def ids(column):
    return list(column.tokens)


# ---- the sampler's own view -----------------------------------------------------------------


def test_sampler_prob_entropy_and_support_match_a_hand_computation():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    decision = sample_decision(logits, torch.tensor([0]), {}, temperature=0.5, top_k=4, top_p=0.9)
    # by hand: T 0.5 -> exp(2 * logits); top-4 keeps tokens 0..3; top-p 0.9 then keeps the smallest
    # prefix (by rank) whose mass reaches 0.9: 0 and 1 (0.8437 + 0.1142 = 0.958 >= 0.9)
    e = [math.exp(2 * x) for x in (2.0, 1.0, 0.5, 0.0)]
    p = [x / sum(e) for x in e]
    assert p[0] < 0.9 <= p[0] + p[1]
    q = [p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])]
    view = sampler_view(decision.probs, 1, [0, 1, 2, 3, 4])
    assert view.prob == pytest.approx(q[1], rel=1e-6)
    assert view.support == 2
    assert view.entropy == pytest.approx(-sum(x * math.log(x) for x in q), rel=1e-6)
    assert view.top_probs == pytest.approx([q[0], q[1], 0.0, 0.0, 0.0], rel=1e-6)


def test_support_is_what_top_k_top_p_and_min_p_kept():
    torch.manual_seed(0)
    logits = torch.randn(1000) * 3
    p = torch.softmax(logits, -1)
    for kwargs, kept in (({"top_k": 17}, 17),
                         ({"top_k": 0, "min_p": 0.05}, int((p >= 0.05 * p.max()).sum())),
                         ({"top_k": 0, "top_p": 0.5}, int((torch.cumsum(p.sort(descending=True).values, 0)
                                                           < 0.5).sum()) + 1)):
        decision = sample_decision(logits, torch.tensor([0]), {}, temperature=1.0, **kwargs)
        assert sampler_view(decision.probs, int(logits.argmax()), [0]).support == kept, kwargs


def test_the_draw_and_the_view_on_a_decisions_support_are_those_on_the_whole_vocabulary():
    logits = torch.randn(49152, generator=torch.Generator().manual_seed(5)) * 3
    decision = sample_decision(logits, torch.tensor([0]), {}, temperature=0.8, top_k=40, top_p=0.92)
    assert decision.support.tolist() == sorted(torch.topk(logits, 40).indices.tolist())  # top-k's survivors
    assert bool((decision.probs[decision.support].sum() - decision.probs.sum()).abs() < 1e-6)
    for u in torch.linspace(0.0, 1.0 - 1e-12, 257, dtype=torch.float64).tolist():
        assert draw(decision.probs, u, decision.support) == draw(decision.probs, u), u  # the CDF's floats alike
    top = torch.topk(decision.probs, 6).indices.tolist()
    alone, whole = (sampler_view(decision.probs, top[0], top[1:], support) for support in (decision.support, None))
    assert alone.support == whole.support and alone.prob == pytest.approx(whole.prob, rel=1e-12)
    assert alone.entropy == pytest.approx(whole.entropy, rel=1e-12)
    assert alone.top_probs == pytest.approx(whole.top_probs, rel=1e-12)
    assert sample_decision(logits, torch.tensor([0]), {}, temperature=0.8, top_k=0, top_p=0.92).support is None


def test_a_deterministic_choice_is_a_point_mass():
    view = sampler_view(None, 7, [7, 3, 9])
    assert (view.prob, view.entropy, view.support, view.top_probs) == (1.0, 0.0, 1, [1.0, 0.0, 0.0])


def test_every_row_records_the_sampler_view(real_lm):
    run = Engine(real_lm).run(PROMPT, ["greedy", "temperature", "phase_slip", "adaptive_entropy"],
                              RunOptions(seed=1, max_new_tokens=12))
    for row in run.columns[0].rows:  # greedy: 1.0 / 0.0 / 1
        assert (row.sampler_prob, row.sampler_entropy, row.support) == (1.0, 0.0, 1)
    temperature = run.columns[1]
    for row in temperature.rows:
        assert 0 < row.sampler_prob <= 1 and 1 <= row.support <= 40 and row.sampler_entropy >= 0
        assert row.top[0]["sampler_prob"] >= row.top[0]["prob"]  # T < 1 and truncation: the top token gains
        assert sum(t["sampler_prob"] for t in row.top) <= 1 + 1e-6
    for col in run.columns[2:]:
        for row in col.rows:
            assert 0 < row.sampler_prob <= 1 and row.support >= 1 and math.isfinite(row.sampler_entropy)
            if row.extra.get("lookahead"):
                assert (row.sampler_prob, row.support) == (1.0, 1)


# ---- columns are configurations -------------------------------------------------------------


def test_two_temperature_columns_differ_and_each_equals_itself_run_alone(real_lm):
    cold, hot = ColumnSpec("temperature", {"temperature": 0.5}), ColumnSpec("temperature", {"temperature": 1.3})
    options = RunOptions(seed=4, max_new_tokens=24)
    both = Engine(real_lm).run(PROMPT, [cold, hot], options)
    assert both.columns[0].text != both.columns[1].text
    assert [c.label for c in both.columns] == ["temperature · temperature=0.5", "temperature · temperature=1.3"]
    for spec, column in zip((cold, hot), both.columns):
        alone = Engine(real_lm).run(PROMPT, [spec], options)
        assert ids(alone.columns[0]) == ids(column)


def test_a_column_set_to_the_defaults_is_the_default_column(real_lm):
    explicit = ColumnSpec("temperature", {"temperature": 0.8, "top_k": 40, "top_p": 0.92, "min_p": 0.0})
    run = Engine(real_lm).run(PROMPT, ["temperature", explicit, explicit], RunOptions(seed=2, max_new_tokens=20))
    assert ids(run.columns[0]) == ids(run.columns[1]) == ids(run.columns[2])
    assert [c.label for c in run.columns] == ["temperature", "temperature #2", "temperature #3"]


def test_labels_say_what_differs_or_what_was_typed():
    specs = [ColumnSpec("temperature", {"min_p": "0.1", "top_p": 1}), ColumnSpec("greedy"),
             ColumnSpec("temperature", {"temperature": 1.3}, "hot"), ColumnSpec("temperature", {}, "hot")]
    assert column_labels(specs) == ["temperature · top_p=1, min_p=0.1", "greedy", "hot", "hot #2"]


def test_the_text_form_of_a_column():
    spec = parse_column('temperature:temperature=1.3, min_p=0.1,label=hot one')
    assert (spec.sampler, spec.settings, spec.label) == ("temperature", {"temperature": "1.3", "min_p": "0.1"},
                                                         "hot one")
    assert parse_column("greedy") == ColumnSpec("greedy")
    assert split_top_level('a=["\\n", ":"], b=2') == ['a=["\\n", ":"]', "b=2"]
    for bad, part in (("nosuch:x=1", "unknown sampler 'nosuch'"), ("temperature:top_k", "'top_k' is not KEY=VALUE"),
                      ("temperature:top_k=x", "temperature.top_k must be int"),
                      ("temperature:colour=red", "unknown setting temperature.colour")):
        with pytest.raises(SettingsError, match=part):
            parse_column(bad)


def test_sweeps_and_presets():
    base = ColumnSpec("temperature", {"top_k": 0})
    swept = sweep(base, "temperature", ["0.5", "0.8", "1.1"])
    assert [s.settings for s in swept] == [{"top_k": 0, "temperature": v} for v in ("0.5", "0.8", "1.1")]
    # the swept setting is in every label, also where its value is the default (0.8)
    assert column_labels(swept) == [f"temperature · temperature={v}, top_k=0" for v in ("0.5", "0.8", "1.1")]
    assert [s.label for s in sweep(ColumnSpec("temperature", {}, "mine"), "top_p", ["0.5"])] == ["mine · top_p=0.5"]
    assert parse_sweep("temperature.temperature=0.5,0.8") == ("temperature", "temperature", ["0.5", "0.8"])
    with pytest.raises(SettingsError, match="temperature.top_k must be int"):
        sweep(base, "top_k", ["2", "x"])
    with pytest.raises(SettingsError, match="expected SAMPLER.KEY=V1,V2"):
        parse_sweep("temperature=0.5")
    assert {"greedy", "phase-slip-benchmark-baseline", "phase-slip-benchmark", "min-p-0.1", "top-p-0.9",
            "alphasampler"} <= set(PRESETS)
    assert preset("min-p-0.1") == ColumnSpec("temperature", {"temperature": 1.0, "top_k": 0, "top_p": 1.0,
                                                             "min_p": 0.1}, "min-p-0.1")
    for p in PRESETS.values():  # every preset is a valid column
        check_columns([p.spec()])
    with pytest.raises(SettingsError, match="unknown preset 'nope'; presets: greedy"):
        preset("nope")


def test_columns_json_and_its_errors():
    specs = columns_from_json('[{"sampler": "temperature", "settings": {"temperature": 0.5}, "label": "cold"},'
                              ' {"sampler": "greedy"}]')
    assert specs == [ColumnSpec("temperature", {"temperature": 0.5}, "cold"), ColumnSpec("greedy")]
    for bad, part in (("[", "columns must be a JSON list"), ('{"sampler": "greedy"}', "JSON list of objects"),
                      ('[{"sampler": "greedy", "colour": 1}]', "column 1: unknown key 'colour'"),
                      ('[{"sampler": "greedy"}, {"sampler": "temperature", "settings": {"top_p": 2}}]',
                       r"column 2: temperature.top_p must be in \(0, 1\]"),
                      ("[]", "at least one sampler"), (json.dumps([{"sampler": "greedy"}] * 9), "at most 8")):
        with pytest.raises(PlaygroundError, match=part):
            columns_from_json(bad)


def test_cli_columns_presets_and_sweeps_in_order(capsys):
    args = cli.build_parser().parse_args(
        ["compare", "--prompt", "x", "--column", "temperature:temperature=1.3,min_p=0.1", "--preset", "min-p-0.1",
         "--sweep", "temperature.temperature=0.5,1.1", "--set", "temperature.top_k=0"])
    specs = cli.compare_columns(args)
    assert [s.sampler for s in specs] == ["temperature"] * 4
    assert column_labels(specs) == ["temperature · temperature=1.3, min_p=0.1", "min-p-0.1",
                                    "temperature · temperature=0.5, top_k=0", "temperature · temperature=1.1, top_k=0"]
    assert specs[2].settings == {"top_k": "0", "temperature": "0.5"}  # --set applies to the swept columns
    default = cli.compare_columns(cli.build_parser().parse_args(["compare", "--prompt", "x"]))
    assert [s.sampler for s in default] == ["greedy", "temperature"]
    for argv, part in ((["--column", "temperature:top_k=x"], "column 'temperature:top_k=x': temperature.top_k"),
                       (["--preset", "nope"], "unknown preset 'nope'"),
                       (["--sweep", "temperature.bogus=1,2"], "unknown setting temperature.bogus")):
        assert cli.main(["compare", "--prompt", "x", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and part in err and "Traceback" not in err


def test_presets_command_lists_every_preset(capsys):
    assert cli.main(["presets", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["presets"]
    assert [p["preset"] for p in listed] == list(PRESETS)
    assert all(p["description"] for p in listed)


# ---- branching ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parent_run(real_lm):
    return Engine(real_lm).run(PROMPT, ["greedy", ColumnSpec("temperature", {"temperature": 1.0}, "hot")],
                               RunOptions(seed=3, max_new_tokens=10))


def test_a_branch_prompt_is_the_parent_prompt_plus_the_column_tokens_plus_the_token(real_lm, parent_run):
    column, step = 1, 4
    token = parent_run.columns[column].rows[step].top[1]["id"]
    child = branch(real_lm, parent_run, column, step, token)
    assert child.prompt_ids == parent_run.prompt_ids + parent_run.columns[column].tokens[:step] + [token]
    assert [c.label for c in child.columns] == [c.label for c in parent_run.columns]
    assert child.options.seed == parent_run.options.seed
    assert child.options.max_new_tokens == parent_run.options.max_new_tokens
    data = child.to_json()
    assert {k: data["parent"][k] for k in ("column", "step", "token")} == {"column": 1, "step": 4, "token": token}
    assert data["parent"]["prompt"] == PROMPT
    # a branch of a branch continues from the branch's ids; the JSON form branches the same way
    grandchild = branch(real_lm, data, 0, 2, 13)
    assert grandchild.prompt_ids == child.prompt_ids + child.columns[0].tokens[:2] + [13]


def test_a_branch_first_distribution_is_the_parent_next_one_when_it_takes_the_same_token(real_lm, parent_run):
    for column in (0, 1):
        parent = parent_run.columns[column]
        step = 3
        child = branch(real_lm, parent_run, column, step, parent.tokens[step])
        first, expected = child.columns[column].rows[0], parent.rows[step + 1]
        assert first.entropy == pytest.approx(expected.entropy, abs=1e-4)
        assert [t["id"] for t in first.top] == [t["id"] for t in expected.top]
        assert [t["prob"] for t in first.top] == pytest.approx([t["prob"] for t in expected.top], abs=1e-4)
        if column == 0:  # greedy continues exactly as the parent did
            rest = parent.tokens[step + 1:]
            assert child.columns[0].tokens[:len(rest)] == rest


def test_branching_from_step_zero_and_bad_branch_points(real_lm, parent_run):
    token = parent_run.columns[0].rows[0].top[2]["id"]
    child = branch(real_lm, parent_run, 0, 0, token)
    assert child.prompt_ids == parent_run.prompt_ids + [token]
    n = len(parent_run.columns[1].tokens)
    vocab = real_lm.model.config.vocab_size
    for args, part in (((1, n, 5), f"step must be in 0..{n - 1}"), ((1, -1, 5), "step must be in"),
                       ((0, 0, vocab), f"token must be a token id in 0..{vocab - 1}"), ((0, 0, -3), "token must be"),
                       ((2, 0, 5), "column must be in 0..1"), ((0, 1.5, 5), "step must be an integer")):
        with pytest.raises(PlaygroundError, match=part):
            branch(real_lm, parent_run, *args)
