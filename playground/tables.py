"""Plain-text tables for the command line."""
from __future__ import annotations

from typing import Any


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of dicts (pandas renders it)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")
