"""HTML of the page's live parts: column cards (tokens coloured by entropy), the legend, the status line."""
from __future__ import annotations

import dataclasses
import html
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .. import plots
from ..divergence import first_difference
from ..metrics import column_metrics
from ..samplers import changed_settings, describe_settings
from ..telemetry import rows_to_frame


ENTROPY_SCALE_NATS = 5.0  # entropy at which a token's colour saturates


def entropy_colour(entropy: float) -> str:
    """Background of a token: pale green (certain) -> pale yellow -> pale red (uncertain)."""
    t = max(0.0, min(1.0, entropy / ENTROPY_SCALE_NATS))
    stops = ((0.0, (220, 252, 231)), (0.5, (254, 243, 170)), (1.0, (252, 165, 165)))
    (t0, c0), (t1, c1) = (stops[0], stops[1]) if t <= 0.5 else (stops[1], stops[2])
    w = (t - t0) / (t1 - t0)
    r, g, b = (round(a + (c - a) * w) for a, c in zip(c0, c1))
    return f"rgb({r},{g},{b})"


def token_title(row: Any) -> str:
    """The hover text of one token: p model -> p sampler, H, alphas/state where present, R, top-5."""
    parts = [f"p model {row.prob:.3f} → p sampler {row.sampler_prob:.3f} · kept {row.support:,}",
             f"H = {row.entropy:.3f} nats (sampler's: {row.sampler_entropy:.3f})"]
    if row.order_parameter is not None:
        parts[1] += f"   R = {row.order_parameter:.3f}"
    if row.fusion_alpha is not None:
        parts.append(f"fusion α = {row.fusion_alpha:.3f}")
    if row.adaptive_alpha is not None:
        line = f"adaptive α = {row.adaptive_alpha:.3f}"
        if row.adaptive_alpha_smoothed is not None:
            line += f" (smoothed {row.adaptive_alpha_smoothed:.3f})"
        if row.state:
            line += f"   state {row.state}"
        parts.append(line)
    elif row.state:
        parts.append(f"state {row.state}")
    parts.append("top-5 (p model → p sampler):")
    parts += [f"  {t['text']!r}  {t['prob']:.3f} → {t.get('sampler_prob', 0.0):.3f}" for t in row.top]
    parts.append("click or press Enter: why this token, or branch from an alternative")
    return "\n".join(parts)


def _span(row: Any, eos: bool, detail: bool = True, part_from: int | None = None) -> str:
    """One token; ``detail``: with its hover text and its alternatives (the branch menu's data);
    ``part_from``: the column this card parts from at this token (0-based)."""
    text = "⏹ end" if eos else row.text
    cls = "pg-tok pg-eos" if eos else "pg-tok"
    if part_from is not None:
        cls += " pg-part"
    if not detail:
        return (f'<span class="{cls}" data-step="{row.step}" style="background:{entropy_colour(row.entropy)}">'
                f'{html.escape(text)}</span>')
    title = html.escape(token_title(row), quote=True).replace("\n", "&#10;")
    alternatives = [{"id": t["id"], "text": t["text"], "p": round(t["prob"], 4),
                     "q": round(t.get("sampler_prob", 0.0), 4)} for t in row.top]
    alts = html.escape(json.dumps(alternatives, ensure_ascii=False), quote=True)
    part = f' data-part-from="{part_from + 1}"' if part_from is not None else ""
    return (f'<span class="{cls}" data-step="{row.step}" data-id="{row.id}" data-alts="{alts}" tabindex="0" '
            f'role="button" style="background:{entropy_colour(row.entropy)}" title="{title}"{part}>'
            f'{html.escape(text)}</span>')


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def settings_line(sampler: str, settings: Any, label: str = "") -> str:
    """The settings a column ran with: what differs from the sampler's defaults, every setting on hover;
    nothing when the label already says exactly that."""
    shown = f"{sampler} · {describe_settings(changed_settings(sampler, settings))}"
    if shown == label:
        return ""
    every = ", ".join(f"{f.name}={getattr(settings, f.name)}" for f in dataclasses.fields(settings))
    return f'<div class="pg-settings" title="{html.escape(every, quote=True)}">{html.escape(shown)}</div>'


def prompt_html(prompt: str, parent: Any = None) -> str:
    """The prompt, muted; a branch's continuation after it, its replaced token marked."""
    shown = f'<span class="pg-prompt">{html.escape(prompt)}</span>'
    if parent is None:
        return shown
    before = html.escape(parent.continuation_text)
    return (f'{shown}<span class="pg-prompt pg-continuation">{before}</span>'
            f'<span class="pg-branch-token" title="{html.escape(parent.describe(), quote=True)}">'
            f'{html.escape(parent.token_text)}</span>')


