"""Command line: ``python -m playground compare|bench|...``.

Bad input exits with status 2 and one line on stderr that names the problem; never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .samplers import SAMPLERS, PlaygroundError
from .tables import format_table

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


def run_compare(args: argparse.Namespace) -> int:
    """Run samplers side by side on one prompt; print their texts and metrics (or the run as JSON)."""
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


def commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]]:
    """The subcommands: name -> (one-line description, add its arguments, run it)."""
    from . import bench, kuramoto_report

    def first_line(doc: str | None) -> str:
        return (doc or "").strip().splitlines()[0].rstrip(".")

    return {
        "compare": (first_line(run_compare.__doc__), _add_compare, run_compare),
        "calibrate": (first_line(run_calibrate.__doc__), _add_calibrate, run_calibrate),
        "bench": ("Benchmarks: speed ratios measured in one run, or the quality table", bench.add_arguments, bench.run),
        "kuramoto-report": ("Does the per-token Kuramoto R separate greedy from T = 1 text? (AUC per prompt)",
                            kuramoto_report.add_arguments, kuramoto_report.run),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m playground",
                                     description="The sampler playground's command line (the app: python app.py).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (description, add_arguments, fn) in commands().items():
        p = sub.add_parser(name, help=description, description=description)
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
