"""The web app through its API (gradio_client), against the app served on a free local port."""
from __future__ import annotations

import json
import re
import socket
import threading
from types import SimpleNamespace

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from playground import cli, ui
from playground.columns import ColumnSpec
from playground.samplers import SAMPLERS

TIMEOUT_S = 240  # generous: the machine is shared; a hang still fails


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(real_lm):
    demo = ui.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield demo
    demo.close()


@pytest.fixture()
def client(server):
    return Client(server.local_url, verbose=False)


def compare(client, prompt="Once upon a time", samplers="greedy,temperature", seed=0, tokens=8, settings="",
            columns=""):
    job = client.submit(prompt, samplers, seed, tokens, False, settings, "default", columns, api_name="/compare")
    return job.result(timeout=TIMEOUT_S)


def table(*specs):
    """The column list's value as the API takes it."""
    return {"headers": ui.HEADERS, "data": ui.table_rows([ColumnSpec(s) if isinstance(s, str) else s for s in specs])}


def test_compare_returns_one_column_per_sampler_with_telemetry(client):
    result = compare(client, samplers="greedy,temperature", tokens=8)
    assert [c["sampler"] for c in result["columns"]] == ["greedy", "temperature"]
    for col in result["columns"]:
        assert 1 <= len(col["tokens"]) <= 8
        assert col["finish_reason"] in ("eos", "length")
        row = col["tokens"][0]
        assert row["entropy"] >= 0 and 0 < row["prob"] <= 1 and len(row["top"]) == 5
        assert 0 <= row["order_parameter"] <= 1
        assert col["metrics"]["tokens"] == len(col["tokens"])


def test_compare_is_the_cli_json(client, capsys):
    result = compare(client, prompt="The ancient door creaked open", samplers="temperature", seed=5, tokens=6,
                     settings='{"temperature": {"top_k": 0}}')
    assert cli.main(["compare", "--prompt", "The ancient door creaked open", "--samplers", "temperature",
                     "--seed", "5", "--max-new-tokens", "6", "--set", "temperature.top_k=0", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    timing = {"elapsed_s", "step_ms", "tok_s"}

    def strip(value):  # wall times differ between two runs; everything else must not
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in timing}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    assert strip(result) == strip(expected)
    assert result["columns"][0]["settings"]["top_k"] == 0


def test_same_seed_same_texts_other_seed_other_text(client):
    first = compare(client, samplers="temperature", seed=11, tokens=16)
    again = compare(client, samplers="temperature", seed=11, tokens=16)
    other = compare(client, samplers="temperature", seed=12, tokens=16)
    assert [c["text"] for c in first["columns"]] == [c["text"] for c in again["columns"]]
    assert first["columns"][0]["text"] != other["columns"][0]["text"]


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "   \n"}, "prompt is empty"),
    ({"settings": '{"temperature": {"temperature": -1}}'}, "temperature.temperature"),
    ({"samplers": "nucleus"}, "unknown sampler 'nucleus'"),
    ({"tokens": 5000}, "max_new_tokens"),
    ({"prompt": "word " * 9000}, "the prompt is 9,001 tokens, which exceeds the model's context of 8,192 tokens"),
    ({"prompt": "NUL\x00byte"}, "1 control character(s) (U+0000 at position 3)"),
])
def test_bad_input_is_a_clear_error_not_a_hang(client, kwargs, message):
    with pytest.raises(AppError, match=re.escape(message)):
        compare(client, **kwargs)
    assert compare(client, samplers="greedy", tokens=2)["columns"][0]["tokens"]  # still serving


def test_a_lone_surrogate_sent_as_json_is_a_clear_error(server):
    """No Python client can send one (httpx refuses to encode it), but any HTTP client can, as a JSON escape."""
    import httpx

    base = server.local_url.rstrip("/")
    body = '{"data": ["caf\\ud800", "greedy", 0, 2, false, "", "default", ""]}'  # the escape, not the character
    event = httpx.post(f"{base}/gradio_api/call/compare", content=body,
                       headers={"content-type": "application/json"}, timeout=30).json()["event_id"]
    stream = httpx.get(f"{base}/gradio_api/call/compare/{event}", timeout=TIMEOUT_S).text
    assert "event: error" in stream
    assert "a lone UTF-16 surrogate, U+D800 at position 3" in stream


def test_the_prompt_cap_is_the_deployments(client, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "5")
    with pytest.raises(AppError, match=re.escape("the prompt is 6 tokens; this playground accepts at most 5")):
        compare(client, prompt="one two three four five six")
    assert compare(client, prompt="one two three four five", samplers="greedy", tokens=2)["columns"]


