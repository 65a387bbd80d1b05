"""The Gradio playground: one prompt through several samplers, side by side, streamed.

One module per concern, each readable in one sitting:

    page.py      the Blocks layout and its events (each with an explicit api_name); launch()
    columns.py   the column list: table rows <-> ColumnSpecs; add, duplicate, remove, sweep
    scripts.py   the token menu (click a token: its alternatives) and the branch bridge
    render.py    HTML of the live parts: column cards, legend, status line; exports
    links.py     share links: settings <-> URL query (versioned)
    sessions.py  one Stop event per browser session; the decoding thread Stop reaches
    backend.py   the calls into the backend: allowed models, the prompt counter, /compare
"""
from ..samplers import SAMPLERS, PlaygroundError
from .backend import SPACES_ALLOWED_MODELS, allowed_models, check_model, compare, prompt_count_html
from .links import read_query, share_query
from .page import build_app, launch
from .render import column_card, columns_html, entropy_colour, metrics_table, token_title
from .sessions import BackgroundRun, _drop_stop, _new_stop, request_stop
from . import columns
from .columns import HEADERS, SettingField, setting_fields, table_rows, table_specs

__all__ = ["HEADERS", "SAMPLERS", "columns", "SPACES_ALLOWED_MODELS", "BackgroundRun", "PlaygroundError", "SettingField", "allowed_models",
           "build_app", "check_model", "column_card", "columns_html", "compare", "entropy_colour",
           "launch", "metrics_table", "prompt_count_html", "read_query", "request_stop", "setting_fields",
           "share_query", "table_rows", "table_specs", "token_title", "_drop_stop", "_new_stop"]
