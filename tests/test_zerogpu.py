"""ZeroGPU with a stand-in ``spaces`` (tests/zerogpu/spaces): the decoding functions are
wrapped with a duration sized per call, the model is asked onto cuda at start-up, each call runs in
another process, and the Stop button (this process) still ends that process's decoding loop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from playground import ui
from playground.ui import backend
from playground.ui.sessions import SessionRuns

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(real_lm):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "zerogpu"), str(ROOT)])}
    env.pop("PLAYGROUND_DEVICE", None)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "zerogpu" / "serve_and_stop.py")], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[0])


def test_the_model_is_asked_onto_cuda_at_start_up(served):
    assert "cuda" in served["moved"]


def test_the_decoding_functions_are_wrapped_and_run_in_another_process(served):
    assert {"stream", "start_branch", "compare"} <= set(served["wrapped"])
    assert [c["name"] for c in served["calls"]] == ["stream", "compare"]
    assert all(c["pid"] != served["server_pid"] for c in served["calls"])


def test_each_call_asks_for_a_duration_sized_by_tokens_and_columns(served):
    stream, api = served["calls"]
    assert stream["seconds"] == backend.gpu_seconds(1024, 2)  # the page: 1,024 tokens, 2 columns
    assert api["seconds"] == backend.gpu_seconds(4, 1)  # /compare: 4 tokens of greedy
    assert api["seconds"] < stream["seconds"]


def test_stop_from_the_server_process_ends_the_loop_in_the_worker(served):
    assert served["stopped"] and served["stopped_in_columns"]
    assert served["steps"] < 1024
    assert served["api_tokens"] == [4]  # and the next call decodes normally


def test_gpu_seconds_grow_with_the_work_within_the_limits():
    small, wide, long = backend.gpu_seconds(8, 1), backend.gpu_seconds(512, 8), backend.gpu_seconds(1024, 8)
    assert backend.GPU_SECONDS_MIN == small < wide < long <= backend.GPU_SECONDS_MAX
    assert backend.gpu_seconds(1024, 8) > backend.gpu_seconds(1024, 2) > backend.gpu_seconds(256, 2)
    assert backend.gpu_seconds("not a number", 4) == backend.gpu_seconds(1024, 4)


def test_a_stop_sent_in_another_process_is_seen_here():
    runs = SessionRuns("zerogpu-test-session")
    runs.join()  # in this process: the run waits (the server's validator)
    assert not runs.stopped()
    code = "from playground.ui.sessions import SessionRuns; assert SessionRuns('zerogpu-test-session').request_stop()"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    assert runs.stopped() and not SessionRuns("another-session").stopped()
    runs.leave()
    assert not runs.stopped()


def test_a_gpu_space_allows_the_bigger_models(monkeypatch):
    monkeypatch.delenv("PLAYGROUND_ALLOWED_MODELS", raising=False)
    monkeypatch.setenv("SPACE_ID", "someone/playground")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ui.allowed_models() == list(ui.SPACES_ALLOWED_MODELS)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ui.allowed_models() == [*ui.SPACES_ALLOWED_MODELS, "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                                   "Qwen/Qwen2.5-1.5B-Instruct"]
    assert ui.check_model("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
