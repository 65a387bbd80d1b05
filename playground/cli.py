"""Command line: ``python -m playground compare|bench|...``.

Bad input exits with status 2 and one line on stderr that names the problem; never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from .samplers import SAMPLERS, PlaygroundError

# subcommand name -> (add its arguments, run it); other modules register theirs here
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``fn(args) -> exit status`` as the subcommand ``name``."""
    def register(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (add_arguments, fn)
        return fn
    return register


def parse_sets(items: list[str] | None, samplers: list[str]) -> dict[str, dict[str, str]]:
    """``--set SAMPLER.KEY=VALUE`` items -> {sampler: {key: value}}, each naming a sampler of the run."""
    overrides: dict[str, dict[str, str]] = {}
    for item in items or []:
        target, eq, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not eq or not dot or not key:
            raise PlaygroundError(f"--set {item!r}: expected SAMPLER.KEY=VALUE, e.g. temperature.top_k=0")
        if name not in samplers:
            raise PlaygroundError(f"--set {item!r}: sampler {name!r} is not in this run ({', '.join(samplers)})")
        overrides.setdefault(name, {})[key] = value
    return overrides


def _add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--samplers", default="greedy,temperature",
                   help=f"comma-separated, from: {', '.join(SAMPLERS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=50)
    p.add_argument("--model", default=None, help="hub id or folder (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    p.add_argument("--set", action="append", metavar="SAMPLER.KEY=VALUE", help="change one setting")
    p.add_argument("--probe-layer", type=int, default=None, help="layer whose Kuramoto R is reported")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of dicts (pandas renders it)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=columns)
    return frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")


@command("compare", _add_compare)
def run_compare(args: argparse.Namespace) -> int:
    from .engine import ColumnSpec, Engine, RunOptions, parse_columns
    from .models import load_model
    from .samplers import make_settings

    names = [s.strip() for s in args.samplers.split(",") if s.strip()]
    overrides = parse_sets(args.set, names)
    specs = parse_columns([ColumnSpec(n, overrides.get(n, {})) for n in names])
    for spec in specs:  # refuse bad settings before the model loads
        make_settings(spec.sampler, spec.settings)
    options = RunOptions(seed=args.seed, max_new_tokens=args.max_new_tokens, chat=args.chat,
                         probe_layer=args.probe_layer)
    lm = load_model(args.model)
    result = Engine(lm).run(args.prompt, specs, options).to_json()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
        return 0
    print(f"model: {result['model']}   seed: {result['seed']}   prompt: {args.prompt!r}\n")
    for col in result["columns"]:
        print(f"--- {col['label']} ({col['finish_reason']})")
        print(args.prompt + col["text"] + "\n")
    table = [{"column": c["label"], **c["metrics"]} for c in result["columns"]]
    print(format_table(table, list(table[0])))
    return 0


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="hub id or folder (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--text", default=None, help="calibration text (default: the built-in one)")
    p.add_argument("--set", action="append", metavar="phase_slip.KEY=VALUE",
                   help="search_layers, n_heads or perturbation_window")
    p.add_argument("--json", action="store_true", help="print one JSON object")


@command("calibrate", _add_calibrate)
def run_calibrate(args: argparse.Namespace) -> int:
    """Print Phase-Slip's calibrated heads of a model, with every candidate's score."""
    from .calibration import calibrate_heads
    from .models import load_model
    from .samplers import make_settings
    from .samplers.phase_slip import check_against_model, format_heads

    settings = make_settings("phase_slip", parse_sets(args.set, ["phase_slip"]).get("phase_slip", {}))
    lm = load_model(args.model)
    check_against_model(settings, lm)
    result = calibrate_heads(lm, args.text, search_layers=settings.search_layers, n_heads=settings.n_heads,
                             window=settings.perturbation_window)
    if args.json:
        print(json.dumps({"model": lm.name, "heads": format_heads(result.heads), "candidates": result.rows()}))
        return 0
    print(f"model: {lm.name}   eligible heads (layer.kv_head): {format_heads(result.heads) or 'none'}\n")
    print(format_table(result.rows(), ["layer", "kv_head", "score", "kl", "flip_rate", "structural", "eligible"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import bench  # noqa: F401  (registers the bench command)
    from . import kuramoto_report  # noqa: F401  (registers the kuramoto-report command)

    parser = argparse.ArgumentParser(prog="python -m playground", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, fn) in COMMANDS.items():
        p = sub.add_parser(name)
        add_arguments(p)
        p.set_defaults(run=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
