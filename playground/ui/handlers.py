"""The page's event handlers, one function each; page.py wires them to the components.

Each returns (or yields) a view from views.py: its outputs by name, a field left out keeps what
the page showed. A refused action raises ``gr.Error`` once (a toast; for a run, the status line
says it too); its events show no progress on their outputs, so no output turns into an "Error" box.
"""
from __future__ import annotations

import functools
import html
import json
import random
from typing import Any, Callable, Iterator

import gradio as gr

from .. import plots
from ..columns import MAX_COLUMNS, ColumnSpec
from ..engine import Engine, Parent, RunOptions, branch_point, describe_branch
from ..models import DEFAULT_MODEL, LoadedModel, load_model
from ..samplers import PlaygroundError
from ..traces import RunTraces
from . import columns as column_list
from . import why
from .backend import allowed_models, check_model, gpu, gpu_seconds, prepare_run, shared_decoding
from .columns import setting_fields, table_rows, table_specs
from .links import page_url, read_query, share_query
from .render import (IDLE_STATUS, STOPPED_BEFORE_START_STATUS, columns_html, error_status, export_files, metrics_table,
                     run_failure, run_status)
from .sessions import BackgroundRun, RunStop, SessionRuns, StopFlag, session_of
from .views import BranchView, RunView, SettingsView, TrailView

UPDATE_INTERVAL_S = 0.25  # streamed page updates at most this often (keeps the UI cost small)
MAX_HISTORY = 16  # parent views Back can return to (each holds a run's JSON in the session)


# ---- runs ---------------------------------------------------------------------------------------


def share_url(request: gr.Request | None, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v,
              samples_v=1) -> str:
    """The page's address with these settings (and the shown branch point) as its query."""
    point = branch_v["point"] if branch_v else None
    return page_url(request) + "?" + share_query(prompt_v, model_v, chat_v, table_specs(table_v), max_v, seed_v,
                                                  point, samples_v or 1)


def finished_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The plots, heatmap choice, metrics table and downloads of a finished run's JSON, by output name."""
    json_path, csv_path = export_files(result)
    labels = [c["label"] for c in result["columns"]]
    return {"signals": plots.signals_figure(result), "heat_column": gr.Dropdown(choices=labels, value=labels[0]),
            "heatmap": plots.order_heatmap(result, 0), "metrics": metrics_table(result),
            "json_file": gr.DownloadButton(value=json_path, interactive=True),
            "csv_file": gr.DownloadButton(value=csv_path, interactive=True), "parts": why.parts_html(result),
            "why": "", **samples_fields(result)}


def samples_fields(result: dict[str, Any]) -> dict[str, Any]:
    """With more than one sample per column: the scatter of every sample and the first token's histogram."""
    many = result.get("samples", 1) > 1
    return {"samples_plot": gr.Plot(value=plots.samples_scatter(result) if many else None, visible=many),
            "first_token": gr.Plot(value=plots.first_token_figure(result, 0) if many else None, visible=many)}


def refuse(message: str, view: type = RunView) -> Iterator[Any]:
    """A run that cannot start: said in the status line and once as a toast; every other output stays."""
    yield view(status=error_status(message))
    raise gr.Error(message)


def decode(request: gr.Request | None, session_stop: StopFlag, lm: LoadedModel, prompt_v: str,
           specs: list[ColumnSpec], options: RunOptions, parent: Parent | None, link_values: tuple,
           view: type = RunView) -> Iterator[Any]:
    """Stream one run into the page; a failure is said once (toast and status), the last run stays."""
    stop = RunStop(session_stop)
    decoding = None
    try:
        decoding = BackgroundRun(Engine(lm).stream(prompt_v, specs, options, stop, parent, shared_decoding()))
        while True:  # the page shows the newest state; the decoding never waits for it
            run = decoding.run
            yield view(columns=columns_html(run, detail=False), status=run_status(run, "running"))
            if decoding.wait(UPDATE_INTERVAL_S):
                break
        run = decoding.result()
    except Exception as exc:  # noqa: BLE001  (bad input, or a run that failed halfway: say which)
        message = str(exc) if isinstance(exc, PlaygroundError) else run_failure(decoding, exc)
        yield view(columns=columns_html(decoding.run) if decoding else gr.skip(), status=error_status(message))
        raise gr.Error(message) from None
    finally:
        if decoding is not None and not decoding.wait(0):
            stop.abandoned.set()  # the page went away mid-run: end this decoding loop too
            decoding.wait(None)
    result = run.to_json()
    yield view(columns=columns_html(run), status=run_status(run, "stopped" if run.stopped else "done"),
               share=share_url(request, *link_values), last_run=result, traces=run.recorded_traces(),
               **finished_fields(result))


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


