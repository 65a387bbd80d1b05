"""A session's decodings (waiting in the queue or running), its Stop, and the thread each decoding runs in.

    a run joins the queue   -> ``SessionRuns.join`` (the event's validator: Gradio calls it at submission)
    Stop                    -> sets the session's flag, only while one of its runs waits or runs
    a run starts            -> flag already set: it ends at once, "stopped before it started"
    the engine, every step  -> flag set: it ends the run after this step
    a run ends              -> ``leave``; the session's last run clears the flag (a later Stop starts anew)

Everything is a file named after the session, because the decoding may run in another process:
on ZeroGPU each decorated call runs in a forked worker, which a threading.Event set by the Stop
handler (in the server process) would never reach. The decoding runs in its own thread
(BackgroundRun), so it never waits for the page's updates.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr


STOP_DIR = Path(tempfile.gettempdir()) / f"sampler-playground-stops-{getattr(os, 'getuid', lambda: 0)()}"


class StopFlag:
    """A stop request that every process of this machine can set and see (``is_set``: one stat per step)."""

    def __init__(self, path: Path):
        self.path = path

    def set(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()

    def is_set(self) -> bool:
        return self.path.exists()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


class SessionRuns:
    """The decodings of one session (a browser tab, or one API client) that wait in the queue or run."""

    def __init__(self, session: str):
        name = hashlib.sha256(session.encode()).hexdigest()[:32]
        self.folder = STOP_DIR / name  # one ticket file per waiting or running decoding
        self.stop = StopFlag(STOP_DIR / f"{name}.stop")

    def tickets(self) -> list[Path]:
        """The session's waiting or running decodings, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.iterdir(), key=lambda p: p.name)

    def join(self) -> None:
        """A decoding joins the queue (its name sorts by the time it joined)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}").touch()

    def request_stop(self) -> bool:
        """Stop every decoding the session has waiting or running; True if there was one to stop."""
        if not self.tickets():
            return False  # nothing to stop: the next run must not inherit this Stop
        self.stop.set()
        return True

    def stopped(self) -> bool:
        return self.stop.is_set()

    def leave(self) -> None:
        """A decoding ended (or never started); after the session's last one, a Stop no longer counts."""
        tickets = self.tickets()
        if tickets:
            tickets[0].unlink(missing_ok=True)
        if len(tickets) <= 1:
            self.stop.clear()


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def join_queue(request: gr.Request, *inputs: Any) -> list[dict[str, Any]]:
    """The validator of every decoding event: Gradio runs it when the event joins the queue, so a Stop
    sent while the run waits there is counted. Every input is valid here (the run itself checks them)."""
    SessionRuns(session_of(request)).join()
    return [gr.validate(True, "")] * len(inputs)


def request_stop(request: gr.Request) -> None:
    """Stop the runs of the request's session, waiting or running (a running one after its current step)."""
    SessionRuns(session_of(request)).request_stop()


class RunStop:
    """What ends one decoding: its session's Stop, or its page going away mid-run (this decoding alone)."""

    def __init__(self, session_stop: StopFlag):
        self.session_stop = session_stop
        self.abandoned = threading.Event()

    def is_set(self) -> bool:
        return self.abandoned.is_set() or self.session_stop.is_set()


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
