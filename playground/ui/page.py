"""The page: Blocks layout and events. Every event has an explicit api_name; each only calls the backend.

    inputs -> ColumnSpecs + RunOptions -> Engine.stream (ONE batched run, all columns)
           -> every step: coloured token columns + a step counter (throttled)
           -> at the end: plots, metrics table, JSON/CSV downloads, share link
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import gradio as gr

from .. import plots
from ..engine import MAX_NEW_TOKENS, Engine, RunOptions
from ..models import DEFAULT_MODEL, load_model
from ..prompts import BENCHMARK_PROMPTS
from ..samplers import SAMPLERS, PlaygroundError
from .backend import DEFAULT_MAX_NEW_TOKENS, _prepare, allowed_models, check_model, compare, gpu, prompt_count_html
from .links import _page_url, read_query, share_query
from .render import (EMPTY_COLUMNS, IDLE_STATUS, LOADING_STATUS, columns_html, error_status, export_files,
                     metrics_table, run_failure, run_status)
from .sessions import BackgroundRun, _drop_stop, _new_stop, _session, request_stop
from .settings import SettingField, setting_fields


ASSETS = Path(__file__).resolve().parents[2] / "assets"
UPDATE_INTERVAL_S = 0.25  # streamed page updates at most this often (keeps the UI cost small)
CONCURRENCY = int(os.environ.get("PLAYGROUND_CONCURRENCY", "2"))  # decoding events at once
QUEUE_SIZE = int(os.environ.get("PLAYGROUND_QUEUE_SIZE", "32"))
EXAMPLE_PROMPTS = (*BENCHMARK_PROMPTS, "Write a haiku about the sea.")


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
