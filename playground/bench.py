"""Benchmarks: ``python -m playground bench speed [--json]``; ``bench quality`` lives in bench_quality.py.

Every figure is a ratio of two timings taken in the same process, interleaved and repeated
(best of the repeats: interference only ever adds time), because the machines are noisy.
No timed assertion lives in tests.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch

from .cli import command
from .engine import ColumnSpec, Engine, RunOptions
from .models import load_model
from .samplers import SAMPLERS

BENCH_PROMPT = "The old lighthouse keeper climbed the stairs one last time, and"

# name -> fn(engine, args) -> {key: value}; each sampler's issue adds its own ratio here
SPEED_MEASURES: dict[str, Callable[[Engine, argparse.Namespace], dict[str, Any]]] = {}


def speed_measure(fn):
    SPEED_MEASURES[fn.__name__] = fn
    return fn


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[tuple[float, Any]]]:
    """Run each fn ``repeats`` times, round-robin, so that drifts in machine load hit all alike."""
    out: dict[str, list[tuple[float, Any]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].append(timed(fn))
    return out


def tokens_per_second(samples: list[tuple[float, int]]) -> float:
    return max(n / t for t, n in samples)


def engine_tokens(engine: Engine, specs: list[ColumnSpec], args, **options) -> int:
    opts = RunOptions(seed=args.seed, max_new_tokens=args.tokens, **options)
    run = engine.run(BENCH_PROMPT, specs, opts)
    return sum(len(c.tokens) for c in run.columns)


@speed_measure
def temperature_vs_generate(engine: Engine, args) -> dict[str, Any]:
    """Our temperature sampler's tok/s over model.generate's, same settings (T 0.8, top-k 40, top-p 0.92)."""
    lm = engine.lm
    ids = torch.tensor([lm.encode(BENCH_PROMPT)])

    def generate() -> int:
        torch.manual_seed(args.seed)
        with torch.inference_mode():
            out = lm.model.generate(ids, do_sample=True, temperature=0.8, top_k=40, top_p=0.92,
                                    max_new_tokens=args.tokens, pad_token_id=min(lm.eos_ids))
        return out.shape[1] - ids.shape[1]

    samples = interleaved({
        "ours": lambda: engine_tokens(engine, [ColumnSpec("temperature")], args),
        "generate": generate,
    }, args.repeats)
    ours, theirs = tokens_per_second(samples["ours"]), tokens_per_second(samples["generate"])
    return {"temperature_tok_s": round(ours, 2), "generate_tok_s": round(theirs, 2),
            "temperature_vs_generate": round(ours / theirs, 3)}


def four_columns() -> list[ColumnSpec]:
    """greedy, temperature, phase_slip, adaptive_entropy; temperature variants stand in for absent ones."""
    wanted = [ColumnSpec("greedy"), ColumnSpec("temperature")]
    stand_ins = iter([ColumnSpec("temperature", {"temperature": 1.0}, "temperature T=1.0"),
                      ColumnSpec("temperature", {"top_k": 0, "top_p": 1.0}, "temperature untruncated")])
    for name in ("phase_slip", "adaptive_entropy"):
        wanted.append(ColumnSpec(name) if name in SAMPLERS else next(stand_ins))
    return wanted


@speed_measure
def compare4_vs_single(engine: Engine, args) -> dict[str, Any]:
    """Wall time per decoding step of a 4-column batched compare over one temperature column alone."""
    def per_step(specs):
        def go():
            run = engine.run(BENCH_PROMPT, specs, RunOptions(seed=args.seed, max_new_tokens=args.tokens))
            return max(1, max(len(c.tokens) for c in run.columns))
        return go

    specs = four_columns()
    samples = interleaved({"four": per_step(specs), "single": per_step([ColumnSpec("temperature")])}, args.repeats)
    step = {k: min(t / n for t, n in v) for k, v in samples.items()}
    return {"compare4_columns": [s.label or s.sampler for s in specs],
            "compare4_vs_single": round(step["four"] / step["single"], 3)}


@speed_measure
def phase_slip_vs_temperature(engine: Engine, args) -> dict[str, Any]:
    """Phase-Slip tok/s over temperature sampling's, same T 0.65, top-k 40, top-p 0.92 (public: 0.37)."""
    sampling = {"temperature": 0.65, "top_k": 40, "top_p": 0.92}
    samples = interleaved({
        "phase_slip": lambda: engine_tokens(engine, [ColumnSpec("phase_slip", sampling)], args),
        "temperature": lambda: engine_tokens(engine, [ColumnSpec("temperature", sampling)], args),
    }, args.repeats)
    ours, theirs = tokens_per_second(samples["phase_slip"]), tokens_per_second(samples["temperature"])
    return {"phase_slip_tok_s": round(ours, 2), "phase_slip_temperature_tok_s": round(theirs, 2),
            "phase_slip_vs_temperature": round(ours / theirs, 3)}


