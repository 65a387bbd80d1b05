"""Plotly figures of a run: pure functions from the run JSON (the CLI's schema) to go.Figure.

* signals_figure   five panels on one shared token axis: clean entropy H (nats), Phase-Slip's
                   fusion alpha, the adaptive alpha, Kuramoto R, and the support of the
                   sampler's own distribution (log); one trace per column per panel, the token
                   text in every hover
* order_heatmap    R of every layer (rows) at every generated token (columns) of one column
* samples_scatter  one point per sample (perplexity against distinct-2), coloured by column, each
                   column's mean marked
* first_token_figure  one column's first tokens over its samples against the sampler's step-0
                   probabilities (the sampler draws what it says it draws)
"""
from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .samples import first_token_histogram

# one colour per column, in column order (the page's column cards use the same ones)
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")

# the signal panels, top to bottom: telemetry key, panel title, hover name, what to say when it is empty
SIGNAL_PANELS = (
    ("entropy", "entropy H of the clean distribution (nats)", "H", None),
    ("fusion_alpha", "fusion α (Phase-Slip; 0.45–1)", "fusion α",
     "no fusion α in these columns (Phase-Slip has one)"),
    ("adaptive_alpha", "adaptive α (adaptive sampler; 0–2)", "adaptive α",
     "no adaptive α in these columns (the adaptive sampler has one)"),
    ("order_parameter", "Kuramoto R", "R", "no Kuramoto R recorded"),
    ("support", "support: tokens the sampler kept (log)", "kept", None),
)


def column_colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def token_label(text: str) -> str:
    """A token as hover text: quoted so spaces show, newlines visible, HTML escaped."""
    shown = text.replace("\n", "⏎").replace("\t", "⇥")
    return html.escape(f"'{shown}'")


def _series(tokens: list[dict[str, Any]], key: str) -> tuple[list[int], list[float], list[str]]:
    """Steps, values and token labels of the rows where ``key`` has a value."""
    picked = [row for row in tokens if row.get(key) is not None]
    return [row["step"] for row in picked], [row[key] for row in picked], [token_label(row["text"]) for row in picked]


def _line(name: str, colour: str, steps, values, labels, what: str, dash: str | None = None,
          show_legend: bool = True) -> go.Scatter:
    return go.Scatter(
        x=steps, y=values, mode="lines+markers", name=name, legendgroup=name, showlegend=show_legend,
        line={"color": colour, "width": 2, "dash": dash}, marker={"size": 4},
        text=labels, hovertemplate=f"<b>{html.escape(name)}</b> step %{{x}}<br>token %{{text}}<br>"
                                   f"{what} = %{{y:.4f}}<extra></extra>")


def signals_figure(run: dict[str, Any]) -> go.Figure:
    """One panel per signal (SIGNAL_PANELS), one trace per column per panel, all on one token axis."""
    n = len(SIGNAL_PANELS)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.045,
                        subplot_titles=[title for _, title, _, _ in SIGNAL_PANELS])
    for panel, (key, _, what, empty) in enumerate(SIGNAL_PANELS, 1):
        drawn = False
        for i, col in enumerate(run["columns"]):
            steps, values, labels = _series(col["tokens"], key)
            if steps:
                fig.add_trace(_line(col["label"], column_colour(i), steps, values, labels, what,
                                    show_legend=panel == 1), row=panel, col=1)
                drawn = True
        if not drawn and empty:  # say why a panel is empty instead of leaving a blank frame
            axis = "" if panel == 1 else str(panel)
            fig.add_annotation(text=empty, xref=f"x{axis} domain", yref=f"y{axis} domain", x=0.5, y=0.5,
                               showarrow=False, font={"color": "#6b7280"})
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0.4, 1.02], row=2, col=1)
    fig.update_yaxes(range=[0, 2.05], row=3, col=1)
    fig.update_yaxes(range=[0, 1.05], row=4, col=1)
    fig.update_yaxes(type="log", row=5, col=1)
    fig.update_xaxes(title_text="generated token", row=n, col=1)
    fig.update_layout(height=960, margin={"l": 50, "r": 20, "t": 70, "b": 40}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.04, "x": 0}, template="plotly_white")
    return fig


