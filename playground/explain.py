"""Explain a run: one token's chain trace as a table, and ``python -m playground explain``.

    a Run in memory              -> its recorded traces (run.trace)
    a run's JSON with "traces"   -> those
    a run's JSON without them    -> the run decoded again to that token (the same columns, seed and
                                    options on the same model), its tokens checked against the file's

The table has the tracked tokens as rows and the stages as columns: each cell the token's p and
its rank after that stage; a removed token reads "removed (by STAGE)".
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from .errors import PlaygroundError
from .models import LoadedModel, add_model_arguments, model_from_arguments
from .runs import Parent, Run
from .tables import format_table


def _shown(text: str | None) -> str:
    return repr(text)[1:-1] if text is not None else "?"


def trace_table(trace: dict[str, Any]) -> list[dict[str, str]]:
    """The rows of a trace's stage table (one per tracked token), as the CLI prints it."""
    names = [s["name"] for s in trace["stages"]]
    rows = []
    for token in trace["tokens"]:
        row = {"token": ("▶ " if token["chosen"] else "  ") + f"'{_shown(token['text'])}'"}
        for name, p, rank in zip(names, token["probs"], token["ranks"]):
            row[name] = f"{p:.4f} #{rank}" if rank else ("removed" if token["removed_by"] == name else "0")
        rows.append(row)
    return rows


def stage_lines(trace: dict[str, Any]) -> list[str]:
    """One line per stage: its name and parameter, the support left, the entropy, the draw at u."""
    lines = []
    for s in trace["stages"]:
        draw = f"   draw at u: '{_shown(s.get('draw_text'))}'" if s["draw"] is not None else ""
        side = "   (beside the chain)" if s["side"] else ""
        lines.append(f"{s['name']:<20} {s['param']:<40} support {s['support']:>6,}   H {s['entropy']:.3f} nats"
                     f"{draw}{side}")
    return lines


def replay(lm: LoadedModel, data: dict[str, Any], step: int) -> Run:
    """The run of ``data`` (a run's JSON) decoded again up to token ``step``, on ``lm``, with traces."""
    from .engine import Engine, run_inputs

    if data.get("model") not in (None, lm.name):
        raise PlaygroundError(f"this run is of model {data['model']!r}, not {lm.name!r}: pass --model")
    specs, options = run_inputs(data)
    options = dataclasses.replace(options, max_new_tokens=step + 1, samples=1)  # the traces are sample 0's
    parent = Parent(**data["parent"]) if data.get("parent") else None
    run = Engine(lm).run(data["prompt"], specs, options, parent=parent)
    for c, (column, again) in enumerate(zip(data["columns"], run.columns)):
        wanted = [t["id"] for t in column["tokens"]][:step + 1]
        if again.tokens[:len(wanted)] != wanted:
            raise PlaygroundError(f"decoded again, column {c + 1} gives other tokens than the file's (another "
                                  f"machine, model or version?): the trace cannot be recovered here")
    return run


def trace(lm: LoadedModel | None, run: Run | dict[str, Any], column: int, step: int) -> dict[str, Any]:
    """Token ``step`` of column ``column`` (0-based): its chain trace, as JSON.

    ``run``: a Run, or a run's JSON (with its traces, or decoded again on ``lm`` to that token).
    """
    if isinstance(run, Run):
        return run.trace(column, step)
    columns = run.get("columns") or []
    if not 0 <= column < len(columns):
        raise PlaygroundError(f"column must be in 1..{len(columns)}, got {column + 1}")
    n = len(columns[column]["tokens"])
    if not 0 <= step < n:
        raise PlaygroundError(f"step must be in 1..{n} (the tokens of column {column + 1}), got {step + 1}")
    if "traces" in columns[column]:
        return columns[column]["traces"][step]
    if lm is None:
        raise PlaygroundError("this run's JSON has no traces: give the model to decode it again")
    return replay(lm, run, step).trace(column, step)


def format_trace(trace: dict[str, Any], label: str = "") -> str:
    """A trace as text: how the token was chosen, the stages, then the token table."""
    chosen = next(t for t in trace["tokens"] if t["chosen"])
    how = {"draw": f"drawn at u = {trace['u']:.6f}", "own": "chosen by the sampler's own rule (not by u)",
           "lookahead": "chosen by the lookahead (attention entropy, not u)"}[trace["how"]]
    head = f"{label}  token {trace['step'] + 1}: '{_shown(chosen['text'])}' (id {trace['token']}), {how}"
    if trace.get("interval"):
        low, high = trace["interval"]
        head += f"; its u interval [{low:.6f}, {high:.6f})"
    table = trace_table(trace)
    return "\n".join([head.strip(), "", *stage_lines(trace), "", format_table(table, list(table[0]))])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_json", metavar="RUN.json", help="a run's JSON (compare --json, or the page's download)")
    p.add_argument("--column", type=int, required=True, help="the column, counted from 1 as the page counts")
    p.add_argument("--step", type=int, required=True, help="the token, counted from 1 as the page counts")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print the trace as JSON")


def run(args: argparse.Namespace) -> int:
    """Print one token's chain trace: every stage of its sampler's decision, as a table"""
    try:
        data = json.loads(Path(args.run_json).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PlaygroundError(f"cannot read {args.run_json}: {exc}") from None
    if not isinstance(data, dict) or "columns" not in data:
        raise PlaygroundError(f"{args.run_json} is not a run's JSON (no columns)")
    column, step = args.column - 1, args.step - 1
    needs_model = not all("traces" in c for c in data["columns"])
    result = trace(model_from_arguments(args) if needs_model else None, data, column, step)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(format_trace(result, f"column {args.column} ({data['columns'][column]['label']})"))
    return 0
