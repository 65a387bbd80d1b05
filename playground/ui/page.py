"""The page: Blocks layout and events. Every event has an explicit api_name; each only calls the backend.

    column list -> ColumnSpecs + RunOptions -> Engine.stream (ONE batched run, all columns)
                -> every step: coloured token columns + a step counter (throttled)
                -> at the end: plots, metrics table, JSON/CSV downloads, share link
    a click on a token -> its alternatives -> a click on one -> a branch run (same columns, seed)
                -> streamed like any run; Back shows the parent run again, as it was
"""
from __future__ import annotations

import html
import json
import os
import random
from pathlib import Path
from typing import Any

import gradio as gr

from .. import plots
from ..columns import MAX_COLUMNS
from ..engine import MAX_NEW_TOKENS, Engine, Parent, RunOptions, branch_point, describe_branch
from ..models import DEFAULT_MODEL, load_model
from ..prompts import BENCHMARK_PROMPTS
from ..samplers import SAMPLERS, PlaygroundError
from .backend import (DEFAULT_MAX_NEW_TOKENS, _prepare, allowed_models, check_model, compare, gpu, gpu_seconds,
                      on_zero_gpu, prompt_count_html)
from .columns import (HEADERS, add_choices, add_column, default_specs, duplicate_column, reference_markdown,
                      remove_column, setting_fields, sweep_column, table_rows, table_specs)
from .links import _page_url, read_query, share_query
from .render import (EMPTY_COLUMNS, IDLE_STATUS, LOADING_STATUS, columns_html, error_status, export_files,
                     metrics_table, run_failure, run_status)
from .scripts import BRIDGE_JS, TOKEN_MENU_JS
from .sessions import BackgroundRun, _drop_stop, _new_stop, _session, request_stop


ASSETS = Path(__file__).resolve().parents[2] / "assets"
UPDATE_INTERVAL_S = 0.25  # streamed page updates at most this often (keeps the UI cost small)
CONCURRENCY = int(os.environ.get("PLAYGROUND_CONCURRENCY", "2"))  # decoding events at once
QUEUE_SIZE = int(os.environ.get("PLAYGROUND_QUEUE_SIZE", "32"))
EXAMPLE_PROMPTS = (*BENCHMARK_PROMPTS, "Write a haiku about the sea.")
MAX_HISTORY = 16  # parent views Back can return to (each holds a run's JSON in the session)


