"""The page: its layout (``lay_out``, the components by name) and its events (``build_app``), each with
an explicit api_name; the handlers are in handlers.py.

    column list -> ColumnSpecs + RunOptions -> Engine.stream (ONE batched run, all columns)
                -> every step: coloured token columns + a step counter (throttled)
                -> at the end: where the columns part, plots, metrics table, downloads, share link
    a click on a token -> "why this token" (its chain trace) and its alternatives -> a click on one
                -> a branch run (same columns, seed)
                -> streamed like any run; Back shows the parent run again, as it was
    Stop        -> ends the session's run, running or still waiting in the queue (sessions.py)
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import gradio as gr

from ..columns import MAX_COLUMNS
from ..engine import MAX_NEW_TOKENS, Engine, RunOptions
from ..models import DEFAULT_MODEL, load_model
from ..prompts import BENCHMARK_PROMPTS
from ..samplers import SAMPLERS, PlaygroundError
from ..samples import MAX_SAMPLES
from . import handlers
from .backend import (DEFAULT_MAX_NEW_TOKENS, SHIPPED_MODELS, allowed_models, compare, on_zero_gpu,
                      order_parameter_note, prompt_count_html)
from .columns import HEADERS, add_choices, default_specs, reference_markdown, table_rows
from .render import EMPTY_COLUMNS, LOADING_STATUS
from .scripts import BRIDGE_JS, PARTS_JS, TOKEN_MENU_JS, WHY_BRIDGE_JS, WHY_PANEL_JS
from .sessions import join_queue, request_stop
from .views import BranchView, RunView, SettingsView, TrailView, outputs, shows

ASSETS = Path(__file__).resolve().parents[2] / "assets"
EXAMPLE_PROMPTS = (*BENCHMARK_PROMPTS, "Write a haiku about the sea.")


DEFAULT_CONCURRENCY = 8  # sessions decoding at once: their runs share the model's loop (shared_loop.py)
ZERO_GPU_CONCURRENCY = 2  # on ZeroGPU each decodes alone, in a process of its own


def concurrency() -> int:
    """Decoding events at once ($PLAYGROUND_CONCURRENCY); the rest wait in the queue."""
    default = ZERO_GPU_CONCURRENCY if on_zero_gpu() else DEFAULT_CONCURRENCY
    return int(os.environ.get("PLAYGROUND_CONCURRENCY", str(default)))


def queue_size() -> int:
    return int(os.environ.get("PLAYGROUND_QUEUE_SIZE", "32"))


@dataclasses.dataclass
class Page:
    """Every component an event reads or writes, named as the views' fields name them."""

    prompt: gr.Textbox
    prompt_count: gr.HTML
    run_btn: gr.Button
    stop_btn: gr.Button
    status: gr.HTML
    max_tokens: gr.Slider
    seed: gr.Number
    samples: gr.Number
    dice: gr.Button
    model: gr.Dropdown
    order_note: gr.Markdown
    chat: gr.Checkbox
    table: gr.Dataframe
    add_choice: gr.Dropdown
    add_btn: gr.Button
    number: gr.Number
    dup_btn: gr.Button
    remove_btn: gr.Button
    sweep_text: gr.Textbox
    sweep_btn: gr.Button
    breadcrumb: gr.HTML
    back: gr.Button
    columns: gr.HTML
    branch_bridge: gr.HTML
    metrics: gr.DataFrame
    signals: gr.Plot
    heat_column: gr.Dropdown
    heatmap: gr.Plot
    json_file: gr.DownloadButton
    csv_file: gr.DownloadButton
    share_btn: gr.Button
    share: gr.Textbox
    why_bridge: gr.HTML
    why: gr.HTML
    parts: gr.HTML
    samples_plot: gr.Plot
    first_token: gr.Plot
    last_run: gr.State  # the shown run's JSON
    traces: gr.State  # the shown run's chain traces (traces.RunTraces)
    branch_state: gr.State  # the shown branch: {"point": Parent JSON, "trail": [descriptions], "prompt"}
    history: gr.State  # the views Back returns to, newest last

    @property
    def run_inputs(self) -> list[Any]:
        return [self.prompt, self.model, self.chat, self.table, self.max_tokens, self.seed, self.branch_state,
                self.samples]


