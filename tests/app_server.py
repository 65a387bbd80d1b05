"""The app served on a free loopback port, for the tests that use it as a user would (browser, gradio_client)."""
from __future__ import annotations

import socket
from contextlib import contextmanager
from typing import Iterator

from playground import ui


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served_app() -> Iterator[object]:
    """``ui.launch`` on 127.0.0.1 at a free port, closed afterwards; ``demo.local_url`` is its address."""
    demo = ui.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield demo
    finally:
        demo.close()