def samples_html(samples: list[Any], decoded_once: bool = False) -> str:
    """A column's other samples under its text: how many have finished, then each one's first line
    (expandable to its whole text); nothing for a one-sample run."""
    if decoded_once:
        return '<div class="pg-samples">every sample is this one: decoded once, the same for any seed</div>'
    if len(samples) <= 1:
        return ""
    done = sum(c.done for c in samples)
    items = []
    for c in samples[1:]:
        text = c.text
        first = text.strip().splitlines()[0] if text.strip() else ""
        items.append(f'<details class="pg-sample" data-sample="{c.sample}"><summary><b>#{c.sample}</b> '
                     f'{html.escape(first[:90])}</summary>{html.escape(text)}</details>')
    return (f'<div class="pg-samples" data-samples="{len(samples)}" data-done="{done}">'
            f'<div class="pg-samples-head">{done} of {len(samples)} samples finished</div>{"".join(items)}</div>')


def column_card(index: int, label: str, prompt: str, rows: list[Any], finish: str | None,
                metrics: dict[str, Any], settings: str = "", prompt_part: str | None = None,
                detail: bool = True, part: tuple[int, int] | None = None, samples: str = "") -> str:
    """One column: its settings, the prompt (muted), each token coloured by its entropy, the metrics beneath.

    ``part``: (reference column, step) where this column first parts from the reference, marked on the token.
    """
    spans = "".join(_span(row, finish == "eos" and i == len(rows) - 1, detail,
                          part[0] if part and part[1] == i else None) for i, row in enumerate(rows))
    state = {"eos": "finished (EOS)", "length": "finished (length)", "stopped": "stopped"}.get(finish, "running…")
    facts = [("tokens", metrics.get("tokens")), ("tok/s", metrics.get("tok_s")),
             ("mean H", metrics.get("mean_entropy")), ("perplexity", metrics.get("perplexity")),
             ("distinct-2", metrics.get("distinct_2"))]
    facts_html = "".join(f'<span class="pg-metric"><b>{name}</b> {_number(v)}</span>' for name, v in facts)
    return (f'<div class="pg-card" data-column="{index}" style="--pg-accent:{plots.column_colour(index)}">'
            f'<div class="pg-head"><span class="pg-label">{html.escape(label)}</span>'
            f'<span class="pg-state">{state}</span></div>{settings}'
            f'<div class="pg-text">{prompt_part or prompt_html(prompt)}{spans}</div>'
            f'<div class="pg-metrics">{facts_html}</div>{samples}</div>')


LEGEND = ('<div class="pg-legend">token colour = entropy of the clean distribution: '
          f'<span style="background:{entropy_colour(0)}">0 nats</span>'
          f'<span style="background:{entropy_colour(ENTROPY_SCALE_NATS / 2)}">{ENTROPY_SCALE_NATS / 2:g}</span>'
          f'<span style="background:{entropy_colour(ENTROPY_SCALE_NATS)}">≥ {ENTROPY_SCALE_NATS:g}</span>'
          ' · hover a token for p, H, α, R and its top-5 alternatives</div>')


EMPTY_COLUMNS = f'{LEGEND}<div class="pg-columns pg-empty">Type a prompt and press Run.</div>'


def columns_html(run: Any, detail: bool = True, mark_parts: bool = True) -> str:
    """All columns of a Run (the engine's objects), live or finished.

    ``detail=False`` (the streamed updates) leaves out each token's hover text and alternatives:
    about a tenth of the bytes, sent four times a second; the finished run has them, and (``mark_parts``)
    where each card parts from column 1.
    """
    shown_prompt = prompt_html(run.prompt, run.parent)
    parts = part_steps([c.tokens for c in run.columns]) if detail and mark_parts else {}
    cards = [column_card(i, c.label, run.prompt, c.rows, c.finish_reason,
                         column_metrics(c.rows, c.text, run.elapsed_s, run.prompt),
                         settings_line(c.sampler_name, c.settings, c.label), shown_prompt, detail,
                         (0, parts[f"0-{i}"]) if parts.get(f"0-{i}") is not None else None,
                         samples_html(run.samples[i], run.options.samples > 1 and len(run.samples[i]) == 1))
             for i, c in enumerate(run.columns)]
    data = f' data-parts="{html.escape(json.dumps(parts), quote=True)}"' if parts else ""
    return f'{LEGEND}<div class="pg-columns"{data}>{"".join(cards)}</div>'


