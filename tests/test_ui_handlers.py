"""The page's handlers called alone (no server, no browser): what each shows, by output name."""
from __future__ import annotations

import uuid
import warnings
from types import SimpleNamespace

import gradio as gr
import pytest

from playground.columns import ColumnSpec
from playground.engine import Engine, RunOptions
from playground.ui import handlers, views
from playground.ui.columns import table_rows
from playground.ui.render import IDLE_STATUS, STOPPED_BEFORE_START_STATUS
from playground.ui.sessions import SessionRuns

SKIP = gr.skip()


def request(**query):
    """A stand-in for gr.Request: a fresh session, and the page's query."""
    return SimpleNamespace(session_hash=f"test-{uuid.uuid4().hex}", query_params=query,
                           headers={"host": "playground.test"})


@pytest.fixture(scope="module")
def tiny_run(tiny_llama):
    return Engine(tiny_llama).run("Once upon a time", [ColumnSpec("greedy"), ColumnSpec("temperature")],
                                  RunOptions(seed=3, max_new_tokens=4)).to_json()


def test_a_view_keeps_every_output_it_does_not_name():
    assert views.values(views.RunView(status="s")) == (SKIP, "s", *[SKIP] * 13)
    names = [f.name for f in views.dataclasses.fields(views.BranchView)]
    assert names == ["columns", "status", "signals", "heat_column", "heatmap", "metrics", "json_file", "csv_file",
                     "share", "last_run", "traces", "parts", "why", "samples_plot", "first_token", "breadcrumb", "back", "branch_state", "history"]
    page = SimpleNamespace(**{name: f"<{name}>" for name in names})
    assert views.outputs(page, views.TrailView) == ["<breadcrumb>", "<back>", "<branch_state>", "<history>"]


def test_shows_turns_returned_and_yielded_views_into_values():
    def one(x: int) -> views.TrailView:
        return views.TrailView(history=[x])

    def many(x: int):
        yield views.TrailView(breadcrumb=x)
        yield views.TrailView(back=x + 1)

    assert views.shows(one)(5) == (SKIP, SKIP, SKIP, [5])
    assert list(views.shows(many)(5)) == [(5, SKIP, SKIP, SKIP), (SKIP, 6, SKIP, SKIP)]


def test_back_without_history_changes_nothing():
    assert views.values(handlers.go_back([])) == (SKIP,) * 19


def test_back_shows_the_saved_run_again(tiny_run):
    older = {"html": "<older/>", "run": None, "link": "L0", "branch": None}
    saved = {"html": "<cards/>", "run": tiny_run, "link": "http://x/?v=2", "branch": {"trail": ["t1"], "point": {}}}
    view = handlers.go_back([older, saved])
    assert (view.columns, view.status, view.share, view.last_run) == ("<cards/>", IDLE_STATUS, "http://x/?v=2",
                                                                      tiny_run)
    assert view.history == [older] and view.branch_state == saved["branch"]
    assert 'data-depth="1"' in view.breadcrumb and view.back.visible is True
    assert list(view.metrics["column"]) == ["greedy", "temperature"]
    assert view.heat_column.choices == [("greedy", "greedy"), ("temperature", "temperature")]
    root = handlers.go_back([older])  # the root run: no trail, nothing left to go back to
    assert root.breadcrumb == "" and root.back.visible is False and root.signals == SKIP


def test_a_new_prompt_leaves_the_branch_and_its_own_prompt_keeps_it():
    branch = {"point": {}, "trail": ["t"], "prompt": "Once"}
    assert views.values(handlers.leave_branch("Once", branch)) == (SKIP,) * 4
    assert views.values(handlers.leave_branch("Once", None)) == (SKIP,) * 4
    left = handlers.leave_branch("Another", branch)
    assert (left.breadcrumb, left.back.visible, left.branch_state, left.history) == ("", False, None, [])


@pytest.mark.parametrize("edit, args, message", [
    (handlers.add_column, (table_rows([ColumnSpec("greedy")] * 8), "sampler:greedy"),
     "at most 8 columns per run; remove one first"),
    (handlers.duplicate_column, (table_rows([ColumnSpec("greedy")] * 2), 3), "choose a column number in 1..2, got 3"),
    (handlers.remove_column, (table_rows([ColumnSpec("greedy")] * 2), 0), "choose a column number in 1..2, got 0"),
    (handlers.sweep_column, (table_rows([ColumnSpec("temperature")]), 1, "warmth = 1, 2"),
     "unknown setting temperature.warmth"),
    (handlers.sweep_column, (table_rows([ColumnSpec("temperature")]), 1, "top_p = 0.5, 1.5"),
     "top_p must be in (0, 1]"),
])
def test_a_refused_column_edit_is_one_error_naming_the_problem(edit, args, message):
    with pytest.raises(gr.Error) as refused:
        edit(*args)
    assert message in refused.value.message