def link_parent(prompt: str, point: dict[str, Any]) -> Parent:
    """The branch point a share link restored, as the engine takes it (a bad one: a PlaygroundError)."""
    try:
        return Parent(prompt=prompt, **point)
    except TypeError:
        raise PlaygroundError("the branch point of this link is incomplete: open the page without it and "
                              "branch again") from None


def _samples(value: Any) -> int:
    try:
        return max(1, int(value or 1))
    except (TypeError, ValueError):
        return 1


@gpu(lambda a: gpu_seconds(a["max_v"], _column_count(a["table_v"]) * _samples(a.get("samples_v"))))
def stream(request: gr.Request, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v,
           samples_v=1) -> Iterator[RunView]:
    """Run: the column list on the prompt (from the branch point, when one is shown)."""
    runs = SessionRuns(session_of(request))
    try:
        if runs.stopped():  # a Stop came while this run waited in the queue
            yield RunView(status=STOPPED_BEFORE_START_STATUS)
            return
        try:
            lm, specs, options = prepare_run(prompt_v, model_v, chat_v, table_v, max_v, seed_v, samples_v)
            parent = link_parent(prompt_v, branch_v["point"]) if branch_v else None
        except PlaygroundError as exc:
            yield from refuse(str(exc))
            return
        yield from decode(request, runs.stop, lm, prompt_v, specs, options, parent,
                          (prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v, samples_v))
    finally:
        runs.leave()


@gpu(lambda a: gpu_seconds(*_run_size(a["run_v"])))
def start_branch(request: gr.Request, payload, run_v, model_v, chat_v, table_v, shown_html, link_v,
                 branch_v, history_v, traces_v) -> Iterator[BranchView]:
    """A click on an alternative: run the shown run's columns again from that token (a branch)."""
    runs = SessionRuns(session_of(request))
    try:
        if runs.stopped():
            yield BranchView(status=STOPPED_BEFORE_START_STATUS)
            return
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
            yield from refuse(str(exc), BranchView)
            return
        trail = [*(branch_v["trail"] if branch_v else []), parent.describe()]
        new_branch = {"point": {k: v for k, v in parent.to_json().items() if k != "prompt"}, "trail": trail,
                      "prompt": parent.prompt}
        saved = {"html": shown_html, "run": run_v, "link": link_v, "branch": branch_v, "traces": traces_v}
        link_values = (parent.prompt, model_v, chat_v, table_rows(specs), options.max_new_tokens, options.seed,
                       new_branch, options.samples)
        first = True
        for view in decode(request, runs.stop, lm, parent.prompt, specs, options, parent, link_values, BranchView):
            if first:  # the trail changes with the branch's first update
                view.breadcrumb, view.back = breadcrumb_html(trail), gr.Button(visible=True)
                view.branch_state, view.history = new_branch, [*history_v, saved][-MAX_HISTORY:]
                first = False
            yield view
    finally:
        runs.leave()


def go_back(history_v: list[dict[str, Any]]) -> BranchView:
    """Show the parent run again, as it was (nothing is recomputed)."""
    if not history_v:
        return BranchView()
    saved, rest = history_v[-1], history_v[:-1]
    trail = saved["branch"]["trail"] if saved["branch"] else []
    run_v = saved["run"]
    return BranchView(columns=saved["html"], status=IDLE_STATUS, share=saved["link"], last_run=run_v,
                      traces=saved.get("traces"),
                      breadcrumb=breadcrumb_html(trail), back=gr.Button(visible=bool(rest) or bool(trail)),
                      branch_state=saved["branch"], history=rest, **(finished_fields(run_v) if run_v else {}))


def leave_branch(prompt_v: str, branch_v: dict[str, Any] | None) -> TrailView:
    """A new prompt (typed, or an example) leaves the branch; a link's own prompt keeps it."""
    if not branch_v or branch_v.get("prompt") == prompt_v:
        return TrailView()
    return TrailView(breadcrumb="", back=gr.Button(visible=False), branch_state=None, history=[])


