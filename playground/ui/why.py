"""HTML of the page's explanations: a token's chain trace ("why this token") and where the columns part.

    a token's menu -> "why this token" -> {column, step} -> the run's recorded trace -> the stage table
    the parts panel -> a pair's sentence -> both tokens' traces side by side
"""
from __future__ import annotations

import html
import json
from typing import Any

from .. import plots

HOW = {"draw": "drawn where the final distribution's CDF crosses u",
       "own": "chosen by the sampler's own rule, not by u",
       "lookahead": "chosen by the lookahead: the candidate with the calmest attention, not by u"}


def _text(text: str | None) -> str:
    return html.escape(json.dumps(text if text is not None else "?", ensure_ascii=False)[1:-1].replace("\\n", "⏎"))


def trace_html(trace: dict[str, Any], column: int, label: str) -> str:
    """One token's stage table: tracked tokens as rows, stages as columns (p, rank; removed greyed)."""
    chosen = next(t for t in trace["tokens"] if t["chosen"])
    head = (f'<div class="pg-why-head"><b>column {column + 1}, token {trace["step"] + 1}</b> '
            f'<span class="pg-why-label">{html.escape(label)}</span>: \'{_text(chosen["text"])}\', '
            f'{HOW[trace["how"]]}; u = {trace["u"]:.4f}')
    if trace.get("interval"):
        low, high = trace["interval"]
        head += f', its interval [{low:.4f}, {high:.4f})'
    head += "</div>"
    stages = trace["stages"]
    cells = "".join(
        f'<th scope="col" class="{"pg-why-side" if s["side"] else ""}" title="support {s["support"]:,}, '
        f'entropy {s["entropy"]:.3f} nats"><span class="pg-why-stage">{html.escape(s["name"])}</span>'
        f'<span class="pg-why-param">{html.escape(s["param"])}</span>'
        f'<span class="pg-why-facts">kept {s["support"]:,} · H {s["entropy"]:.2f}</span></th>' for s in stages)
    rows = []
    for token in trace["tokens"]:
        row_class = "pg-why-chosen" if token["chosen"] else ""
        removed = token["removed_by"]
        cols = []
        gone = False
        for stage, p, rank in zip(stages, token["probs"], token["ranks"]):
            if not stage["side"] and removed == stage["name"]:
                gone = True
            if rank:
                cols.append(f'<td>{p:.4f}<span class="pg-why-rank">#{rank}</span></td>')
            elif gone and not stage["side"]:
                cols.append(f'<td class="pg-why-removed" title="removed by {html.escape(removed)}">0 '
                            f'<span class="pg-why-rank">{html.escape(removed)}</span></td>')
            else:
                cols.append('<td class="pg-why-removed">0</td>')
        marker = "▶ " if token["chosen"] else ""
        rows.append(f'<tr class="{row_class}" data-token="{token["id"]}" '
                    f'data-removed-by="{html.escape(removed or "")}">'
                    f'<th scope="row">{marker}\'{_text(token["text"])}\'</th>{"".join(cols)}</tr>')
    extra = ""
    if trace.get("lookahead"):
        look = trace["lookahead"]
        extra = ('<div class="pg-why-note">lookahead candidates (attention-entropy score, lowest wins): ' +
                 ", ".join(f"{c} → {s:.4f}" for c, s in zip(look["candidates"], look["scores"])) + "</div>")
    return (f'<div class="pg-why-trace" data-column="{column}" data-step="{trace["step"]}" '
            f'style="--pg-accent:{plots.column_colour(column)}">{head}'
            f'<div class="pg-why-scroll"><table class="pg-why-table"><thead><tr><th scope="col">token</th>{cells}'
            f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{extra}</div>')


def why_html(traces: list[tuple[int, str, dict[str, Any]]], sentence: str = "") -> str:
    """One or two traces (side by side where the page is wide), under an optional sentence."""
    said = f'<div class="pg-why-sentence">{html.escape(sentence)}</div>' if sentence else ""
    body = "".join(trace_html(trace, column, label) for column, label, trace in traces)
    return (f'<div id="pg-why-panel" class="pg-why" tabindex="-1"><div class="pg-why-title">Why this token: '
            f'every stage of the sampler\'s decision</div>{said}<div class="pg-why-traces">{body}</div></div>')


def why_message(message: str) -> str:
    return f'<div id="pg-why-panel" class="pg-why pg-why-empty">{html.escape(message)}</div>'


def parts_html(run: dict[str, Any]) -> str:
    """The "Where the columns part" panel: one sentence per pair, each opening both tokens' traces."""
    pairs = run.get("divergences") or []
    labels = [c["label"] for c in run["columns"]]
    if len(labels) < 2:
        return ""
    options = "".join(f'<option value="{i}">column {i + 1}: {html.escape(label)}</option>'
                      for i, label in enumerate(labels))
    items = []
    for d in pairs:
        if d["step"] is None:
            items.append(f'<li class="pg-pair-same">{html.escape(d["sentence"])}</li>')
        else:
            items.append(f'<li><button type="button" class="pg-pair" data-a="{d["a"]}" data-b="{d["b"]}" '
                         f'data-step="{d["step"]}">{html.escape(d["sentence"])}</button></li>')
    return (f'<div class="pg-parts" id="pg-parts-panel"><div class="pg-why-title">Where the columns part</div>'
            f'<label class="pg-parts-ref">mark on each card where it parts from '
            f'<select class="pg-ref">{options}</select></label><ul>{"".join(items)}</ul></div>')