def test_the_share_link_is_the_page_address_with_the_settings_or_one_error():
    link = handlers.share_link(request(), "Hi", "default", False, table_rows([ColumnSpec("greedy")]), 5, 2, None)
    assert link.startswith("http://playground.test/?v=2&prompt=Hi&seed=2&max_new_tokens=5")
    with pytest.raises(gr.Error, match="column 1: unknown sampler 'nope'"):
        handlers.share_link(request(), "Hi", "default", False, [["1", "nope", "", ""]], 5, 2, None)


def test_the_heatmap_follows_the_chosen_column(tiny_run):
    assert handlers.show_heatmap("greedy", None) == SKIP
    assert handlers.show_heatmap("temperature", tiny_run).layout.title.text.endswith(": temperature")
    assert handlers.show_heatmap("not a column", tiny_run).layout.title.text.endswith(": greedy")


def test_a_link_restores_what_it_can_and_names_every_bad_parameter_in_one_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        view = handlers.load_settings(request(prompt="Hi", seed="x", max_new_tokens="5",
                                              samplers="greedy,bogus", model="gpt2"))
    said = [str(w.message) for w in caught if "link's settings" in str(w.message)]
    assert len(said) == 1 and "seed must be an integer" in said[0] and "bogus" in said[0]
    assert "model 'gpt2' is not allowed" in said[0]
    assert view.prompt["value"] == "Hi" and view.max_tokens["value"] == 5
    assert view.seed == SKIP and view.model == SKIP
    assert view.table["value"] == [["1", "greedy", "", ""]] and view.status == IDLE_STATUS
    assert view.back.visible is False


def test_a_link_with_an_incomplete_branch_point_is_refused_when_run():
    with pytest.raises(handlers.PlaygroundError, match="branch point of this link is incomplete"):
        handlers.link_parent("Hi", {"column": 0, "step": 1, "token": 5, "continuation": [5]})


def test_a_refused_run_says_it_in_the_status_line_and_keeps_the_rest():
    shown = handlers.stream(request(), "", "default", False, table_rows([ColumnSpec("greedy")]), 4, 0, None)
    first = next(shown)
    assert 'data-state="error"' in first.status and "the prompt is empty" in first.status
    assert views.values(first)[2:] == (SKIP,) * 13 and first.columns == SKIP
    with pytest.raises(gr.Error, match="the prompt is empty"):
        next(shown)


def test_a_run_stopped_while_it_waited_ends_before_decoding(monkeypatch):
    monkeypatch.setattr(handlers, "BackgroundRun", None)  # decoding would fail loudly
    req = request()
    runs = SessionRuns(req.session_hash)
    runs.join()  # what the event's validator does when the run joins the queue
    assert runs.request_stop()
    shown = list(handlers.stream(req, "Hi", "default", False, table_rows([ColumnSpec("greedy")]), 4, 0, None))
    assert [views.values(v) for v in shown] == [views.values(views.RunView(status=STOPPED_BEFORE_START_STATUS))]
    assert "stopped before it started" in STOPPED_BEFORE_START_STATUS and 'data-step="0"' in STOPPED_BEFORE_START_STATUS
    assert not runs.stopped() and runs.tickets() == []  # the session's next run starts afresh


def test_a_stop_counts_only_while_a_run_waits_or_runs():
    runs = SessionRuns(f"test-{uuid.uuid4().hex}")
    assert not runs.request_stop() and not runs.stopped()  # nothing to stop: nothing kept for later
    runs.join()
    runs.join()
    assert runs.request_stop() and runs.stopped()
    runs.leave()
    assert runs.stopped()  # the second waiting run is stopped too
    runs.leave()
    assert not runs.stopped() and runs.tickets() == []
    other = SessionRuns(f"test-{uuid.uuid4().hex}")
    other.join()
    runs.join()
    assert runs.request_stop() and not other.stopped()  # a Stop reaches its own session only
    runs.leave()
    other.leave()


def test_a_branch_is_refused_before_any_run_and_stopped_while_it_waits(monkeypatch):
    rows = table_rows([ColumnSpec("greedy")])
    shown = handlers.start_branch(request(), '{"column": 0, "step": 0, "token": 5}', None, "default", False, rows,
                                  "", "", None, [], None)
    first = next(shown)
    assert isinstance(first, views.BranchView) and "run something first" in first.status
    assert first.history == SKIP and first.columns == SKIP  # Back's history and the shown run stay
    with pytest.raises(gr.Error, match="run something first"):
        next(shown)
    monkeypatch.setattr(handlers, "BackgroundRun", None)  # decoding would fail loudly
    req = request()
    runs = SessionRuns(req.session_hash)
    runs.join()
    runs.request_stop()
    views_shown = list(handlers.start_branch(req, "{}", {"model": "x"}, "default", False, rows, "", "", None, [], None))
    assert [v.status for v in views_shown] == [STOPPED_BEFORE_START_STATUS] and not runs.stopped()
