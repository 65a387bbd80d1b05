"""The Gradio playground: one prompt through several samplers, side by side, streamed.

    inputs -> ColumnSpecs + RunOptions -> Engine.stream (ONE batched run, all columns)
           -> every step: coloured token columns + a step counter (throttled)
           -> at the end: plots, metrics table, JSON/CSV downloads, share link

The page calls the backend only: Stop sets the run's threading.Event, which the engine checks
between steps. Each browser session has its own Event (keyed by Gradio's session hash).
The sampler accordions are built from each registered sampler's Settings dataclass, so a
newly registered sampler appears with its defaults without any change here.
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import random
import tempfile
import threading
import time
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import gradio as gr
import pandas as pd

from . import plots
from .engine import MAX_NEW_TOKENS, ColumnSpec, Engine, RunOptions, parse_columns
from .metrics import column_metrics
from .inputs import check_prompt_text, max_prompt_tokens
from .models import DEFAULT_MODEL, HUB_DEFAULT_ID, load_model, loaded_model
from .prompts import BENCHMARK_PROMPTS
from .samplers import SAMPLERS, PlaygroundError, changed_settings, describe_settings, sampler_class
from .telemetry import rows_to_frame

try:  # Hugging Face ZeroGPU: the decorator asks for a GPU per call; elsewhere nothing
    import spaces

    gpu = spaces.GPU
except ImportError:
    def gpu(fn):
        return fn

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MAX_NEW_TOKENS = 48
UPDATE_INTERVAL_S = 0.25  # streamed page updates at most this often (keeps the UI cost small)
CONCURRENCY = int(os.environ.get("PLAYGROUND_CONCURRENCY", "2"))  # decoding events at once
QUEUE_SIZE = int(os.environ.get("PLAYGROUND_QUEUE_SIZE", "32"))
SPACES_ALLOWED_MODELS = (HUB_DEFAULT_ID, "HuggingFaceTB/SmolLM2-360M-Instruct")
ENTROPY_SCALE_NATS = 5.0  # entropy at which a token's colour saturates
EXAMPLE_PROMPTS = (*BENCHMARK_PROMPTS, "Write a haiku about the sea.")


# ---- models ------------------------------------------------------------------------------
def allowed_models() -> list[str] | None:
    """Model ids besides the default a user may pick; None means any id.

    $PLAYGROUND_ALLOWED_MODELS: comma-separated ids, or "*" for any. Unset: none locally,
    a short list on Hugging Face Spaces (detected by $SPACE_ID).
    """
    raw = os.environ.get("PLAYGROUND_ALLOWED_MODELS")
    if raw is None:
        return list(SPACES_ALLOWED_MODELS) if os.environ.get("SPACE_ID") else []
    ids = [m.strip() for m in raw.split(",") if m.strip()]
    return None if "*" in ids else ids


def check_model(model_id: str | None) -> str:
    """The model id to load, or a PlaygroundError when this deployment does not allow it."""
    model_id = (model_id or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    allowed = allowed_models()
    if model_id != DEFAULT_MODEL and allowed is not None and model_id not in allowed:
        choices = ", ".join([DEFAULT_MODEL, *allowed])
        raise PlaygroundError(f"model {model_id!r} is not allowed here; choose one of: {choices} "
                              "(the allow-list is set by PLAYGROUND_ALLOWED_MODELS)")
    return model_id


# ---- sampler settings, generically from the Settings dataclasses -----------------------------
@dataclasses.dataclass(frozen=True)
class SettingField:
    sampler: str
    name: str
    kind: type  # bool, int, float or str
    default: Any
    help: str | None = None

    @property
    def key(self) -> str:
        return f"{self.sampler}.{self.name}"


def _kind(hint: Any) -> type:
    if typing.get_origin(hint) is not None:  # Optional[X] / X | None
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), str)
    return hint if hint in (bool, int, float) else str


def setting_fields() -> list[SettingField]:
    """Every setting of every registered sampler, in registry then field order."""
    out = []
    for name, cls in SAMPLERS.items():
        hints = typing.get_type_hints(cls.Settings)
        for f in dataclasses.fields(cls.Settings):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out.append(SettingField(name, f.name, _kind(hints[f.name]), default, f.metadata.get("help")))
    return out


def column_specs(samplers: list[str] | None, fields: list[SettingField], values: list[Any]) -> list[ColumnSpec]:
    """One ColumnSpec per chosen sampler, with the settings from the page (empty boxes: default)."""
    for name in samplers or []:
        sampler_class(name)  # an unknown name: an error naming it and the available ones
    chosen = [s for s in SAMPLERS if s in (samplers or [])]  # registry order, whatever the click order
    overrides: dict[str, dict[str, Any]] = {s: {} for s in chosen}
    for f, value in zip(fields, values):
        if f.sampler in overrides and value is not None and value != "":
            overrides[f.sampler][f.name] = value
    return parse_columns([ColumnSpec(s, overrides[s]) for s in chosen])  # none chosen: a clear error


def _integer(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaygroundError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise PlaygroundError(f"{name} must be an integer, got {value!r}")
    return int(number)


# ---- one Stop event per browser session ----------------------------------------------------
_stops: dict[str, threading.Event] = {}
_stops_lock = threading.Lock()


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _new_stop(session: str) -> threading.Event:
    event = threading.Event()
    with _stops_lock:
        _stops[session] = event
    return event


def _drop_stop(session: str, event: threading.Event) -> None:
    with _stops_lock:
        if _stops.get(session) is event:
            del _stops[session]


def request_stop(request: gr.Request) -> None:
    """Stop this session's run: the engine finishes the current step and returns."""
    with _stops_lock:
        event = _stops.get(_session(request))
    if event is not None:
        event.set()