def build_app() -> gr.Blocks:
    """The whole page; launch() adds the queue, theme and CSS."""
    with gr.Blocks(title="Sampler playground") as demo:
        page = lay_out()
        decoding = {"concurrency_id": "decode", "concurrency_limit": concurrency(), "validator": join_queue,
                    "show_progress": "hidden"}  # the status line says it all; no badge on every output
        quiet = {"queue": False, "show_progress": "hidden"}  # instant, and no progress over the outputs
        # a refusal is one toast and its outputs keep what they show: Gradio shows the error of a queued
        # event with hidden progress as a toast alone (an unqueued one shows none, a shown progress an "Error" box)
        refusable = {"show_progress": "hidden"}
        page.run_btn.click(shows(handlers.stream), page.run_inputs, outputs(page, RunView), api_name="run", **decoding)
        page.branch_bridge.submit(
            shows(handlers.start_branch), [page.branch_bridge, page.last_run, page.model, page.chat, page.table,
                                           page.columns, page.share, page.branch_state, page.history,
                                           page.traces],
            outputs(page, BranchView), api_name="branch", **decoding)
        page.why_bridge.submit(handlers.why_token, [page.why_bridge, page.traces, page.last_run], page.why,
                               api_name="why", **quiet)  # read from the session: no decoding, no queue
        page.stop_btn.click(request_stop, None, None, api_name="stop", queue=False)
        page.back.click(shows(handlers.go_back), [page.history], outputs(page, BranchView), api_name="back", **quiet)
        page.prompt.change(shows(handlers.leave_branch), [page.prompt, page.branch_state], outputs(page, TrailView),
                           api_name="leave_branch", **quiet)
        page.dice.click(handlers.roll_seed, None, page.seed, api_name="roll_seed", **quiet)
        page.share_btn.click(handlers.share_link, page.run_inputs, page.share, api_name="share_link", **refusable)
        page.add_btn.click(handlers.add_column, [page.table, page.add_choice], page.table, api_name="add_column",
                           **refusable)
        page.dup_btn.click(handlers.duplicate_column, [page.table, page.number], page.table,
                           api_name="duplicate_column", **refusable)
        page.remove_btn.click(handlers.remove_column, [page.table, page.number], page.table,
                              api_name="remove_column", **refusable)
        page.sweep_btn.click(handlers.sweep_column, [page.table, page.number, page.sweep_text], page.table,
                             api_name="sweep_column", **refusable)
        gr.on([page.prompt.change, page.model.change, page.chat.change], prompt_count_html,
              inputs=[page.prompt, page.model, page.chat], outputs=page.prompt_count, api_name="count_tokens",
              trigger_mode="always_last", **quiet)  # the tokenizer only: cheap enough to follow the typing
        page.model.change(order_parameter_note, page.model, page.order_note, api_name="order_parameter_note", **quiet)
        page.heat_column.input(handlers.show_heatmap, [page.heat_column, page.last_run], page.heatmap,
                               api_name="heatmap", show_progress="hidden")
        demo.load(shows(handlers.load_settings), None, outputs(page, SettingsView), api_name="load_settings",
                  **refusable)  # queued: its warnings about a bad link are toasts
        api = gr.api(compare, api_name="compare", concurrency_id="decode", concurrency_limit=concurrency())
        demo.fns[api["id"]].validator = join_queue  # gr.api takes no validator: a Stop must reach it while it waits
    return demo


