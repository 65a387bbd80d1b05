"""One line on stderr for work that takes more than a few seconds (stdout stays a command's output)."""
from __future__ import annotations

import sys


def say(message: str) -> None:
    """Print ``message`` on stderr at once: what is being done, and roughly how long it takes."""
    print(message, file=sys.stderr, flush=True)
