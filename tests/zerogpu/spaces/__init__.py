"""A stand-in for Hugging Face's ``spaces`` package on ZeroGPU, for tests/test_zerogpu.py.

Like ZeroGPU it reports CUDA as available at start-up and records (without doing) the moves of
modules to ``cuda``; ``GPU(duration=...)`` runs each call of the decorated function in a forked
worker process and streams its results back through a pipe. It records what it wrapped, the
duration each call asked for, and the worker's pid.
"""
from __future__ import annotations

import functools
import inspect
import multiprocessing
import os

import torch

MOVED: list[str] = []  # devices modules were asked onto
WRAPPED: dict[str, object] = {}  # decorated function name -> its duration
CALLS: list[dict] = []  # one per call: name, seconds asked, worker pid

torch.cuda.is_available = lambda: True
_module_to = torch.nn.Module.to


def _to(self, *args, **kwargs):
    device = args[0] if args else kwargs.get("device")
    if isinstance(device, (str, torch.device)) and str(device).startswith("cuda"):
        MOVED.append(str(device))
        return self  # recorded: the real ZeroGPU moves the weights when a call gets the GPU
    return _module_to(self, *args, **kwargs)


torch.nn.Module.to = _to


def _work(task, args, kwargs, conn) -> None:
    try:
        if inspect.isgeneratorfunction(task):
            for value in task(*args, **kwargs):
                conn.send(("yield", os.getpid(), value))
        else:
            conn.send(("return", os.getpid(), task(*args, **kwargs)))
    except BaseException as exc:  # noqa: BLE001  (handed to the caller)
        conn.send(("error", os.getpid(), exc))
    conn.send(("done", os.getpid(), None))
    conn.close()


def _results(name, seconds, task, args, kwargs):
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_work, args=(task, args, kwargs, send), daemon=True)
    worker.start()
    send.close()
    CALLS.append({"name": name, "seconds": seconds, "pid": worker.pid})
    try:
        while True:
            kind, _, value = receive.recv()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield kind, value
    finally:
        worker.join(timeout=60)


def GPU(task=None, *, duration=None, size=None):  # noqa: N802  (the real package's name)
    def wrap(fn):
        WRAPPED[fn.__name__] = duration

        def seconds(args, kwargs):
            return duration(*args, **kwargs) if callable(duration) else duration

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def generator(*args, **kwargs):
                for _, value in _results(fn.__name__, seconds(args, kwargs), fn, args, kwargs):
                    yield value
            return generator

        @functools.wraps(fn)
        def function(*args, **kwargs):
            for _, value in _results(fn.__name__, seconds(args, kwargs), fn, args, kwargs):
                return value
        return function

    return wrap(task) if task is not None else wrap