def lay_out() -> Page:
    """The page's components, as a user sees them, top to bottom."""
    allowed = allowed_models()
    first_specs = default_specs()
    gr.Markdown("# Sampler playground\nOne prompt, several columns (a sampler and its settings each), decoded "
                "side by side in one batched run with common random numbers: the columns differ by their "
                "settings, not by their dice. Click a token to branch from one of its alternatives.",
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
            with gr.Row():
                max_tokens = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_MAX_NEW_TOKENS, step=1,
                                       label="Max new tokens", elem_id="pg-max-tokens", scale=3)
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (all columns)",
                                 elem_id="pg-seed", scale=2)
                dice = gr.Button("Random seed", elem_id="pg-dice", scale=1, min_width=90)
                samples = gr.Number(value=1, precision=0, minimum=1, maximum=MAX_SAMPLES, label="Samples per column",
                                    elem_id="pg-samples", scale=2,
                                    info="sample i seeded seed + i, paired across columns")
            with gr.Row():
                model = gr.Dropdown(choices=[*SHIPPED_MODELS, *(allowed or [])], value=DEFAULT_MODEL,
                                    allow_custom_value=allowed is None, label="Model", elem_id="pg-model",
                                    info="the bundled SmolLM2-135M-Instruct; phasegpt: the bundled character-level "
                                         "PhaseGPT (64 characters of context)"
                                    + ("; any hub id allowed" if allowed is None else ""), scale=3)
                chat = gr.Checkbox(value=False, label="Chat template", elem_id="pg-chat", scale=1)
        with gr.Column(scale=3):
            table = gr.Dataframe(
                value=table_rows(first_specs), headers=HEADERS, datatype="str", interactive=True,
                static_columns=[0], row_count=(len(first_specs), "fixed"), column_count=(len(HEADERS), "fixed"),
                column_widths=["7%", "22%", "46%", "25%"], wrap=True, elem_id="pg-column-list",
                label=f"Columns (up to {MAX_COLUMNS}): double-click a cell to edit; settings like "
                      "temperature=0.5, top_k=0 (empty: the sampler's defaults); label empty: what differs")
            with gr.Row():
                add_choice = gr.Dropdown(choices=add_choices(), value="preset:min-p-0.1", scale=4,
                                         label="A sampler or a preset", elem_id="pg-add-choice")
                add_btn = gr.Button("Add column", elem_id="pg-add", scale=1, min_width=90)
            with gr.Row():
                number = gr.Number(value=1, precision=0, minimum=1, maximum=MAX_COLUMNS, label="Column #",
                                   elem_id="pg-column-number", scale=1, min_width=80)
                dup_btn = gr.Button("Duplicate", elem_id="pg-duplicate", scale=1, min_width=80)
                remove_btn = gr.Button("Remove", elem_id="pg-remove", scale=1, min_width=80)
            with gr.Row():
                sweep_text = gr.Textbox(label="Sweep column #: one column per value",
                                        placeholder="temperature = 0.5, 0.8, 1.1", elem_id="pg-sweep-text",
                                        scale=4)
                sweep_btn = gr.Button("Sweep", elem_id="pg-sweep", scale=1, min_width=70)
            with gr.Accordion("Presets and every sampler's settings", open=False, elem_id="pg-reference"):
                gr.Markdown(reference_markdown())
    with gr.Row(elem_id="pg-branch-row"):
        breadcrumb = gr.HTML("", elem_id="pg-breadcrumb")
        back = gr.Button("← Back to the parent run", visible=False, elem_id="pg-back", scale=0, min_width=200)
    columns = gr.HTML(EMPTY_COLUMNS, elem_id="pg-columns", js_on_load=TOKEN_MENU_JS)
    branch_bridge = gr.HTML("", visible="hidden", elem_id="pg-branch-bridge", js_on_load=BRIDGE_JS)
    why_bridge = gr.HTML("", visible="hidden", elem_id="pg-why-bridge", js_on_load=WHY_BRIDGE_JS)
    why = gr.HTML("", elem_id="pg-why", js_on_load=WHY_PANEL_JS)
    parts = gr.HTML("", elem_id="pg-parts", js_on_load=PARTS_JS)
    metrics = gr.DataFrame(label="Metrics across columns (3 significant digits)", elem_id="pg-metrics", wrap=True)
    gr.Markdown("### Per-token signals\nClean entropy, Phase-Slip's fusion α, the adaptive α, Kuramoto R and "
                "how many tokens each sampler kept, on one token axis; hover a point for its token.")
    order_note = gr.Markdown(order_parameter_note(DEFAULT_MODEL), elem_id="pg-order-note")
    signals = gr.Plot(show_label=False, elem_id="pg-signals")
    with gr.Row(equal_height=False):
        samples_plot = gr.Plot(show_label=False, elem_id="pg-samples-plot", visible=False)
        first_token = gr.Plot(show_label=False, elem_id="pg-first-token", visible=False)
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            heat_column = gr.Dropdown(choices=[], label="Heatmap: Kuramoto R, layers × tokens, of column",
                                      elem_id="pg-heat-column", interactive=True)
            heatmap = gr.Plot(show_label=False, elem_id="pg-heatmap")
        with gr.Column(scale=2):
            gr.Markdown("### Export and share")
            with gr.Row():
                json_file = gr.DownloadButton("Download run (JSON)", value=None, interactive=False, elem_id="pg-json")
                csv_file = gr.DownloadButton("Download telemetry (CSV)", value=None, interactive=False,
                                             elem_id="pg-csv")
            share_btn = gr.Button("Share link for these settings", elem_id="pg-share-btn")
            share = gr.Textbox(label="Share link", buttons=["copy"], interactive=False, max_lines=4,
                               elem_id="pg-share")
    return Page(prompt=prompt, prompt_count=prompt_count, run_btn=run_btn, stop_btn=stop_btn, status=status,
                max_tokens=max_tokens, seed=seed, samples=samples, dice=dice, model=model, order_note=order_note,
                chat=chat, table=table,
                add_choice=add_choice, add_btn=add_btn, number=number, dup_btn=dup_btn, remove_btn=remove_btn,
                sweep_text=sweep_text, sweep_btn=sweep_btn, breadcrumb=breadcrumb, back=back, columns=columns,
                branch_bridge=branch_bridge, why_bridge=why_bridge, why=why, parts=parts, samples_plot=samples_plot,
                first_token=first_token, metrics=metrics,
                signals=signals, heat_column=heat_column,
                heatmap=heatmap, json_file=json_file, csv_file=csv_file, share_btn=share_btn, share=share,
                last_run=gr.State(None), traces=gr.State(None), branch_state=gr.State(None), history=gr.State([]))


def launch(**kwargs: Any) -> gr.Blocks:
    """Build, queue and serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address."""
    try:  # warm: the first Run should pay neither for loading nor for a sampler's one-off calibration
        if not on_zero_gpu():  # (there, CUDA exists only inside a decorated call)
            Engine(load_model(DEFAULT_MODEL)).run("Hello", list(SAMPLERS), RunOptions(max_new_tokens=1))
    except PlaygroundError as exc:
        print(f"warning: {exc}")
    demo = build_app()
    demo.queue(default_concurrency_limit=concurrency(), max_size=queue_size())
    kwargs.setdefault("run_history", False)  # Gradio's copy of every call in localStorage: MBs a run; share links do this
    demo.launch(theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[ASSETS / "playground.css"], **kwargs)
    return demo