class BackgroundRun:
    """Drives an engine stream in a thread, so that decoding never waits for the page updates.

    The first step (prefill) runs in the caller, so bad input raises there as a PlaygroundError.
    """

    def __init__(self, runs):
        self.run = next(runs)
        self._runs, self._error = runs, None
        self._thread = threading.Thread(target=self._drive, daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            for self.run in self._runs:
                pass
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds; True once the run has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self):
        """The finished run (re-raising what stopped the thread, if anything did)."""
        self.wait(None)
        if self._error is not None:
            raise self._error
        return self.run


# ---- rendering -------------------------------------------------------------------------------
def entropy_colour(entropy: float) -> str:
    """Background of a token: pale green (certain) -> pale yellow -> pale red (uncertain)."""
    t = max(0.0, min(1.0, entropy / ENTROPY_SCALE_NATS))
    stops = ((0.0, (220, 252, 231)), (0.5, (254, 243, 170)), (1.0, (252, 165, 165)))
    (t0, c0), (t1, c1) = (stops[0], stops[1]) if t <= 0.5 else (stops[1], stops[2])
    w = (t - t0) / (t1 - t0)
    r, g, b = (round(a + (c - a) * w) for a, c in zip(c0, c1))
    return f"rgb({r},{g},{b})"


def token_title(row: Any) -> str:
    """The hover text of one token: p, H, alphas/state where present, R, top-5."""
    parts = [f"p = {row.prob:.3f}   H = {row.entropy:.3f} nats"]
    if row.order_parameter is not None:
        parts[0] += f"   R = {row.order_parameter:.3f}"
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
    parts.append("top-5:")
    parts += [f"  {t['text']!r}  {t['prob']:.3f}" for t in row.top]
    return "\n".join(parts)


def _span(row: Any, eos: bool) -> str:
    title = html.escape(token_title(row), quote=True).replace("\n", "&#10;")
    text = "⏹ end" if eos else row.text
    cls = "pg-tok pg-eos" if eos else "pg-tok"
    return (f'<span class="{cls}" data-step="{row.step}" style="background:'
            f'{entropy_colour(row.entropy)}" title="{title}">{html.escape(text)}</span>')


