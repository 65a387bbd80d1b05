"""Serve the app with the stand-in ``spaces`` (tests/zerogpu on sys.path), start a long run, Stop it
from this process, and print what happened as JSON (tests/test_zerogpu.py reads it)."""
from __future__ import annotations

import json
import os
import re
import socket
import time

import spaces  # the stand-in, before the app is imported
from gradio_client import Client

from playground import ui
from playground.columns import ColumnSpec

TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def steps(html: str) -> int:
    return int(re.search(r'data-step="(\d+)"', html).group(1))


demo = ui.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
try:
    client = Client(demo.local_url, verbose=False)
    table = {"headers": ui.HEADERS, "data": ui.table_rows([ColumnSpec("greedy"), ColumnSpec("temperature")])}
    job = client.submit("Once upon a time", "default", False, table, 1024, 0, api_name="/run")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # a few streamed steps, then Stop
        outputs = job.outputs()
        if outputs and steps(outputs[-1][1]) >= 2:
            break
        time.sleep(0.2)
    client.predict(api_name="/stop")
    html, status = job.result(timeout=TIMEOUT_S)[:2]
    api = client.predict("Once upon a time", "greedy", 0, 4, False, "", "default", "", api_name="/compare")
    print(json.dumps({
        "server_pid": os.getpid(), "moved": spaces.MOVED, "wrapped": sorted(spaces.WRAPPED),
        "calls": spaces.CALLS, "stopped": 'data-state="stopped"' in status, "steps": steps(status),
        "stopped_in_columns": "stopped" in html,
        "api_tokens": [len(c["tokens"]) for c in api["columns"]],
    }))
finally:
    demo.close()
