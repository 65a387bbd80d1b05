"""One Stop flag per browser session, and the decoding thread that Stop reaches.

Stop sets the session's flag, which the engine checks between two steps. The flag is a file
named after the session, because the decoding may run in another process: on ZeroGPU each
decorated call runs in a forked worker, which a threading.Event set by the Stop handler (in
the server process) would never reach. The decoding runs in its own thread (BackgroundRun),
so it never waits for the page's updates.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import gradio as gr


STOP_DIR = Path(tempfile.gettempdir()) / f"sampler-playground-stops-{getattr(os, 'getuid', lambda: 0)()}"


class StopFlag:
    """A stop request that every process of this machine can set and see (``is_set``: one stat per step)."""

    def __init__(self, session: str):
        self.path = STOP_DIR / hashlib.sha256(session.encode()).hexdigest()[:32]

    def set(self) -> None:
        STOP_DIR.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _new_stop(session: str) -> StopFlag:
    """The flag of a run that starts now: a Stop sent before it does not count."""
    flag = StopFlag(session)
    flag.clear()
    return flag


def _drop_stop(session: str, flag: StopFlag) -> None:
    flag.clear()


def request_stop(request: gr.Request) -> None:
    """Stop this session's run: the engine finishes the current step and returns."""
    StopFlag(_session(request)).set()


class BackgroundRun:
    """Drives an engine stream in a thread, so that decoding never waits for the page updates.

    The first step (prefill) runs in the caller, so bad input raises there as a PlaygroundError.
    """

    def __init__(self, runs):
        self.run = next(runs)
        self._runs, self._error = runs, None
        self._thread = threading.Thread(target=self._drive, daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            for self.run in self._runs:
                pass
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds; True once the run has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self):
        """The finished run (re-raising what stopped the thread, if anything did)."""
        self.wait(None)
        if self._error is not None:
            raise self._error
        return self.run
