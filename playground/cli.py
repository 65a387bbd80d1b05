"""Command line: ``python -m playground compare|bench|...``.

Bad input exits with status 2 and one line on stderr that names the problem; never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from .models import add_model_arguments, model_from_arguments
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
    p.add_argument("--samplers", default=None,
                   help=f"comma-separated, one column each at its defaults, from: {', '.join(SAMPLERS)} "
                        "(default: greedy,temperature when no --column, --preset or --sweep is given)")
    p.add_argument("--column", action="append", metavar="SAMPLER:KEY=VALUE,...",
                   help="one column: a sampler and its settings, e.g. 'temperature:temperature=1.3,min_p=0.1' "
                        "(the key label= names the column); repeatable")
    p.add_argument("--preset", action="append", metavar="NAME", help="one column from a preset (see `presets`); "
                   "repeatable")
    p.add_argument("--sweep", action="append", metavar="SAMPLER.KEY=V1,V2,...",
                   help="one column per value, e.g. temperature.temperature=0.5,0.8,1.1; repeatable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=50)
    add_model_arguments(p)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    p.add_argument("--set", action="append", metavar="SAMPLER.KEY=VALUE", help="change one setting")
    p.add_argument("--probe-layer", type=int, default=None, help="layer whose Kuramoto R is reported")
    p.add_argument("--samples", type=int, default=1,
                   help="samples per column, 1..32; sample i is seeded seed + i, paired across columns "
                        "(docs/samples.md)")
    p.add_argument("--reference", type=int, default=1,
                   help="the column (1-based) the others are compared with, sample by sample (default: the first)")
    p.add_argument("--explain", action="store_true", help="after the texts, where each pair of columns parts and why")
    p.add_argument("--traces", action="store_true", help="with --json: every token's chain trace too")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def compare_columns(args: argparse.Namespace) -> list:
    """The run's columns, in order: --samplers, then --column, --preset and --sweep as given.

    ``--set SAMPLER.KEY=VALUE`` changes the --samplers columns and the --sweep columns of that sampler.
    """
    from .columns import ColumnSpec, check_columns, parse_column, parse_sweep, preset, sweep

    explicit = bool(args.column or args.preset or args.sweep)
    samplers = args.samplers if args.samplers is not None else ("" if explicit else "greedy,temperature")
    names = [s.strip() for s in samplers.split(",") if s.strip()]
    sweeps = [parse_sweep(text) for text in args.sweep or []]
    overrides = parse_sets(args.set, names + [s for s, _, _ in sweeps])
    specs = [ColumnSpec(n, overrides.get(n, {})) for n in names]
    specs += [parse_column(text) for text in args.column or []]
    specs += [preset(name) for name in args.preset or []]
    for sampler, key, values in sweeps:
        specs += sweep(ColumnSpec(sampler, overrides.get(sampler, {})), key, values)
    return check_columns(specs)  # refuse bad settings before the model loads


def run_compare(args: argparse.Namespace) -> int:
    """Run columns (samplers, configurations, presets, sweeps) side by side on one prompt; print texts and metrics."""
    from .engine import Engine, RunOptions
    specs = compare_columns(args)
    if not 1 <= args.reference <= len(specs):
        raise PlaygroundError(f"--reference must be a column in 1..{len(specs)}, got {args.reference}")
    options = RunOptions(seed=args.seed, max_new_tokens=args.max_new_tokens, chat=args.chat,
                         probe_layer=args.probe_layer, samples=args.samples, reference=args.reference - 1)
    lm = model_from_arguments(args)
    result = Engine(lm).run(args.prompt, specs, options).to_json(traces=args.traces)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
        return 0
    print(f"model: {result['model']}   seed: {result['seed']}   prompt: {args.prompt!r}\n")
    for col in result["columns"]:
        print(f"--- {col['label']} ({col['finish_reason']})")
        print(args.prompt + col["text"] + "\n")
    table = [{"column": c["label"], **c["metrics"]} for c in result["columns"]]
    print(format_table(table, list(table[0])))
    if args.explain:
        print("\nwhere the columns part:")
        print("\n".join(f"  {d['sentence']}" for d in result["divergences"]) or "  (one column: nothing to compare)")
    if options.samples > 1:
        print_samples(result)
    return 0


def print_samples(result: dict) -> None:
    """Each column's summary over its samples, then its paired comparison with the reference column."""
    from .samples import PAIRED_METRICS

    def interval(stats: dict) -> str:
        ci = stats.get("ci95")
        return f"{stats['mean']:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{stats['mean']:.4g}"

    n = result["samples"]
    print(f"\n{n} samples per column (sample i: seed {result['seed']} + i); mean [95% t interval]")
    summary = [{"column": c["label"] + (" (decoded once)" if c["decoded_once"] else ""),
                **{m: interval(c["sample_summary"]["metrics"][m]) for m in PAIRED_METRICS},
                "pooled distinct-2": f"{c['sample_summary']['pooled']['distinct_2']:.4g}",
                "distinct texts": f"{c['sample_summary']['distinct_texts']}/{n}"} for c in result["columns"]]
    print(format_table(summary, list(summary[0])))
    ref = result["columns"][result["reference_column"]]["label"]
    print(f"\npaired with {ref!r}, sample by sample: mean difference [95% paired t interval], wins/ties/losses")
    paired = [{"column": c["label"],
               **{m: f"{interval({'mean': p['mean_difference'], 'ci95': p['ci95']})} "
                     f"{p['wins']}/{p['ties']}/{p['losses']}" for m, p in
                  ((m, c["paired"][m]) for m in PAIRED_METRICS)}}
              for i, c in enumerate(result["columns"]) if i != result["reference_column"]]
    if paired:
        print(format_table(paired, list(paired[0])))


