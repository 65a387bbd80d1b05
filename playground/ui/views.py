"""What an event shows, by name: one dataclass per group of outputs, each field named as its component.

A handler returns (or yields) one of these; a field it leaves out keeps what the page showed
(``gr.skip()``). ``outputs(page, View)`` lists the components an event updates, in field order,
and ``shows`` turns the handler's views into the values Gradio expects in that same order, so
no handler counts outputs or pads them.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable

import gradio as gr


def _keep() -> Any:
    return dataclasses.field(default_factory=gr.skip)


@dataclasses.dataclass
class RunView:
    """A run's outputs: the column cards, the status line, the plots, the metrics, the downloads, the link,
    and what explains it (its traces, where its columns part, the why panel)."""

    columns: Any = _keep()
    status: Any = _keep()
    signals: Any = _keep()
    heat_column: Any = _keep()
    heatmap: Any = _keep()
    metrics: Any = _keep()
    json_file: Any = _keep()
    csv_file: Any = _keep()
    share: Any = _keep()
    last_run: Any = _keep()
    traces: Any = _keep()  # the shown run's chain traces (traces.RunTraces), kept in the session
    parts: Any = _keep()
    why: Any = _keep()
    samples_plot: Any = _keep()  # one point per sample (more than one sample per column)
    first_token: Any = _keep()


@dataclasses.dataclass
class TrailView:
    """Where the shown run branched from: the breadcrumb, the Back button, the branch and Back's history."""

    breadcrumb: Any = _keep()
    back: Any = _keep()
    branch_state: Any = _keep()
    history: Any = _keep()


@dataclasses.dataclass
class BranchView(TrailView, RunView):
    """A branch run, or Back: a run's outputs and its trail."""


@dataclasses.dataclass
class SettingsView:
    """What a share link restores: the run's inputs, its branch point, and the status line."""

    prompt: Any = _keep()
    model: Any = _keep()
    chat: Any = _keep()
    table: Any = _keep()
    max_tokens: Any = _keep()
    seed: Any = _keep()
    samples: Any = _keep()
    branch_state: Any = _keep()
    breadcrumb: Any = _keep()
    back: Any = _keep()
    status: Any = _keep()


def outputs(page: Any, view: type) -> list[Any]:
    """The page's components that ``view`` names, in its field order."""
    return [getattr(page, f.name) for f in dataclasses.fields(view)]


def values(view: Any) -> tuple[Any, ...]:
    return tuple(getattr(view, f.name) for f in dataclasses.fields(view))


def shows(handler: Callable) -> Callable:
    """The handler as Gradio calls it: each view it returns or yields becomes its outputs' values."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def each(*args: Any, **kwargs: Any):
            for view in handler(*args, **kwargs):
                yield values(view)
        return each

    @functools.wraps(handler)
    def one(*args: Any, **kwargs: Any):
        return values(handler(*args, **kwargs))
    return one