def test_a_refused_run_says_so_once_in_the_status_line(client):
    job = client.submit("", "default", False, table("greedy"), 4, 0, api_name="/run")
    with pytest.raises(AppError, match="prompt is empty"):
        job.result(timeout=TIMEOUT_S)
    status = job.outputs()[-1][1]
    assert 'data-state="error"' in status and "the prompt is empty" in status


def test_a_run_that_fails_halfway_keeps_its_tokens_and_says_what_happened(client, monkeypatch, real_lm):
    forward, calls = type(real_lm).forward, []

    def failing(self, *args, **kwargs):  # the model's forward pass, failing from its fifth call on
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("the model broke (simulated)")
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(type(real_lm), "forward", failing)
    job = client.submit("Once upon a time", "default", False, table("greedy"), 40, 0, api_name="/run")
    with pytest.raises(AppError, match=r"the run failed after step \d+ \(RuntimeError: the model broke"):
        job.result(timeout=TIMEOUT_S)
    html, status = job.outputs()[-1][:2]
    assert 'data-state="error"' in status and "the tokens so far are kept" in status
    assert html.count('class="pg-tok') >= 4  # the tokens decoded before the failure are still shown


def test_a_model_outside_the_allow_list_is_refused(client):
    job = client.submit("Hi", "greedy", 0, 2, False, "", "gpt2", api_name="/compare")
    with pytest.raises(AppError, match="not allowed"):
        job.result(timeout=TIMEOUT_S)