def _number(value: Any) -> str:
    return "–" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def settings_line(sampler: str, settings: Any) -> str:
    """The settings a column ran with: what differs from the sampler's defaults, every setting on hover."""
    every = ", ".join(f"{f.name}={getattr(settings, f.name)}" for f in dataclasses.fields(settings))
    shown = describe_settings(changed_settings(sampler, settings))
    return (f'<div class="pg-settings" title="{html.escape(every, quote=True)}">'
            f'{html.escape(sampler)} · {html.escape(shown)}</div>')


def column_card(index: int, label: str, prompt: str, rows: list[Any], finish: str | None,
                metrics: dict[str, Any], settings: str = "") -> str:
    """One column: its settings, the prompt (muted), each token coloured by its entropy, the metrics beneath."""
    spans = "".join(_span(row, finish == "eos" and i == len(rows) - 1) for i, row in enumerate(rows))
    state = {"eos": "finished (EOS)", "length": "finished (length)", "stopped": "stopped"}.get(finish, "running…")
    facts = [("tokens", metrics.get("tokens")), ("tok/s", metrics.get("tok_s")),
             ("mean H", metrics.get("mean_entropy")), ("perplexity", metrics.get("perplexity")),
             ("distinct-2", metrics.get("distinct_2"))]
    facts_html = "".join(f'<span class="pg-metric"><b>{name}</b> {_number(v)}</span>' for name, v in facts)
    return (f'<div class="pg-card" data-column="{index}" style="--pg-accent:{plots.column_colour(index)}">'
            f'<div class="pg-head"><span class="pg-label">{html.escape(label)}</span>'
            f'<span class="pg-state">{state}</span></div>{settings}'
            f'<div class="pg-text"><span class="pg-prompt">{html.escape(prompt)}</span>{spans}</div>'
            f'<div class="pg-metrics">{facts_html}</div></div>')


LEGEND = ('<div class="pg-legend">token colour = entropy of the clean distribution: '
          f'<span style="background:{entropy_colour(0)}">0 nats</span>'
          f'<span style="background:{entropy_colour(ENTROPY_SCALE_NATS / 2)}">{ENTROPY_SCALE_NATS / 2:g}</span>'
          f'<span style="background:{entropy_colour(ENTROPY_SCALE_NATS)}">≥ {ENTROPY_SCALE_NATS:g}</span>'
          ' · hover a token for p, H, α, R and its top-5 alternatives</div>')
EMPTY_COLUMNS = f'{LEGEND}<div class="pg-columns pg-empty">Type a prompt and press Run.</div>'


def columns_html(run: Any) -> str:
    """All columns of a Run (the engine's objects), live or finished."""
    cards = [column_card(i, c.label, run.prompt, c.rows, c.finish_reason,
                         column_metrics(c.rows, c.text, run.elapsed_s, run.prompt),
                         settings_line(c.sampler_name, c.settings))
             for i, c in enumerate(run.columns)]
    return f'{LEGEND}<div class="pg-columns">{"".join(cards)}</div>'


def status_html(step: int, max_new_tokens: int, elapsed_s: float, tokens: int, state: str) -> str:
    """The step counter under the Run button (the browser test reads data-step/data-state)."""
    rate = f" · {tokens / elapsed_s:.1f} tok/s" if elapsed_s > 0 else ""
    return (f'<div id="pg-status" class="pg-status pg-{state}" data-step="{step}" data-state="{state}">'
            f'{state} · step {step} of ≤ {max_new_tokens} · {elapsed_s:.1f} s{rate}</div>')


def run_status(run: Any, state: str) -> str:
    """The step counter for a Run (the engine's object): its step, budget, time and tokens so far."""
    tokens = sum(len(c.tokens) for c in run.columns)
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


def metrics_table(run: dict[str, Any]) -> pd.DataFrame:
    """One row per column: the run-level metrics (ALGORITHMS.md section 7)."""
    return pd.DataFrame([{"column": c["label"], "sampler": c["sampler"], "finish": c["finish_reason"],
                          **c["metrics"]} for c in run["columns"]])