def order_heatmap(run: dict[str, Any], column: int = 0) -> go.Figure:
    """Kuramoto R of every layer (y) at every token (x) of one column: z[layer][token]."""
    columns = run["columns"]
    fig = go.Figure()
    if not columns or not 0 <= column < len(columns):
        return fig
    col = columns[column]
    tokens = col["tokens"]
    n_layers = max((len(row.get("order_parameter_layers") or []) for row in tokens), default=0)
    z = [[(row.get("order_parameter_layers") or [None] * n_layers)[layer] for row in tokens]
         for layer in range(n_layers)]
    labels = [[token_label(row["text"]) for row in tokens] for _ in range(n_layers)]
    fig.add_trace(go.Heatmap(
        z=z, x=[row["step"] for row in tokens], y=list(range(n_layers)), zmin=0, zmax=1,
        colorscale="Viridis", colorbar={"title": {"text": "R"}}, text=labels, name=col["label"],
        hovertemplate="layer %{y} · step %{x}<br>token %{text}<br>R = %{z:.3f}<extra></extra>"))
    probe = run.get("probe_layer")
    if probe is not None and n_layers:
        fig.add_hline(y=probe, line={"color": "white", "dash": "dot", "width": 1},
                      annotation_text=f"probe layer {probe}", annotation_font_color="white")
    fig.update_layout(title={"text": f"Kuramoto R per layer: {html.escape(col['label'])}", "x": 0},
                      xaxis_title="generated token", yaxis_title="layer", height=420,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, template="plotly_white")
    return fig


def samples_scatter(run: dict[str, Any], x: str = "perplexity", y: str = "distinct_2") -> go.Figure:
    """One point per sample of every column (``x`` against ``y`` of its metrics); a cross marks each mean."""
    fig = go.Figure()
    for i, col in enumerate(run["columns"]):
        points = [s for s in col["samples"] if s["metrics"].get(x) is not None and s["metrics"].get(y) is not None]
        xs, ys = [s["metrics"][x] for s in points], [s["metrics"][y] for s in points]
        hover = [f"sample {s['sample']} (seed {s['seed']})<br>{html.escape(s['text'][:80])}" for s in points]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=col["label"], legendgroup=str(i),
                                 marker={"color": column_colour(i), "size": 8, "opacity": 0.7},
                                 hovertext=hover, hoverinfo="text+x+y"))
        if xs:
            fig.add_trace(go.Scatter(x=[sum(xs) / len(xs)], y=[sum(ys) / len(ys)], mode="markers",
                                     name=f"{col['label']} mean", legendgroup=str(i), showlegend=False,
                                     marker={"color": column_colour(i), "size": 16, "symbol": "x"}))
    fig.update_layout(title=f"{run['samples']} samples per column: {y.replace('_', '-')} against {x}",
                      xaxis_title=f"{x} (lower is more predictable)", yaxis_title=f"{y.replace('_', '-')} (higher is "
                      "more diverse)", template="plotly_white")
    return fig


def first_token_figure(run: dict[str, Any], column: int = 0) -> go.Figure:
    """Share of a column's samples that start with each token, beside the sampler's step-0 probability of it."""
    col = run["columns"][column]
    bins = first_token_histogram(col)
    names = [token_label(b["text"]) if b["id"] is not None else "other" for b in bins]
    fig = go.Figure([go.Bar(x=names, y=[b["share"] for b in bins], name=f"share of {len(col['samples'])} samples",
                            marker_color=column_colour(column), text=[b["count"] for b in bins]),
                     go.Bar(x=names, y=[b["sampler_prob"] for b in bins], name="sampler's step-0 probability",
                            marker_color="#9ca3af")])
    fig.update_layout(barmode="group", title=f"first token of {col['label']}: drawn against the sampler's law",
                      yaxis_title="probability", template="plotly_white")
    return fig
