"""Plotly figures of a run: pure functions from the run JSON (the CLI's schema) to go.Figure.

* signals_figure   three panels on one shared token axis: clean entropy H (nats), the
                   samplers' alphas (Phase-Slip fusion alpha, adaptive alpha) and Kuramoto R;
                   one trace per column per panel, the token text in every hover
* order_heatmap    R of every layer (rows) at every generated token (columns) of one column
"""
from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# one colour per column, in column order (the page's column cards use the same ones)
PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")

# the alpha panel: telemetry key -> how its trace is named
ALPHA_SIGNALS = {"fusion_alpha": "fusion α", "adaptive_alpha": "adaptive α"}

SIGNAL_PANELS = ("entropy H (nats)", "α", "Kuramoto R")


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
    """Entropy, alpha and R per token, one trace per column per panel, sharing the token axis."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.07, subplot_titles=SIGNAL_PANELS)
    any_alpha = False
    for i, col in enumerate(run["columns"]):
        colour, name, tokens = column_colour(i), col["label"], col["tokens"]
        fig.add_trace(_line(name, colour, *_series(tokens, "entropy"), "H"), row=1, col=1)
        for key, what in ALPHA_SIGNALS.items():
            steps, values, labels = _series(tokens, key)
            if steps:
                any_alpha = True
                fig.add_trace(_line(name, colour, steps, values, labels, what, show_legend=False), row=2, col=1)
        steps, values, labels = _series(tokens, "order_parameter")
        if steps:
            fig.add_trace(_line(name, colour, steps, values, labels, "R", show_legend=False), row=3, col=1)
    if not any_alpha:  # greedy/temperature have no alpha: say so instead of an empty frame
        fig.add_annotation(text="no α in these columns (Phase-Slip and adaptive samplers have one)",
                           xref="x2 domain", yref="y2 domain", x=0.5, y=0.5, showarrow=False,
                           font={"color": "#6b7280"})
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(range=[0, 1.05], row=3, col=1)
    fig.update_xaxes(title_text="generated token", row=3, col=1)
    fig.update_layout(height=640, margin={"l": 50, "r": 20, "t": 70, "b": 40}, hovermode="closest",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.06, "x": 0}, template="plotly_white")
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