def build_app() -> gr.Blocks:
    """The whole page; launch() adds the queue, theme and CSS."""
    allowed = allowed_models()
    first_specs = default_specs()

    with gr.Blocks(title="Sampler playground") as demo:
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
                with gr.Row():
                    model = gr.Dropdown(choices=[DEFAULT_MODEL, *(allowed or [])], value=DEFAULT_MODEL,
                                        allow_custom_value=allowed is None, label="Model", elem_id="pg-model",
                                        info="the bundled SmolLM2-135M-Instruct"
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
            back_btn = gr.Button("← Back to the parent run", visible=False, elem_id="pg-back", scale=0, min_width=200)
        columns = gr.HTML(EMPTY_COLUMNS, elem_id="pg-columns", js_on_load=TOKEN_MENU_JS)
        branch_bridge = gr.HTML("", visible="hidden", elem_id="pg-branch-bridge", js_on_load=BRIDGE_JS)
        table_out = gr.DataFrame(label="Metrics across columns (3 significant digits)", elem_id="pg-metrics",
                                 wrap=True)
        gr.Markdown("### Per-token signals\nClean entropy, Phase-Slip's fusion α, the adaptive α, Kuramoto R and "
                    "how many tokens each sampler kept, on one token axis; hover a point for its token.")
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
        last_run = gr.State(None)  # the shown run's JSON
        branch_state = gr.State(None)  # the shown branch: {"point": Parent JSON, "trail": [descriptions], "prompt"}
        history = gr.State([])  # the views Back returns to, newest last

        run_inputs = [prompt, model, chat, table, max_tokens, seed, branch_state]
        outputs = [columns, status, signals, heat_column, heatmap, table_out, json_btn, csv_btn, share, last_run]

        def link(request: gr.Request, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v):
            try:
                specs = table_specs(table_v)
            except PlaygroundError as exc:
                raise gr.Error(str(exc)) from None
            point = branch_v["point"] if branch_v else None
            return _page_url(request) + "?" + share_query(prompt_v, model_v, chat_v, specs, max_v, seed_v, point)

        def decode(request, lm, prompt_v, specs, options, parent, link_values):
            """Stream one run into the page; a failure is said once (toast and status), the last run stays."""
            keep = [gr.skip()] * 8
            session = _session(request)
            stop = _new_stop(session)
            decoding = None
            try:
                decoding = BackgroundRun(Engine(lm).stream(prompt_v, specs, options, stop, parent))
                while True:  # the page shows the newest state; the decoding never waits for it
                    run = decoding.run
                    yield columns_html(run, detail=False), run_status(run, "running"), *keep
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
            yield (columns_html(run), run_status(run, "stopped" if run.stopped else "done"),
                   *finished_outputs(result), link(request, *link_values), result)

        def refuse(message: str, extra: int = 0):
            yield gr.skip(), error_status(message), *[gr.skip()] * (8 + extra)
            raise gr.Error(message)

        @gpu(lambda a: gpu_seconds(a["max_v"], _column_count(a["table_v"])))
        def stream(request: gr.Request, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v):
            """Run the column list on the prompt (from the branch point, when one is shown)."""
            try:
                lm, specs, options = _prepare(prompt_v, model_v, chat_v, table_v, max_v, seed_v)
                parent = Parent(prompt=prompt_v, **branch_v["point"]) if branch_v else None
            except PlaygroundError as exc:
                yield from refuse(str(exc))
                return
            yield from decode(request, lm, prompt_v, specs, options, parent,
                              (prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v))

        @gpu(lambda a: gpu_seconds(*_run_size(a["run_v"])))
        def start_branch(request: gr.Request, payload, run_v, model_v, chat_v, table_v, shown_html, link_v,
                         branch_v, history_v):
            """A click on an alternative: run the shown run's columns again from that token (a branch)."""
            extra = [gr.skip()] * 4
            try:
                point = json.loads(payload or "{}")
                if not run_v:
                    raise PlaygroundError("run something first: a branch starts from a token of the shown run")
                lm = load_model(check_model(model_v))
                if lm.name != run_v["model"]:
                    raise PlaygroundError("the model changed since this run: run again, then branch")
                specs, options, parent = branch_point(lm, run_v, point.get("column"), point.get("step"),
                                                      point.get("token"))
            except (PlaygroundError, json.JSONDecodeError, AttributeError) as exc:
                yield from refuse(str(exc), 4)
                return
            trail = [*(branch_v["trail"] if branch_v else []), parent.describe()]
            new_branch = {"point": {k: v for k, v in parent.to_json().items() if k != "prompt"}, "trail": trail,
                          "prompt": parent.prompt}
            saved = {"html": shown_html, "run": run_v, "link": link_v, "branch": branch_v}
            crumbs = (breadcrumb_html(trail), gr.Button(visible=True), new_branch, [*history_v, saved][-MAX_HISTORY:])
            link_values = (parent.prompt, model_v, chat_v, table_rows(specs), options.max_new_tokens,
                           options.seed, new_branch)
            first = True
            for update in decode(request, lm, parent.prompt, specs, options, parent, link_values):
                yield *update, *(crumbs if first else extra)
                first = False

        def go_back(history_v):
            """Show the parent run again, as it was (nothing is recomputed)."""
            if not history_v:
                return [gr.skip()] * 14
            saved, rest = history_v[-1], history_v[:-1]
            trail = saved["branch"]["trail"] if saved["branch"] else []
            run_v = saved["run"]
            shown = finished_outputs(run_v) if run_v else [gr.skip()] * 6
            return (saved["html"], IDLE_STATUS, *shown, saved["link"], run_v, breadcrumb_html(trail),
                    gr.Button(visible=bool(rest) or bool(trail)), saved["branch"], rest)

        def leave_branch(prompt_v, branch_v):
            """A new prompt (typed, or an example) leaves the branch; a link's own prompt keeps it."""
            if not branch_v or branch_v.get("prompt") == prompt_v:
                return [gr.skip()] * 4
            return "", gr.Button(visible=False), None, []

        def table_edit(fn):
            def edit(*args):
                try:
                    return fn(*args)
                except PlaygroundError as exc:
                    raise gr.Error(str(exc)) from None
            return edit

        def load_query(request: gr.Request):
            query = dict(getattr(request, "query_params", None) or {})
            found, problems = read_query(query, setting_fields())
            for problem in problems:
                gr.Warning(problem)
            if "model" in found:
                try:
                    check_model(found["model"])
                except PlaygroundError as exc:
                    gr.Warning(str(exc))
                    del found["model"]
            if "columns" in found:
                found["columns"] = table_rows(found["columns"]) if found["columns"] else gr.skip()
            keys = ["prompt", "model", "chat", "columns", "max_new_tokens", "seed"]
            updates = [gr.update(value=found[k]) if k in found and found[k] is not gr.skip() else gr.skip()
                       for k in keys]
            if "model" in found and found["model"] != DEFAULT_MODEL:
                updates[1] = gr.update(value=found["model"], choices=[DEFAULT_MODEL, *(allowed or []),
                                                                       *([found["model"]] if allowed is None else [])])
            point = found.get("branch")
            branch_v = {"point": point, "trail": [describe_branch(point)], "prompt": found.get("prompt")} if point else None
            crumb = breadcrumb_html(branch_v["trail"], linked=True) if branch_v else ""
            return [*updates, branch_v, crumb, gr.Button(visible=bool(branch_v)), IDLE_STATUS]

        def show_heatmap(label, run):
            if not run:
                return gr.skip()
            labels = [c["label"] for c in run["columns"]]
            return plots.order_heatmap(run, labels.index(label) if label in labels else 0)

        branch_outputs = [breadcrumb, back_btn, branch_state, history]
        run_btn.click(stream, inputs=run_inputs, outputs=outputs, api_name="run",
                      concurrency_id="decode", concurrency_limit=CONCURRENCY,
                      show_progress="hidden")  # the status line says it all; no badge on every output
        branch_bridge.submit(start_branch, inputs=[branch_bridge, last_run, model, chat, table, columns, share,
                                                   branch_state, history],
                             outputs=outputs + branch_outputs, api_name="branch", concurrency_id="decode",
                             concurrency_limit=CONCURRENCY, show_progress="hidden")
        back_btn.click(go_back, inputs=[history], outputs=outputs + branch_outputs, api_name="back", queue=False)
        prompt.change(leave_branch, inputs=[prompt, branch_state], outputs=branch_outputs, api_name="leave_branch",
                      queue=False)
        stop_btn.click(request_stop, inputs=None, outputs=None, api_name="stop", queue=False)
        dice.click(lambda: random.randrange(2**31), inputs=None, outputs=seed, api_name="roll_seed", queue=False)
        share_btn.click(link, inputs=run_inputs, outputs=share, api_name="share_link", queue=False)
        add_btn.click(table_edit(add_column), inputs=[table, add_choice], outputs=table, api_name="add_column",
                      queue=False)
        dup_btn.click(table_edit(duplicate_column), inputs=[table, number], outputs=table,
                      api_name="duplicate_column", queue=False)
        remove_btn.click(table_edit(remove_column), inputs=[table, number], outputs=table, api_name="remove_column",
                         queue=False)
        sweep_btn.click(table_edit(sweep_column), inputs=[table, number, sweep_text], outputs=table,
                        api_name="sweep_column", queue=False)
        gr.on([prompt.change, model.change, chat.change], prompt_count_html, inputs=[prompt, model, chat],
              outputs=prompt_count, api_name="count_tokens", queue=False, trigger_mode="always_last",
              show_progress="hidden")  # the tokenizer only: cheap enough to follow the typing
        heat_column.input(show_heatmap, inputs=[heat_column, last_run], outputs=heatmap, api_name="heatmap")
        demo.load(load_query, inputs=None,
                  outputs=[prompt, model, chat, table, max_tokens, seed, branch_state, breadcrumb, back_btn, status],
                  api_name="load_settings", queue=False)
        gr.api(compare, api_name="compare", concurrency_id="decode", concurrency_limit=CONCURRENCY)
    return demo


def _column_count(table: Any) -> int:
    """How many columns the page's column list asks for (the most allowed, if it cannot tell)."""
    try:
        return len(table_specs(table))
    except (PlaygroundError, TypeError, ValueError, KeyError):
        return MAX_COLUMNS


def _run_size(run: dict[str, Any] | None) -> tuple[Any, int]:
    """A shown run's max_new_tokens and column count: what a branch of it decodes."""
    run = run or {}
    return run.get("max_new_tokens"), len(run.get("columns") or []) or MAX_COLUMNS


def finished_outputs(result: dict[str, Any]) -> list[Any]:
    """The plots, heatmap choice, metrics table and downloads of a finished run's JSON."""
    json_path, csv_path = export_files(result)
    labels = [c["label"] for c in result["columns"]]
    return [plots.signals_figure(result), gr.Dropdown(choices=labels, value=labels[0]),
            plots.order_heatmap(result, 0), metrics_table(result),
            gr.DownloadButton(value=json_path, interactive=True), gr.DownloadButton(value=csv_path, interactive=True)]


def breadcrumb_html(trail: list[str], linked: bool = False) -> str:
    """Where the shown run branched from, one step per branch: ``prompt › column 2, token 7: ' door' → ' gate'``."""
    if not trail:
        return ""
    steps = "".join(f'<span class="pg-crumb-step"> › {html.escape(t)}</span>' for t in trail)
    note = " (from a link: Run decodes it)" if linked else ""
    return f'<div id="pg-crumb" class="pg-crumb" data-depth="{len(trail)}">branch: prompt{steps}{note}</div>'


def launch(**kwargs: Any) -> gr.Blocks:
    """Build, queue and serve the app; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT pick the address."""
    try:  # warm: the first Run should pay neither for loading nor for a sampler's one-off calibration
        if not on_zero_gpu():  # (there, CUDA exists only inside a decorated call)
            Engine(load_model(DEFAULT_MODEL)).run("Hello", list(SAMPLERS), RunOptions(max_new_tokens=1))
    except PlaygroundError as exc:
        print(f"warning: {exc}")
    demo = build_app()
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    demo.launch(theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[ASSETS / "playground.css"], **kwargs)
    return demo
