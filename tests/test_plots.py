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
    for axis, key in (("x", "entropy"), ("x3", "order_parameter")):
        traces = _panel(fig, axis)
        assert [t.name for t in traces] == [c["label"] for c in run_json["columns"]]
        for trace, col in zip(traces, run_json["columns"]):
            assert list(trace.x) == [r["step"] for r in col["tokens"]]
            assert list(trace.y) == pytest.approx([r[key] for r in col["tokens"]])
            assert list(trace.text) == [plots.token_label(r["text"]) for r in col["tokens"]]
            assert "%{text}" in trace.hovertemplate
    # the three panels share one token axis: zooming one zooms all
    assert fig.layout.xaxis.matches == "x3" and fig.layout.xaxis2.matches == "x3"


def test_alpha_panel_has_a_trace_only_for_columns_with_an_alpha(run_json):
    fig = plots.signals_figure(run_json)
    assert _panel(fig, "x2") == []
    assert any("no α" in (a.text or "") for a in fig.layout.annotations)

    with_alpha = copy.deepcopy(run_json)
    alphas = [0.1 * (i + 1) for i in range(len(with_alpha["columns"][1]["tokens"]))]
    for row, alpha in zip(with_alpha["columns"][1]["tokens"], alphas):
        row["fusion_alpha"] = alpha
    traces = _panel(plots.signals_figure(with_alpha), "x2")
    assert [t.name for t in traces] == [with_alpha["columns"][1]["label"]]
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
