"""The Gradio playground: one prompt through several samplers, side by side, streamed.

One module per concern, each readable in one sitting:

    page.py      the layout (the components by name) and its events (each with an explicit api_name); launch()
    handlers.py  one function per event: what it shows, as a view
    views.py     the views: an event's outputs by name (a field left out keeps what the page showed)
    columns.py   the column list: table rows <-> ColumnSpecs; add, duplicate, remove, sweep
    scripts.py   the token menu (click a token: its alternatives) and the branch bridge
    render.py    HTML of the live parts: column cards, legend, status line; exports
    links.py     share links: settings <-> URL query (versioned)
    sessions.py  a session's waiting and running decodings, its Stop (across processes), the decoding thread
    backend.py   the calls into the backend: allowed models, the prompt counter, /compare
"""
from ..samplers import SAMPLERS, PlaygroundError
from .backend import SPACES_ALLOWED_MODELS, allowed_models, check_model, compare, prompt_count_html
from .links import read_query, share_query
from .page import build_app, launch
from .render import column_card, columns_html, entropy_colour, metrics_table, token_title
from .sessions import BackgroundRun, SessionRuns, request_stop
from . import columns
from .columns import HEADERS, SettingField, setting_fields, table_rows, table_specs

__all__ = ["HEADERS", "SAMPLERS", "SPACES_ALLOWED_MODELS", "BackgroundRun", "PlaygroundError", "SessionRuns",
           "SettingField", "allowed_models", "build_app", "check_model", "column_card", "columns", "columns_html",
           "compare", "entropy_colour", "launch", "metrics_table", "prompt_count_html", "read_query", "request_stop",
           "setting_fields", "share_query", "table_rows", "table_specs", "token_title"]
