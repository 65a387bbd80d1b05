"""One Stop event per browser session, and the decoding thread that Stop reaches.

Stop sets the session's threading.Event, which the engine checks between two steps. The
decoding runs in its own thread (BackgroundRun), so it never waits for the page's updates.
"""
from __future__ import annotations

import threading

import gradio as gr


_stops: dict[str, threading.Event] = {}
_stops_lock = threading.Lock()


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


def _new_stop(session: str) -> threading.Event:
    event = threading.Event()
    with _stops_lock:
        _stops[session] = event
    return event


def _drop_stop(session: str, event: threading.Event) -> None:
    with _stops_lock:
        if _stops.get(session) is event:
            del _stops[session]


def request_stop(request: gr.Request) -> None:
    """Stop this session's run: the engine finishes the current step and returns."""
    with _stops_lock:
        event = _stops.get(_session(request))
    if event is not None:
        event.set()


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