def breadcrumb_html(trail: list[str], linked: bool = False) -> str:
    """Where the shown run branched from, one step per branch: ``prompt › column 2, token 7: ' door' → ' gate'``."""
    if not trail:
        return ""
    steps = "".join(f'<span class="pg-crumb-step"> › {html.escape(t)}</span>' for t in trail)
    note = " (from a link: Run decodes it)" if linked else ""
    return f'<div id="pg-crumb" class="pg-crumb" data-depth="{len(trail)}">branch: prompt{steps}{note}</div>'


# ---- the column list, the link, the plots, the seed ------------------------------------------------


def _refused_as_error(edit: Callable) -> Callable:
    """A column-list edit whose refusal is one toast (the table keeps what it showed)."""
    @functools.wraps(edit)
    def refusing(*args: Any) -> Any:
        try:
            return edit(*args)
        except PlaygroundError as exc:
            raise gr.Error(str(exc)) from None
    return refusing


add_column = _refused_as_error(column_list.add_column)
duplicate_column = _refused_as_error(column_list.duplicate_column)
remove_column = _refused_as_error(column_list.remove_column)
sweep_column = _refused_as_error(column_list.sweep_column)


def share_link(request: gr.Request, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v,
               samples_v=1) -> str:
    """The share link for the settings as the page has them (a bad column list: one toast)."""
    try:
        return share_url(request, prompt_v, model_v, chat_v, table_v, max_v, seed_v, branch_v, samples_v)
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None


def show_heatmap(label: str, run: dict[str, Any] | None) -> Any:
    """The heatmap of the chosen column (the first, for a label the shown run lacks)."""
    if not run:
        return gr.skip()
    labels = [c["label"] for c in run["columns"]]
    return plots.order_heatmap(run, labels.index(label) if label in labels else 0)


def why_token(payload: str, traces_v: RunTraces | None, run_v: dict[str, Any] | None) -> str:
    """"why this token" (one token) or a pair's sentence (two): their chain traces, side by side."""
    try:
        asked = json.loads(payload or "{}")
        if traces_v is None or not run_v:
            raise PlaygroundError("run something first: the traces are those of the shown run")
        labels = [c["label"] for c in run_v["columns"]]
        shown = []
        for item in asked.get("tokens") or []:
            column, step = int(item["column"]), int(item["step"])
            shown.append((column, labels[column] if 0 <= column < len(labels) else "", traces_v.trace(column, step)))
    except (PlaygroundError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return why.why_message(str(exc) if isinstance(exc, PlaygroundError) else f"not a token: {payload!r}")
    return why.why_html(shown, asked.get("sentence", ""))


def roll_seed() -> int:
    return random.randrange(2**31)


def load_settings(request: gr.Request) -> SettingsView:
    """A share link's settings onto the page; what it could not restore is one warning toast, the rest applies."""
    query = dict(getattr(request, "query_params", None) or {})
    found, problems = read_query(query, setting_fields())
    if "model" in found:
        try:
            check_model(found["model"])
        except PlaygroundError as exc:
            problems.append(str(exc))
            del found["model"]
    if problems:
        gr.Warning("this link's settings were restored except: " + "; ".join(problems))
    view = SettingsView(status=IDLE_STATUS)
    for key, name in (("prompt", "prompt"), ("chat", "chat"), ("max_new_tokens", "max_tokens"), ("seed", "seed"),
                      ("samples", "samples")):
        if key in found:
            setattr(view, name, gr.update(value=found[key]))
    if found.get("columns"):
        view.table = gr.update(value=table_rows(found["columns"]))
    if "model" in found:
        allowed = allowed_models()
        extra = [found["model"]] if allowed is None and found["model"] != DEFAULT_MODEL else []
        view.model = gr.update(value=found["model"], choices=[DEFAULT_MODEL, *(allowed or []), *extra])
    point = found.get("branch")
    if point:
        view.branch_state = {"point": point, "trail": [describe_branch(point)], "prompt": found.get("prompt")}
        view.breadcrumb = breadcrumb_html(view.branch_state["trail"], linked=True)
    view.back = gr.Button(visible=bool(point))
    return view