def export_files(run: dict[str, Any]) -> tuple[str, str]:
    """The run as JSON (the CLI's schema) and its telemetry as CSV, in a fresh temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="playground-run-"))
    json_path, csv_path = folder / "run.json", folder / "telemetry.csv"
    json_path.write_text(json.dumps(run, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    rows_to_frame(run["columns"]).to_csv(csv_path, index=False)
    return str(json_path), str(csv_path)


# ---- share links ---------------------------------------------------------------------------------
def share_query(prompt: str, model: str, chat: bool, samplers: list[str], max_new_tokens: Any, seed: Any,
                fields: list[SettingField], values: list[Any]) -> str:
    """The query string that restores these settings (settings of the chosen samplers only)."""
    params: dict[str, Any] = {"prompt": prompt, "samplers": ",".join(samplers or []),
                              "seed": seed, "max_new_tokens": max_new_tokens, "chat": int(bool(chat))}
    if model and model != DEFAULT_MODEL:
        params["model"] = model
    for f, value in zip(fields, values):
        if f.sampler in (samplers or []) and value is not None and value != "":
            params[f.key] = value
    return urlencode(params)


def _page_url(request: gr.Request | None) -> str:
    """The page's address without its query: from the Referer (the page), else the Host header."""
    headers = dict(getattr(request, "headers", None) or {})
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost:7860"
    scheme = headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}/"


