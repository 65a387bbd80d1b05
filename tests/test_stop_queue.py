"""Stop through the queue (gradio_client, the real model): a Stop sent while a session's run waits
ends that run before it decodes a token, reaches no other session, and a Stop sent when nothing
runs does not stop the session's next run."""
from __future__ import annotations

import re
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

from playground import ui
from playground.columns import ColumnSpec

from app_server import served_app

TIMEOUT_S = 240  # generous: the machine is shared; a hang still fails
LONG = 1024  # tokens: a run that lasts until it is stopped


@pytest.fixture(scope="module")
def server(real_lm):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PLAYGROUND_CONCURRENCY", "2")  # two decodings at once; a third waits in the queue
        with served_app() as demo:
            yield demo


def client(server) -> Client:
    return Client(server.local_url, verbose=False)  # one client, one session


def table(*names):
    return {"headers": ui.HEADERS, "data": ui.table_rows([ColumnSpec(n) for n in names])}


def status_of(job) -> str:
    """The status line of the job's newest update ("" before its first)."""
    outputs = job.outputs()
    return str(outputs[-1][1]) if outputs else ""


def step(status: str) -> int:
    found = re.search(r'data-step="(\d+)"', status)
    return int(found.group(1)) if found else -1


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def long_run(session: Client):
    return session.submit("Tell me a long story", "default", False, table("greedy", "temperature", "phase_slip"),
                          LONG, 0, api_name="/run")


def test_a_stop_sent_while_the_run_waits_ends_it_before_it_decodes(server, real_lm):
    a, b, c, d = (client(server) for _ in range(4))
    run_a = long_run(a)
    wait_for(lambda: step(status_of(run_a)) >= 2, "A to stream")
    run_b = long_run(b)  # the second decoding slot: it waits for the model inside its event
    wait_for(lambda: run_b.status().code == Status.PROCESSING, "B to hold the second slot")
    run_c = c.submit("Once upon a time", "default", False, table("greedy"), 80, 0, api_name="/run")
    compare_d = d.submit("Once upon a time", "greedy", 0, 80, False, "", "default", "", api_name="/compare")
    wait_for(lambda: run_c.status().code == Status.IN_QUEUE and compare_d.status().code == Status.IN_QUEUE,
             "C and D to wait in the queue")

    c.predict(api_name="/stop")
    d.predict(api_name="/stop")
    at_stop = step(status_of(run_a))
    wait_for(lambda: step(status_of(run_a)) >= at_stop + 3, "A to go on decoding after C's and D's Stop")
    a.predict(api_name="/stop")
    status_a = run_a.result(timeout=TIMEOUT_S)[1]
    assert 'data-state="stopped"' in status_a and step(status_a) < LONG
    wait_for(lambda: step(status_of(run_b)) >= 3, "B to decode once A left the model")
    b.predict(api_name="/stop")
    status_b = run_b.result(timeout=TIMEOUT_S)[1]
    assert 'data-state="stopped"' in status_b and 3 <= step(status_b) < LONG

    run_c.result(timeout=TIMEOUT_S)
    updates = run_c.outputs()
    assert len(updates) == 1  # one update: the status line; it never streamed
    status_c = str(updates[0][1])
    assert 'data-state="stopped"' in status_c and step(status_c) == 0
    assert "stopped before it started" in status_c
    assert "pg-tok" not in str(updates)  # not one token decoded
    with pytest.raises(AppError, match="stopped before it started"):
        compare_d.result(timeout=TIMEOUT_S)
    assert real_lm.lock.acquire(timeout=30)  # nothing decodes any more
    real_lm.lock.release()


def test_a_stop_sent_when_nothing_runs_does_not_stop_the_next_run(server):
    session = client(server)
    session.predict(api_name="/stop")
    job = session.submit("Once upon a time", "default", False, table("greedy"), 6, 0, api_name="/run")
    html, status = job.result(timeout=TIMEOUT_S)[:2]
    assert 'data-state="done"' in status and step(status) >= 5
    assert html.count('class="pg-tok') == 6 and "stopped" not in html
    session.predict(api_name="/stop")
    result = session.predict("Once upon a time", "greedy", 0, 6, False, "", "default", "", api_name="/compare")
    assert not result["stopped"] and len(result["columns"][0]["tokens"]) == 6