def test_two_clients_at_once_each_get_their_own_text(server):
    alone = {seed: compare(Client(server.local_url, verbose=False), seed=seed, tokens=12) for seed in (21, 22)}
    together: dict[int, dict] = {}

    def call(seed):
        together[seed] = compare(Client(server.local_url, verbose=False), seed=seed, tokens=12)

    threads = [threading.Thread(target=call, args=(seed,)) for seed in (21, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    for seed in (21, 22):
        assert [c["text"] for c in together[seed]["columns"]] == [c["text"] for c in alone[seed]["columns"]]


def test_streamed_run_ends_with_every_column_plots_table_and_downloads(client):
    names = list(SAMPLERS)
    job = client.submit("Once upon a time", "default", False, table(*names), 6, 4, api_name="/run")
    html, status, signals, _, heatmap, metrics, json_file, csv_file, link, parts, why, *samples_plots = \
        job.result(timeout=TIMEOUT_S)
    assert html.count('class="pg-card"') == len(names)
    assert parts.count("<li") == len(names) * (len(names) - 1) // 2 and why == ""  # one sentence per pair
    assert 'data-state="done"' in status
    # streamed updates are light (no hover text, no alternatives); the finished run has both
    streamed = [update[0] for update in job.outputs() if 'data-state="running"' in str(update[1])]
    assert streamed and all("data-alts" not in h and not re.search(r'class="pg-tok[^>]*title=', h) for h in streamed)
    assert html.count("data-alts=") == html.count('class="pg-tok')
    assert "%{text}" in json.dumps(signals) and heatmap
    assert [row[0] for row in metrics["data"]] == names
    # the buttons come back as updates: {"value": <file the client downloaded>, "interactive": True}
    assert json_file["interactive"] and csv_file["interactive"]
    json_file, csv_file = json_file["value"], csv_file["value"]
    run = json.loads(open(json_file, encoding="utf-8").read())
    assert [c["sampler"] for c in run["columns"]] == names
    assert open(csv_file, encoding="utf-8").readline().startswith("column,sampler,step,id,text")
    assert "seed=4" in link and "max_new_tokens=6" in link
    # the streamed run and /compare agree token for token (same engine, same seed)
    same = compare(client, samplers=",".join(names), seed=4, tokens=6)
    assert [c["text"] for c in run["columns"]] == [c["text"] for c in same["columns"]]
    assert [[t["id"] for t in c["tokens"]] for c in run["columns"]] == \
        [[t["id"] for t in c["tokens"]] for c in same["columns"]]


def test_stop_ends_the_decoding_loop(client, real_lm):
    job = client.submit("Once upon a time", "default", False, table("greedy", "temperature"), 1024, 0,
                        api_name="/run")
    for _ in range(600):  # wait for a few streamed steps
        outputs = job.outputs()
        if outputs and int(re.search(r'data-step="(\d+)"', outputs[-1][1]).group(1)) >= 2:
            break
        job.status()
        threading.Event().wait(0.2)
    client.predict(api_name="/stop")
    html, status = job.result(timeout=TIMEOUT_S)[:2]
    assert 'data-state="stopped"' in status
    assert int(re.search(r'data-step="(\d+)"', status).group(1)) < 1024
    assert "stopped" in html
    assert real_lm.lock.acquire(timeout=30)  # the engine has left its loop: nothing decodes any more
    real_lm.lock.release()


def test_stop_reaches_only_its_own_session():
    mine, theirs = ui.SessionRuns("session-a"), ui.SessionRuns("session-b")
    mine.join()
    theirs.join()
    ui.request_stop(SimpleNamespace(session_hash="session-a"))
    assert mine.stopped() and not theirs.stopped()
    mine.leave()
    theirs.leave()
    assert not mine.stopped() and mine.tickets() == []


def test_every_event_has_an_explicit_api_name(server):
    names = {d["api_name"] for d in server.config["dependencies"] if d.get("api_visibility") != "undocumented"}
    assert names == {"run", "branch", "back", "leave_branch", "stop", "roll_seed", "share_link", "add_column",
                     "duplicate_column", "remove_column", "sweep_column", "heatmap", "load_settings", "count_tokens",
                     "order_parameter_note", "compare", "why"}


def test_share_query_round_trips_the_column_list_and_the_branch_point():
    from urllib.parse import parse_qsl

    fields = ui.setting_fields()
    specs = [ColumnSpec("temperature", {"temperature": 0.55}), ColumnSpec("greedy"),
             ColumnSpec("temperature", {"min_p": 0.1, "top_k": 0}, "mine")]
    point = {"column": 2, "step": 3, "token": 42, "replaced": 7, "continuation": [5, 6, 7, 42], "token_text": " x"}
    query = ui.share_query("Say \"hi\" & go", "default", True, specs, 12, 99, point)
    found, problems = ui.read_query(dict(parse_qsl(query)), fields)
    assert problems == []
    assert found["prompt"] == "Say \"hi\" & go" and found["chat"] is True
    assert found["columns"] == specs and found["seed"] == 99 and found["max_new_tokens"] == 12
    assert found["branch"] == point
    found, problems = ui.read_query({"seed": "x", "max_new_tokens": "2000", "samplers": "greedy,bogus"}, fields)
    assert found == {"columns": [ColumnSpec("greedy")]} and len(problems) == 3


def test_an_old_style_query_becomes_columns():
    found, problems = ui.read_query({"samplers": "greedy,temperature", "temperature.temperature": "0.55",
                                     "greedy.nothing": "1", "temperature.top_k": "x"}, ui.setting_fields())
    assert found["columns"] == [ColumnSpec("greedy"), ColumnSpec("temperature", {"temperature": 0.55})]
    assert problems == ["temperature.top_k must be int, got 'x'"]
    found, problems = ui.read_query({"columns": '[{"sampler": "temperature", "settings": {"top_p": 3}}]'}, [])
    assert "columns" not in found and "column 1: temperature.top_p must be in (0, 1]" in problems[0]


def test_column_list_edits():
    rows = ui.table_rows([ColumnSpec("greedy"), ColumnSpec("temperature", {"top_k": 0})])
    assert rows == [["1", "greedy", "", ""], ["2", "temperature", "top_k=0", ""]]
    added = ui.columns.add_column(rows, "preset:top-p-0.9")
    assert added[-1] == ["3", "temperature", "temperature=1, top_k=0, top_p=0.9", "top-p-0.9"]
    assert ui.columns.duplicate_column(added, 2)[2] == ["3", "temperature", "top_k=0", ""]
    assert [r[1] for r in ui.columns.remove_column(added, 1)] == ["temperature", "temperature"]
    swept = ui.columns.sweep_column(rows, 2, "temperature = 0.5, 0.8, 1.1")
    assert [r[2] for r in swept[1:]] == [f"top_k=0, temperature={t}" for t in ("0.5", "0.8", "1.1")]
    assert [r[3] for r in swept[1:]] == [f"temperature · temperature={t}, top_k=0" for t in ("0.5", "0.8", "1.1")]
    for fn, args, part in ((ui.columns.sweep_column, (rows, 2, "temperature 0.5"), "sweep: write SETTING = V1"),
                           (ui.columns.sweep_column, (rows, 2, "temperature = 0.5, x"), "must be float, got 'x'"),
                           (ui.columns.sweep_column, (rows, 1, "temperature = 1"), "unknown setting greedy.temperature"),
                           (ui.columns.remove_column, (rows, 3), "column number in 1..2"),
                           (ui.columns.remove_column, (rows[:1], 1), "at least one column"),
                           (ui.columns.add_column, (rows * 4, "sampler:greedy"), "at most 8 columns"),
                           (ui.columns.sweep_column, (rows * 3, 2, "top_k = 1, 2, 3, 4"), "at most 8 columns")):
        with pytest.raises(ui.PlaygroundError, match=part):
            fn(*args)
    with pytest.raises(ui.PlaygroundError, match="column 2: unknown sampler 'nope'"):
        ui.table_specs([["1", "greedy", "", ""], ["2", "nope", "", ""]])
    with pytest.raises(ui.PlaygroundError, match="column 1: 'top_k' is not KEY=VALUE"):
        ui.table_specs([["1", "temperature", "top_k", ""]])


def test_compare_takes_a_column_list(client):
    columns = json.dumps([{"sampler": "temperature", "settings": {"temperature": 0.5}, "label": "cold"},
                          {"sampler": "temperature", "settings": {"temperature": 1.3}},
                          {"sampler": "temperature", "settings": {"temperature": 0.5}}])
    result = compare(client, samplers="", columns=columns, tokens=10, seed=2)
    assert [c["label"] for c in result["columns"]] == ["cold", "temperature · temperature=1.3",
                                                       "temperature · temperature=0.5"]
    texts = [c["text"] for c in result["columns"]]
    assert texts[0] == texts[2] != texts[1]  # same spec, same tokens
    for row in result["columns"][0]["tokens"]:
        assert 0 < row["sampler_prob"] <= 1 and row["support"] >= 1
    with pytest.raises(AppError, match="either columns, or samplers and settings"):
        compare(client, samplers="greedy", columns=columns)
    with pytest.raises(AppError, match="column 2: unknown sampler 'nope'"):
        compare(client, samplers="", columns='[{"sampler": "greedy"}, {"sampler": "nope"}]')


def test_a_branch_through_the_api_runs_from_the_chosen_token(client):
    run = client.submit("Once upon a time", "default", False, table("greedy", "temperature"), 6, 1, api_name="/run")
    run.result(timeout=TIMEOUT_S)
    shown = json.loads(open(run.outputs()[-1][6]["value"], encoding="utf-8").read())  # the run's JSON download
    token = shown["columns"][1]["tokens"][2]["top"][1]["id"]
    payload = json.dumps({"column": 1, "step": 2, "token": token})
    job = client.submit(payload, "default", False, table("greedy", "temperature"), "", "", api_name="/branch")
    outputs = job.result(timeout=TIMEOUT_S)
    branch = json.loads(open(outputs[6]["value"], encoding="utf-8").read())
    assert branch["prompt_ids"] == shown["prompt_ids"] + [t["id"] for t in shown["columns"][1]["tokens"][:2]] + [token]
    assert branch["parent"]["column"] == 1 and branch["parent"]["step"] == 2 and branch["parent"]["token"] == token
    assert any("column 2, token 3" in str(value) for update in job.outputs() for value in update)  # the breadcrumb
    bad = client.submit(json.dumps({"column": 1, "step": 99, "token": token}), "default", False,
                        table("greedy", "temperature"), "", "", api_name="/branch")
    with pytest.raises(AppError, match="step must be in 0..5"):
        bad.result(timeout=TIMEOUT_S)


def test_model_allow_list(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_ALLOWED_MODELS", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert ui.allowed_models() == []
    with pytest.raises(ui.PlaygroundError, match="not allowed"):
        ui.check_model("gpt2")
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    assert ui.allowed_models() == list(ui.SPACES_ALLOWED_MODELS)
    assert ui.check_model(ui.SPACES_ALLOWED_MODELS[0]) == ui.SPACES_ALLOWED_MODELS[0]
    monkeypatch.setenv("PLAYGROUND_ALLOWED_MODELS", "*")
    assert ui.allowed_models() is None and ui.check_model("gpt2") == "gpt2"


def test_a_registered_sampler_appears_in_the_menu_and_the_reference(monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class ToySettings:
        strength: float = 0.25
        steps: int = 3
        on: bool = True

    monkeypatch.setitem(SAMPLERS, "toy", type("Toy", (), {"name": "toy", "Settings": ToySettings}))
    toy = [f for f in ui.setting_fields() if f.sampler == "toy"]
    assert [(f.name, f.kind, f.default) for f in toy] == [("strength", float, 0.25), ("steps", int, 3), ("on", bool, True)]
    assert ("toy (defaults)", "sampler:toy") in ui.columns.add_choices()
    reference = ui.columns.reference_markdown()
    assert "| toy | `strength` | `0.25` |" in reference and "| toy | `on` | `True` |" in reference
    assert all(f"`{name}`" in reference for name in ui.columns.PRESETS)