@speed_measure
def adaptive_vs_temperature(engine: Engine, args) -> dict[str, Any]:
    """Adaptive entropy tok/s over temperature sampling's, each with its defaults and Kuramoto R off,
    so the ratio is the sampler's own cost (attention weights, alpha, lookahead rows when COLD);
    also an always-COLD variant (every token a 3-candidate lookahead) and the bench run's states."""
    no_r = {"record_order_parameter": False}
    always_cold = {"cold_point": 2.5, "hot_point": 3.0}
    rows: list = []  # the last timed adaptive run's, for the state counts

    def adaptive() -> int:
        column = engine.run(BENCH_PROMPT, [ColumnSpec("adaptive_entropy")],
                            RunOptions(seed=args.seed, max_new_tokens=args.tokens, **no_r)).columns[0]
        rows[:] = column.rows
        return len(column.tokens)

    samples = interleaved({
        "adaptive": adaptive,
        "always_cold": lambda: engine_tokens(engine, [ColumnSpec("adaptive_entropy", always_cold)], args, **no_r),
        "temperature": lambda: engine_tokens(engine, [ColumnSpec("temperature")], args, **no_r),
    }, args.repeats)
    tok_s = {k: tokens_per_second(v) for k, v in samples.items()}
    return {"adaptive_tok_s": round(tok_s["adaptive"], 2),
            "adaptive_temperature_tok_s": round(tok_s["temperature"], 2),
            "adaptive_vs_temperature": round(tok_s["adaptive"] / tok_s["temperature"], 3),
            "adaptive_always_cold_vs_temperature": round(tok_s["always_cold"] / tok_s["temperature"], 3),
            "adaptive_states": {s: sum(r.state == s for r in rows) for s in ("COLD", "MIXED", "HOT")},
            "adaptive_lookahead_tokens": sum(bool(r.extra.get("lookahead")) for r in rows)}


@speed_measure
def order_parameter_overhead(engine: Engine, args) -> dict[str, Any]:
    """Wall time of a greedy + temperature run that records Kuramoto R per token over the same run without."""
    specs = [ColumnSpec("greedy"), ColumnSpec("temperature")]

    def run(record: bool):
        return lambda: engine_tokens(engine, specs, args, record_order_parameter=record)

    samples = interleaved({"with_R": run(True), "without_R": run(False)}, args.repeats)
    seconds = {k: min(t for t, _ in v) for k, v in samples.items()}
    return {"order_parameter_with_s": round(seconds["with_R"], 3),
            "order_parameter_without_s": round(seconds["without_R"], 3),
            "order_parameter_overhead": round(seconds["with_R"] / seconds["without_R"], 3)}


def _add_bench(p: argparse.ArgumentParser) -> None:
    from .bench_quality import add_quality_arguments

    p.add_argument("what", choices=["speed", "quality"], help="which benchmark")
    p.add_argument("--model", default=None)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the best of them is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated measure names (default: all)")
    p.add_argument("--json", action="store_true")
    add_quality_arguments(p)  # bench quality's flags (bench_quality.py)


@command("bench", _add_bench)
def run_bench(args: argparse.Namespace) -> int:
    if args.what == "quality":
        from .bench_quality import run_quality_cli

        return run_quality_cli(args)
    engine = Engine(load_model(args.model))
    # warm-up of every sampler, and any per-model calibration (Phase-Slip's heads), before a clock starts
    engine.run(BENCH_PROMPT, list(SAMPLERS), RunOptions(max_new_tokens=4))
    names = args.only.split(",") if args.only else list(SPEED_MEASURES)
    result: dict[str, Any] = {"model": engine.lm.name, "tokens": args.tokens, "repeats": args.repeats,
                              "threads": torch.get_num_threads()}
    for name in names:
        result.update(SPEED_MEASURES[name](engine, args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0