def read_query(query: dict[str, str], fields: list[SettingField]) -> tuple[dict[str, Any], list[str]]:
    """Page values from a share link's query: {name: value}, plus a warning per bad parameter."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    if "prompt" in query:
        out["prompt"] = query["prompt"]
    if "model" in query:
        out["model"] = query["model"]
    if "chat" in query:
        out["chat"] = query["chat"].strip().lower() in ("1", "true", "yes", "on")
    if "samplers" in query:
        names = [s.strip() for s in query["samplers"].split(",") if s.strip()]
        bad = [s for s in names if s not in SAMPLERS]
        if bad:
            problems.append(f"unknown sampler(s) in the link: {', '.join(bad)}")
        out["samplers"] = [s for s in names if s in SAMPLERS]
    for key, limit in (("seed", None), ("max_new_tokens", MAX_NEW_TOKENS)):
        if key in query:
            try:
                value = _integer(query[key], key)
                if value < (1 if limit else 0) or (limit and value > limit):
                    raise PlaygroundError(f"{key} out of range: {value}")
                out[key] = value
            except PlaygroundError as exc:
                problems.append(str(exc))
    for f in fields:
        if f.key in query:
            raw = query[f.key]
            try:
                if f.kind is bool:
                    out[f.key] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif f.kind is int:
                    out[f.key] = _integer(raw, f.key)
                elif f.kind is float:
                    out[f.key] = float(raw)
                else:
                    out[f.key] = raw
            except (PlaygroundError, ValueError):
                problems.append(f"{f.key} must be {f.kind.__name__}, got {raw!r}")
    return out, problems


def prompt_count_html(prompt: str, model: str, chat: bool) -> str:
    """The prompt's token count against this deployment's cap (or what is wrong with the text)."""
    lm = loaded_model(model)
    try:
        text = check_prompt_text(prompt) if prompt and prompt.strip() else ""
        if lm is None:
            return f'<div class="pg-count" data-tokens="">{len(text):,} characters (tokens once the model loads)</div>'
        n, cap = (len(lm.encode(text, chat=bool(chat))) if text else 0), max_prompt_tokens(lm)
    except PlaygroundError as exc:
        return f'<div class="pg-count pg-over" data-tokens="">{html.escape(str(exc))}</div>'
    over = " pg-over" if n > cap else ""
    note = f": over this playground's cap of {cap:,}, shorten it" if n > cap else f" of at most {cap:,}"
    return f'<div class="pg-count{over}" data-tokens="{n}">prompt: {n:,} tokens{note}</div>'


# ---- the backend calls -----------------------------------------------------------------------
def _options_and_model(seed, max_new_tokens, chat, model):
    options = RunOptions(seed=_integer(seed, "seed"), max_new_tokens=_integer(max_new_tokens, "max_new_tokens"),
                         chat=bool(chat))
    return options, load_model(check_model(model))


def _prepare(prompt, model, chat, samplers, max_new_tokens, seed, fields, values):
    specs = column_specs(samplers, fields, values)
    options, lm = _options_and_model(seed, max_new_tokens, chat, model)
    return lm, specs, options


@gpu
def compare(prompt: str, samplers: str = "", seed: int = 0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
            chat: bool = False, settings: str = "", model: str = DEFAULT_MODEL) -> dict:
    """Run the samplers side by side and return the CLI's JSON (`python -m playground compare --json`).

    Args:
        prompt: text to continue.
        samplers: comma-separated sampler names; empty: all available.
        seed: the one seed of every column.
        max_new_tokens: 1..1024.
        chat: wrap the prompt in the model's chat template.
        settings: JSON {"sampler": {"setting": value}}, e.g. {"temperature": {"top_k": 0}}.
        model: "default", or an id this deployment allows.
    """
    try:
        names = [s.strip() for s in samplers.split(",") if s.strip()] if samplers else list(SAMPLERS)
        try:
            overrides = json.loads(settings) if settings and settings.strip() else {}
        except json.JSONDecodeError as exc:
            raise PlaygroundError(f"settings must be JSON like {{\"temperature\": {{\"top_k\": 0}}}}: {exc}") from None
        if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
            raise PlaygroundError('settings must map sampler names to objects, e.g. {"temperature": {"top_k": 0}}')
        for name in overrides:
            if name not in names:
                raise PlaygroundError(f"settings for {name!r}, which is not in this run ({', '.join(names)})")
        specs = [ColumnSpec(n, overrides.get(n, {})) for n in names]
        options, lm = _options_and_model(seed, max_new_tokens, chat, model)
        return Engine(lm).run(prompt, specs, options).to_json()
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None


def build_app() -> gr.Blocks:
    """The whole page; launch() adds the queue, theme and CSS."""
    fields = setting_fields()
    allowed = allowed_models()
    names = list(SAMPLERS)

    with gr.Blocks(title="Sampler playground") as demo:
        gr.Markdown("# Sampler playground\nOne prompt, several samplers, decoded side by side in one batched "
                    "run with common random numbers: the columns differ by their sampler, not by their dice.",
                    elem_id="pg-header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=3, value=BENCHMARK_PROMPTS[0], elem_id="pg-prompt",
                                    placeholder="Text for the model to continue")
                prompt_count = gr.HTML(prompt_count_html(BENCHMARK_PROMPTS[0], DEFAULT_MODEL, False),
                                       elem_id="pg-prompt-count")
                gr.Examples(examples=[[p] for p in EXAMPLE_PROMPTS], inputs=[prompt],
                            label="Examples (the five benchmark prompts, and one for the chat template)")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="pg-run", scale=2)
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="pg-stop", scale=1)
                status = gr.HTML(LOADING_STATUS, elem_id="pg-status-box")  # idle once the load event applied
            with gr.Column(scale=2):
                samplers = gr.CheckboxGroup(choices=names, value=names, label="Samplers (one column each)",
                                            elem_id="pg-samplers")
                max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                       label="Max new tokens", elem_id="pg-max-tokens")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (all columns)",
                                     elem_id="pg-seed", scale=2)
                    dice = gr.Button("Random seed", elem_id="pg-dice", scale=1, min_width=90)
                with gr.Row():
                    model = gr.Dropdown(choices=[DEFAULT_MODEL, *(allowed or [])], value=DEFAULT_MODEL,
                                        allow_custom_value=allowed is None, label="Model", elem_id="pg-model",
                                        info="the bundled SmolLM2-135M-Instruct"
                                        + ("; any hub id allowed" if allowed is None else ""), scale=3)
                    chat = gr.Checkbox(value=False, label="Chat template", elem_id="pg-chat", scale=1)
                setting_inputs, accordions = [], []
                for name in names:
                    own = [f for f in fields if f.sampler == name]
                    if not own:
                        continue
                    # built open, so that its controls mount with the page; the load event closes it.
                    # Gradio mounts a closed accordion's children on first open and then writes their
                    # initial values back a frame later, over anything typed meanwhile (issue 16).
                    with gr.Accordion(f"{name} settings", open=True, elem_id=f"pg-acc-{name}") as accordion:
                        accordions.append(accordion)
                        for f in own:
                            setting_inputs.append(_setting_input(f))
        columns = gr.HTML(EMPTY_COLUMNS, elem_id="pg-columns")
        table = gr.DataFrame(label="Metrics across columns", elem_id="pg-metrics", wrap=True)
        gr.Markdown("### Per-token signals\nClean entropy, the samplers' α and Kuramoto R on one token axis; "
                    "hover a point for its token.")
        signals = gr.Plot(show_label=False, elem_id="pg-signals")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                heat_column = gr.Dropdown(choices=[], label="Heatmap: Kuramoto R, layers × tokens, of column",
                                          elem_id="pg-heat-column", interactive=True)
                heatmap = gr.Plot(show_label=False, elem_id="pg-heatmap")
            with gr.Column(scale=2):
                gr.Markdown("### Export and share")
                with gr.Row():
                    json_btn = gr.DownloadButton("Download run (JSON)", value=None, interactive=False,
                                                 elem_id="pg-json")
                    csv_btn = gr.DownloadButton("Download telemetry (CSV)", value=None, interactive=False,
                                                elem_id="pg-csv")
                share_btn = gr.Button("Share link for these settings", elem_id="pg-share-btn")
                share = gr.Textbox(label="Share link", buttons=["copy"], interactive=False, max_lines=4,
                                   elem_id="pg-share")
        last_run = gr.State(None)

        settings_inputs = [prompt, model, chat, samplers, max_tokens, seed, *setting_inputs]

        def link(request: gr.Request, *values):
            return _page_url(request) + "?" + share_query(*values[:6], fields, list(values[6:]))

        @gpu
        def stream(request: gr.Request, prompt_v, model_v, chat_v, samplers_v, max_v, seed_v, *values):
            """Stream a run; a failure is said once (the toast and the status line), the last run's outputs stay."""
            keep = [gr.skip()] * 8
            try:
                lm, specs, options = _prepare(prompt_v, model_v, chat_v, samplers_v, max_v, seed_v, fields, values)
            except PlaygroundError as exc:
                yield gr.skip(), error_status(str(exc)), *keep
                raise gr.Error(str(exc)) from None
            session = _session(request)
            stop = _new_stop(session)
            decoding = None
            try:
                decoding = BackgroundRun(Engine(lm).stream(prompt_v, specs, options, stop))
                while True:  # the page shows the newest state; the decoding never waits for it
                    run = decoding.run
                    yield columns_html(run), run_status(run, "running"), *keep
                    if decoding.wait(UPDATE_INTERVAL_S):
                        break
                run = decoding.result()
            except Exception as exc:  # noqa: BLE001  (bad input, or a run that failed halfway: say which)
                message = str(exc) if isinstance(exc, PlaygroundError) else run_failure(decoding, exc)
                yield (columns_html(decoding.run) if decoding else gr.skip()), error_status(message), *keep
                raise gr.Error(message) from None
            finally:
                if decoding is not None and not decoding.wait(0):
                    stop.set()  # the page went away mid-run: end the decoding loop too
                    decoding.wait(None)
                _drop_stop(session, stop)
            result = run.to_json()
            json_path, csv_path = export_files(result)
            labels = [c["label"] for c in result["columns"]]
            yield (columns_html(run),
                   run_status(run, "stopped" if run.stopped else "done"),
                   plots.signals_figure(result),
                   gr.Dropdown(choices=labels, value=labels[0]),
                   plots.order_heatmap(result, 0),
                   metrics_table(result),
                   gr.DownloadButton(value=json_path, interactive=True),
                   gr.DownloadButton(value=csv_path, interactive=True),
                   link(request, prompt_v, model_v, chat_v, samplers_v, max_v, seed_v, *values), result)

        def load_query(request: gr.Request):
            query = dict(getattr(request, "query_params", None) or {})
            found, problems = read_query(query, fields)
            for problem in problems:
                gr.Warning(problem)
            keys = ["prompt", "model", "chat", "samplers", "max_new_tokens", "seed", *[f.key for f in fields]]
            if "model" in found:
                try:
                    check_model(found["model"])
                except PlaygroundError as exc:
                    gr.Warning(str(exc))
                    del found["model"]
            updates = [gr.update(value=found[k]) if k in found else gr.skip() for k in keys]
            if "model" in found and found["model"] != DEFAULT_MODEL:
                updates[1] = gr.update(value=found["model"], choices=[DEFAULT_MODEL, *(allowed or []),
                                                                       *([found["model"]] if allowed is None else [])])
            return updates + [gr.Accordion(open=False)] * len(accordions) + [IDLE_STATUS]

        def show_heatmap(label, run):
            if not run:
                return gr.skip()
            labels = [c["label"] for c in run["columns"]]
            return plots.order_heatmap(run, labels.index(label) if label in labels else 0)

        outputs = [columns, status, signals, heat_column, heatmap, table, json_btn, csv_btn, share, last_run]
        run_btn.click(stream, inputs=settings_inputs, outputs=outputs, api_name="run",
                      concurrency_id="decode", concurrency_limit=CONCURRENCY,
                      show_progress="hidden")  # the status line says it all; no badge on every output
        stop_btn.click(request_stop, inputs=None, outputs=None, api_name="stop", queue=False)
        dice.click(lambda: random.randrange(2**31), inputs=None, outputs=seed, api_name="roll_seed", queue=False)
        share_btn.click(link, inputs=settings_inputs, outputs=share, api_name="share_link", queue=False)
        gr.on([prompt.change, model.change, chat.change], prompt_count_html, inputs=[prompt, model, chat],
              outputs=prompt_count, api_name="count_tokens", queue=False, trigger_mode="always_last",
              show_progress="hidden")  # the tokenizer only: cheap enough to follow the typing
        heat_column.input(show_heatmap, inputs=[heat_column, last_run], outputs=heatmap, api_name="heatmap")
        demo.load(load_query, inputs=None, outputs=settings_inputs + accordions + [status], api_name="load_settings",
                  queue=False)
        gr.api(compare, api_name="compare", concurrency_id="decode", concurrency_limit=CONCURRENCY)
    return demo


def _setting_input(f: SettingField) -> gr.components.Component:
    """A page control for one sampler setting, by the setting's type."""
    common = {"label": f.name, "info": f.help, "elem_id": f"pg-set-{f.sampler}-{f.name}"}
    if f.kind is bool:
        return gr.Checkbox(value=f.default, **common)
    if f.kind is int:
        return gr.Number(value=f.default, precision=0, **common)
    if f.kind is float:
        return gr.Number(value=f.default, step=0.01, **common)
    return gr.Textbox(value=None if f.default is None else str(f.default), **common)


def launch(**kwargs: Any) -> gr.Blocks:
    """Build, queue and serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address."""
    try:  # warm: the first Run should pay neither for loading nor for a sampler's one-off calibration
        Engine(load_model(DEFAULT_MODEL)).run("Hello", list(SAMPLERS), RunOptions(max_new_tokens=1))
    except PlaygroundError as exc:
        print(f"warning: {exc}")
    demo = build_app()
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[ASSETS / "playground.css"], **kwargs)
    return demo
