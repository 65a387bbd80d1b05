"""A thread lets go of its OpenMP workers: the process's thread count falls back."""
from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from playground.openmp import release_workers


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(torch.get_num_threads() < 2 or not os.path.isdir("/proc/self/task"),
                    reason="one intra-op thread starts no OpenMP workers")
def test_a_thread_that_ran_a_parallel_kernel_ends_its_workers_when_it_lets_go():
    seen = {}

    def work() -> None:
        before = _threads()
        torch.randn(512, 512) @ torch.randn(512, 512)  # a parallel region: this thread's pool starts
        seen["pool"] = _threads() - before
        seen["released"] = release_workers()
        deadline = time.monotonic() + 5  # the workers end as they wake; another test's thread may end meanwhile
        while _threads() > before and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["after"] = _threads() - before

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    if not seen["released"]:
        pytest.skip("torch's parallel backend here is not an OpenMP runtime that can pause")
    assert seen["pool"] >= 1 and seen["after"] <= 0


def test_letting_go_twice_and_working_again_gives_the_same_result():
    a, b = torch.randn(300, 200), torch.randn(200, 100)
    expected = a @ b
    release_workers()
    release_workers()
    assert torch.equal(a @ b, expected)


def test_a_shared_stream_lets_go_in_the_thread_that_prefilled_it(tiny_llama, monkeypatch):
    from playground import engine as engine_module
    from playground.engine import Engine, RunOptions

    calls = []
    monkeypatch.setattr(engine_module, "release_workers", lambda: calls.append(threading.get_ident()))
    stream = Engine(tiny_llama).stream("Hello world", ["greedy", "temperature"], RunOptions(seed=1, max_new_tokens=4),
                                       shared=True)
    first = next(stream)
    assert first.step == 0 and calls == [threading.get_ident()]  # after the prefill, before the loop decodes
    runs = list(stream)
    assert runs[-1].done and calls == [threading.get_ident()] * 2  # and once more as the stream ends


def test_loading_a_model_lets_go_of_the_loading_threads_workers_once(tiny_llama, tmp_path, monkeypatch):
    from playground import models

    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    calls = []
    monkeypatch.setattr(models, "release_workers", lambda: calls.append(threading.get_ident()))
    monkeypatch.setattr(models, "_loaded", {})
    lm = models.load_model(str(tmp_path), device="cpu", dtype="float32", stock=True)
    assert lm.model.config.num_hidden_layers == 4 and calls == [threading.get_ident()]
    assert models.load_model(str(tmp_path), device="cpu", dtype="float32", stock=True) is lm
    assert len(calls) == 1  # a model already loaded hands nothing over: nothing to let go