def part_steps(tokens: list[list[int]]) -> dict[str, int | None]:
    """``"a-b"`` -> the first step where columns a and b differ (both orders; None: never), for the cards' marks."""
    steps: dict[str, int | None] = {}
    for a in range(len(tokens)):
        for b in range(len(tokens)):
            if a != b:
                steps[f"{a}-{b}"] = first_difference(tokens[a], tokens[b])
    return steps


def status_html(step: int, max_new_tokens: int, elapsed_s: float, tokens: int, state: str) -> str:
    """The step counter under the Run button (the browser test reads data-step/data-state)."""
    rate = f" · {tokens / elapsed_s:.1f} tok/s" if elapsed_s > 0 else ""
    return (f'<div id="pg-status" class="pg-status pg-{state}" data-step="{step}" data-state="{state}">'
            f'{state} · step {step} of ≤ {max_new_tokens} · {elapsed_s:.1f} s{rate}</div>')


def run_status(run: Any, state: str) -> str:
    """The step counter for a Run (the engine's object): its step, budget, time and tokens so far;
    a running one whose rows wait for room in the shared batch says so."""
    tokens = sum(len(c.tokens) for c in run.columns)
    if run.waiting and state == "running":
        return (f'<div id="pg-status" class="pg-status pg-waiting" data-step="{run.step}" data-state="waiting">'
                f'{html.escape(run.waiting)} · step {run.step} of ≤ {run.options.max_new_tokens}</div>')
    return status_html(run.step, run.options.max_new_tokens, run.elapsed_s, tokens, state)


def error_status(message: str) -> str:
    """The status line after a refused or failed run, in words."""
    return (f'<div id="pg-status" class="pg-status pg-error" data-step="0" data-state="error">'
            f'⚠ {html.escape(message)}</div>')


def run_failure(decoding: Any, exc: BaseException) -> str:
    """What to tell the user about a run that failed halfway (the tokens so far stay on the page)."""
    reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    if decoding is None:
        return f"the run could not start ({reason[:300]})"
    return f"the run failed after step {decoding.run.step} ({reason[:300]}); the tokens so far are kept"


IDLE_STATUS = '<div id="pg-status" class="pg-status" data-step="0" data-state="idle">idle</div>'
LOADING_STATUS = '<div id="pg-status" class="pg-status" data-step="0" data-state="loading">loading…</div>'
STOPPED_BEFORE_START = "stopped before it started"  # a Stop came while the run waited in the queue
STOPPED_BEFORE_START_STATUS = (f'<div id="pg-status" class="pg-status pg-stopped" data-step="0" data-state="stopped">'
                               f'{STOPPED_BEFORE_START}: nothing was decoded</div>')


def significant(value: Any, digits: int = 3) -> Any:
    """A float rounded to ``digits`` significant digits (others unchanged): 1234.5 -> 1230.0, 0.012345 -> 0.0123."""
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return value


def paired_cells(column: dict[str, Any]) -> dict[str, str]:
    """A column's paired comparison with the reference column, one cell per metric:
    ``+0.41 [0.12, 0.70] · 6/8 wins`` (mean difference, its 95% paired-t interval, wins of n)."""
    paired = column.get("paired") or {}
    cells = {}
    for metric in ("perplexity", "distinct_2", "rep_2", "tokens"):
        d = paired.get(metric)
        if not d or d.get("mean_difference") is None:
            continue
        ci = d.get("ci95")
        interval = f" [{significant(ci[0])}, {significant(ci[1])}]" if ci else ""
        cells[f"Δ {metric} vs {paired.get('reference', 0) + 1}"] = (
            f"{significant(d['mean_difference']):+} {interval} · {d['wins']}/{d['n']} wins").replace("  ", " ")
    return cells


def metrics_table(run: dict[str, Any]) -> pd.DataFrame:
    """One row per column: the run-level metrics, to 3 significant digits; with several samples per column,
    the paired comparisons with the reference column too."""
    many = run.get("samples", 1) > 1
    return pd.DataFrame([{"column": c["label"], "sampler": c["sampler"], "finish": c["finish_reason"],
                          **{k: significant(v) for k, v in c["metrics"].items()},
                          **(paired_cells(c) if many else {})} for c in run["columns"]])


def export_files(run: dict[str, Any]) -> tuple[str, str]:
    """The run as JSON (the CLI's schema) and its telemetry as CSV, in a fresh temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="playground-run-"))
    json_path, csv_path = folder / "run.json", folder / "telemetry.csv"
    json_path.write_text(json.dumps(run, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    rows_to_frame(run["columns"]).to_csv(csv_path, index=False)
    return str(json_path), str(csv_path)
