"""The figures: one trace per column per panel, token text in the hover, heatmap layers x tokens."""
from __future__ import annotations

import copy

import pytest

from playground import plots
from playground.engine import Engine, RunOptions


@pytest.fixture(scope="module")
def run_json(tiny_llama):
    """A real run's JSON (the CLI schema) from the tiny random Llama: 4 layers, two columns."""
    run = Engine(tiny_llama).run("Once upon a time", ["greedy", "temperature"],
                                 RunOptions(seed=3, max_new_tokens=6))
    return run.to_json()


def _panel(fig, axis: str):
    return [t for t in fig.data if t.xaxis == axis]


def test_entropy_and_r_panels_have_one_trace_per_column_with_tokens_in_hover(run_json):
    fig = plots.signals_figure(run_json)
    for axis, key in (("x", "entropy"), ("x4", "order_parameter"), ("x5", "support")):
        traces = _panel(fig, axis)
        assert [t.name for t in traces] == [c["label"] for c in run_json["columns"]]
        for trace, col in zip(traces, run_json["columns"]):
            assert list(trace.x) == [r["step"] for r in col["tokens"]]
            assert list(trace.y) == pytest.approx([r[key] for r in col["tokens"]])
            assert list(trace.text) == [plots.token_label(r["text"]) for r in col["tokens"]]
            assert "%{text}" in trace.hovertemplate
    # the panels share one token axis: zooming one zooms all
    assert all(getattr(fig.layout, f"xaxis{i}").matches == "x5" for i in ("", 2, 3, 4))
    assert fig.layout.yaxis5.type == "log"  # support spans 1 (greedy) to the vocabulary


def test_support_panel_shows_what_each_sampler_kept(run_json):
    greedy, temperature = run_json["columns"]
    assert [r["support"] for r in greedy["tokens"]] == [1] * len(greedy["tokens"])
    assert all(1 <= r["support"] <= 40 for r in temperature["tokens"])  # top-k 40 at most


def test_each_alpha_has_its_own_named_panel_with_a_trace_only_for_columns_that_have_it(run_json):
    fig = plots.signals_figure(run_json)
    assert _panel(fig, "x2") == [] and _panel(fig, "x3") == []
    texts = [a.text or "" for a in fig.layout.annotations]
    assert any("no fusion α" in t for t in texts) and any("no adaptive α" in t for t in texts)
    assert any(t.startswith("fusion α") and "0.45–1" in t for t in texts)  # the panel titles name the ranges
    assert any(t.startswith("adaptive α") and "0–2" in t for t in texts)

    with_alpha = copy.deepcopy(run_json)
    alphas = [0.1 * (i + 1) for i in range(len(with_alpha["columns"][1]["tokens"]))]
    for row, alpha in zip(with_alpha["columns"][1]["tokens"], alphas):
        row["fusion_alpha"] = alpha
    traces = _panel(plots.signals_figure(with_alpha), "x2")
    assert [t.name for t in traces] == [with_alpha["columns"][1]["label"]]
    assert _panel(plots.signals_figure(with_alpha), "x3") == []
    assert list(traces[0].y) == pytest.approx(alphas)
    assert "fusion α" in traces[0].hovertemplate


def test_heatmap_is_layers_by_tokens_of_the_chosen_column(run_json, tiny_llama):
    for index, col in enumerate(run_json["columns"]):
        fig = plots.order_heatmap(run_json, index)
        (heat,) = fig.data
        z = [list(row) for row in heat.z]
        assert len(z) == tiny_llama.n_layers
        assert all(len(row) == len(col["tokens"]) for row in z)
        for t, token in enumerate(col["tokens"]):
            assert [z[layer][t] for layer in range(len(z))] == token["order_parameter_layers"]
        assert heat.text[0][0] == plots.token_label(col["tokens"][0]["text"])
    assert plots.order_heatmap(run_json, 5).data == ()


def test_token_label_shows_spaces_and_newlines_and_escapes_html():
    assert plots.token_label(" a\n") == "&#x27; a⏎&#x27;"
    assert "<" not in plots.token_label("<b>")