def _add_presets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_presets(args: argparse.Namespace) -> int:
    """List the presets (named columns) with what each one is."""
    from .columns import PRESETS, format_settings

    rows = [{"preset": p.name, "column": f"{p.sampler}:{format_settings(dict(p.settings))}".rstrip(":"),
             "description": p.description} for p in PRESETS.values()]
    if args.json:
        print(json.dumps({"presets": rows}, ensure_ascii=False))
        return 0
    print(format_table(rows, ["preset", "column", "description"]))
    return 0


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("--text", default=None, help="calibration text (default: the built-in one)")
    p.add_argument("--set", action="append", metavar="phase_slip.KEY=VALUE",
                   help="search_layers, n_heads or perturbation_window")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run_calibrate(args: argparse.Namespace) -> int:
    """Print Phase-Slip's calibrated heads of a model, with every candidate's score."""
    from .calibration import calibrate_heads
    from .samplers import make_settings
    from .samplers.phase_slip import check_against_model, format_heads

    settings = make_settings("phase_slip", parse_sets(args.set, ["phase_slip"]).get("phase_slip", {}))
    lm = model_from_arguments(args)
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
    from . import bench, explain, kuramoto_report
    from .phasegpt import commands as phasegpt

    def first_line(doc: str | None) -> str:
        return (doc or "").strip().splitlines()[0].rstrip(".")

    return {
        "compare": (first_line(run_compare.__doc__), _add_compare, run_compare),
        "presets": (first_line(run_presets.__doc__), _add_presets, run_presets),
        "calibrate": (first_line(run_calibrate.__doc__), _add_calibrate, run_calibrate),
        "explain": (first_line(explain.run.__doc__), explain.add_arguments, explain.run),
        "bench": ("Benchmarks: speed ratios measured in one run, or the quality table", bench.add_arguments, bench.run),
        "kuramoto-report": ("Does the per-token Kuramoto R separate greedy from T = 1 text? (AUC per prompt)",
                            kuramoto_report.add_arguments, kuramoto_report.run),
        "phasegpt": (phasegpt.DESCRIPTION, phasegpt.add_arguments, phasegpt.run),
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
