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


def compare(client, prompt="Once upon a time", samplers="greedy,temperature", seed=0, tokens=8, settings=""):
    job = client.submit(prompt, samplers, seed, tokens, False, settings, "default", api_name="/compare")
    return job.result(timeout=TIMEOUT_S)


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
    body = '{"data": ["caf\\ud800", "greedy", 0, 2, false, "", "default"]}'  # the escape, not the character
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
    values = [f.default for f in ui.setting_fields()]
    job = client.submit("", "default", False, ["greedy"], 4, 0, *values, api_name="/run")
    with pytest.raises(AppError, match="prompt is empty"):
        job.result(timeout=TIMEOUT_S)
    status = job.outputs()[-1][1]
    assert 'data-state="error"' in status and "the prompt is empty" in status


def test_a_run_that_fails_halfway_keeps_its_tokens_and_says_what_happened(client, monkeypatch):
    from playground.engine import Engine

    forward, calls = Engine._forward, []

    def failing(self, rows):
        calls.append(1)
        if len(calls) > 4:
            raise RuntimeError("the model broke (simulated)")
        return forward(self, rows)

    monkeypatch.setattr(Engine, "_forward", failing)
    values = [f.default for f in ui.setting_fields()]
    job = client.submit("Once upon a time", "default", False, ["greedy"], 40, 0, *values, api_name="/run")
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
    values = [f.default for f in ui.setting_fields()]
    job = client.submit("Once upon a time", "default", False, names, 6, 4, *values, api_name="/run")
    html, status, signals, _, heatmap, table, json_file, csv_file, link = job.result(timeout=TIMEOUT_S)
    assert html.count('class="pg-card"') == len(names)
    assert 'data-state="done"' in status
    assert "%{text}" in json.dumps(signals) and heatmap
    assert [row[0] for row in table["data"]] == names
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
    names = ["greedy", "temperature"]
    values = [f.default for f in ui.setting_fields()]
    job = client.submit("Once upon a time", "default", False, names, 1024, 0, *values, api_name="/run")
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
    mine, theirs = ui._new_stop("session-a"), ui._new_stop("session-b")
    ui.request_stop(SimpleNamespace(session_hash="session-a"))
    assert mine.is_set() and not theirs.is_set()
    ui._drop_stop("session-a", mine)
    ui._drop_stop("session-b", theirs)


def test_every_event_has_an_explicit_api_name(server):
    names = {d["api_name"] for d in server.config["dependencies"] if d.get("api_visibility") != "undocumented"}
    assert names == {"run", "stop", "roll_seed", "share_link", "heatmap", "load_settings", "count_tokens", "compare"}


def test_share_query_round_trips():
    fields = ui.setting_fields()
    values = [f.default for f in fields]
    temp = [i for i, f in enumerate(fields) if f.key == "temperature.temperature"][0]
    values[temp] = 0.55
    query = ui.share_query("Say \"hi\" & go", "default", True, ["temperature"], 12, 99, fields, values)
    from urllib.parse import parse_qsl
    found, problems = ui.read_query(dict(parse_qsl(query)), fields)
    assert problems == []
    assert found["prompt"] == "Say \"hi\" & go" and found["chat"] is True
    assert found["samplers"] == ["temperature"] and found["seed"] == 99 and found["max_new_tokens"] == 12
    assert found["temperature.temperature"] == 0.55
    assert not any(k.startswith("greedy.") for k in found)
    found, problems = ui.read_query({"seed": "x", "max_new_tokens": "2000", "samplers": "greedy,bogus"}, fields)
    assert found == {"samplers": ["greedy"]} and len(problems) == 3


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


def test_settings_controls_follow_the_registered_samplers(monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class ToySettings:
        strength: float = 0.25
        steps: int = 3
        on: bool = True

    monkeypatch.setitem(SAMPLERS, "toy", type("Toy", (), {"name": "toy", "Settings": ToySettings}))
    toy = [f for f in ui.setting_fields() if f.sampler == "toy"]
    assert [(f.name, f.kind, f.default) for f in toy] == [("strength", float, 0.25), ("steps", int, 3), ("on", bool, True)]
    demo = ui.build_app()
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {"pg-acc-toy", "pg-set-toy-strength", "pg-set-toy-steps", "pg-set-toy-on"} <= ids
