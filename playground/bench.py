"""Benchmarks: ``python -m playground bench speed [--json]``; ``bench quality`` lives in bench_quality.py.

Every figure is a ratio of two timings taken in the same process, interleaved and repeated
(best of the repeats: interference only ever adds time), because the machines are noisy.
No timed assertion lives in tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from typing import Any, Callable

import torch

from .columns import ColumnSpec, column_labels, preset, sweep
from .engine import Engine, RunOptions
from .kernels import MEASURED_ROWS, packed_bytes
from .models import PHASEGPT_MODEL, add_model_arguments, load_model, load_stock_model, model_from_arguments
from .progress import say
from .samplers import SAMPLERS, PlaygroundError
from .timing import interleaved, tokens_per_second

BENCH_PROMPT = "The old lighthouse keeper climbed the stairs one last time, and"

# name -> fn(engine, args) -> {key: value}; a sampler's module adds its own ratio here
SPEED_MEASURES: dict[str, Callable[[Engine, argparse.Namespace], dict[str, Any]]] = {}


def speed_measure(fn):
    SPEED_MEASURES[fn.__name__] = fn
    return fn


def engine_tokens(engine: Engine, specs: list[ColumnSpec], args, prompt: str = BENCH_PROMPT, **options) -> int:
    opts = RunOptions(**{"seed": args.seed, "max_new_tokens": args.tokens, **options})
    run = engine.run(prompt, specs, opts)
    return sum(len(c.tokens) for c in run.columns)


LONG_PROMPT = "word " * 3000  # 3,001 tokens
LONG_PROMPT_NEW_TOKENS = 8


def _rss_gb(key: str = "VmRSS") -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1e6


def peak_rss_growth_gb(fn: Callable[[], Any]) -> float | None:
    """Peak resident memory while ``fn`` runs minus the resident memory before it (Linux; else None)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak, to the current resident size
        before = _rss_gb()
    except OSError:
        fn()
        return None
    fn()
    return _rss_gb("VmHWM") - before


def _stock_generate(model: Any, ids: torch.Tensor, new_tokens: int, seed: int, pad: int) -> Callable[[], int]:
    """``model.generate`` with the temperature column's defaults (T 0.8, top-k 40, top-p 0.92); returns its tokens."""
    def generate() -> int:
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = model.generate(ids, do_sample=True, temperature=0.8, top_k=40, top_p=0.92,
                                 max_new_tokens=new_tokens, pad_token_id=pad)
        return out.shape[1] - ids.shape[1]
    return generate


def stock_generate(lm: Any, args, prompt: str = BENCH_PROMPT, new_tokens: int | None = None) -> Callable[[], int]:
    """The baseline of every speed figure: stock transformers (``load_stock_model``: loaded on its own, on
    ``lm``'s device and dtype) running ``generate`` on ``prompt``, the temperature column's settings."""
    stock = load_stock_model(args.model, lm.device, lm.dtype)
    ids = torch.tensor([lm.encode(prompt)], device=lm.device)
    return _stock_generate(stock, ids, new_tokens or args.tokens, args.seed, min(lm.eos_ids))


@speed_measure
def temperature_vs_generate(engine: Engine, args) -> dict[str, Any]:
    """Our temperature sampler's tok/s over ``generate``'s, same settings (T 0.8, top-k 40, top-p 0.92):
    against stock transformers (a separately loaded, unmodified model with its default attention: what
    a user would run instead), and against ``generate`` on our own loaded model (same kernels).

    The headline runs without Kuramoto R, the same work as ``generate`` (no attention weights: sdpa);
    ``temperature_with_R_vs_stock_generate`` is the page's default, R recorded (eager attention)."""
    lm = engine.lm
    ids = torch.tensor([lm.encode(BENCH_PROMPT)], device=lm.device)
    samples = interleaved({
        "ours": lambda: engine_tokens(engine, [ColumnSpec("temperature")], args, record_order_parameter=False),
        "ours_with_R": lambda: engine_tokens(engine, [ColumnSpec("temperature")], args),
        "stock": stock_generate(lm, args),
        "same_model": _stock_generate(lm.model, ids, args.tokens, args.seed, min(lm.eos_ids)),
    }, args.repeats)
    tok_s = {k: tokens_per_second(v) for k, v in samples.items()}
    return {"temperature_tok_s": round(tok_s["ours"], 2), "stock_generate_tok_s": round(tok_s["stock"], 2),
            "temperature_vs_stock_generate": round(tok_s["ours"] / tok_s["stock"], 3),
            "temperature_with_R_tok_s": round(tok_s["ours_with_R"], 2),
            "temperature_with_R_vs_stock_generate": round(tok_s["ours_with_R"] / tok_s["stock"], 3),
            "same_model_generate_tok_s": round(tok_s["same_model"], 2),
            "temperature_vs_generate_same_model": round(tok_s["ours"] / tok_s["same_model"], 3),
            "kernel_by_rows": {str(r): {shape: by_rows[r] for shape, by_rows in lm.kernels.items()}
                               for r in MEASURED_ROWS}}


def four_columns() -> list[ColumnSpec]:
    """greedy, temperature, phase_slip, adaptive_entropy; temperature variants stand in for absent ones."""
    wanted = [ColumnSpec("greedy"), ColumnSpec("temperature")]
    stand_ins = iter([ColumnSpec("temperature", {"temperature": 1.0}, "temperature T=1.0"),
                      ColumnSpec("temperature", {"top_k": 0, "top_p": 1.0}, "temperature untruncated")])
    for name in ("phase_slip", "adaptive_entropy"):
        wanted.append(ColumnSpec(name) if name in SAMPLERS else next(stand_ins))
    return wanted


def eight_columns() -> list[ColumnSpec]:
    """The four columns, plus four more configurations of temperature: five columns of one sampler."""
    extra = [*sweep(ColumnSpec("temperature"), "temperature", [0.5, 1.1]), preset("min-p-0.1"), preset("top-p-0.9")]
    return four_columns() + extra


def forward_passes(engine: Engine, specs: list[ColumnSpec], args) -> float:
    """Forward passes of the model per decoding step (1.0: every column in one batched pass)."""
    stream = engine.stream(BENCH_PROMPT, specs, RunOptions(seed=args.seed, max_new_tokens=args.tokens))
    run = next(stream)  # the prefill and its last token: not decoding steps
    calls = []
    hook = engine.lm.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        for run in stream:
            pass
    finally:
        hook.remove()
    return round(len(calls) / max(1, run.step), 3)


@speed_measure
def compare4_vs_single(engine: Engine, args) -> dict[str, Any]:
    """Wall time per decoding step of a 4-column (and an 8-column) batched compare over one temperature column,
    ours, and over stock transformers' ``generate`` (one row, the temperature column's settings)."""
    def per_step(specs):
        def go():
            run = engine.run(BENCH_PROMPT, specs, RunOptions(seed=args.seed, max_new_tokens=args.tokens))
            return max(1, max(len(c.tokens) for c in run.columns))
        return go

    four, eight = four_columns(), eight_columns()
    samples = interleaved({"four": per_step(four), "eight": per_step(eight),
                           "single": per_step([ColumnSpec("temperature")]),
                           "stock_single": stock_generate(engine.lm, args)}, args.repeats)
    step = {k: min(t / n for t, n in v) for k, v in samples.items()}
    return {"compare4_columns": column_labels(four),
            "compare4_vs_single": round(step["four"] / step["single"], 3),
            "compare4_vs_stock_single": round(step["four"] / step["stock_single"], 3),
            "compare8_columns": column_labels(eight),
            "compare8_vs_single": round(step["eight"] / step["single"], 3),
            "compare8_forward_passes_per_step": forward_passes(engine, eight, args),
            "packed_weights_mb": round(packed_bytes(engine.lm.model) / 1e6, 1)}  # the copies made by now


PHASEGPT_PROMPT = "ROMEO:\nBut soft, what light"  # its context is 64 characters


@speed_measure
def phasegpt_compare4(engine: Engine, args) -> dict[str, Any]:
    """The shipped PhaseGPT on the page's path (R recorded, the four columns, one batched pass a step):
    characters per second over all columns, and decoding steps per second."""
    phasegpt = Engine(load_model(PHASEGPT_MODEL, engine.lm.device))
    specs, new_tokens = four_columns(), min(args.tokens, phasegpt.lm.max_context - len(PHASEGPT_PROMPT))
    options = RunOptions(seed=args.seed, max_new_tokens=new_tokens)
    phasegpt.run(PHASEGPT_PROMPT, specs, options)  # Phase-Slip's calibration, once, before any clock starts

    def compare() -> int:
        return engine_tokens(phasegpt, specs, args, PHASEGPT_PROMPT, max_new_tokens=new_tokens)

    samples = interleaved({"four": compare}, args.repeats)["four"]
    return {"phasegpt_compare4_tok_s": round(tokens_per_second(samples), 1),
            "phasegpt_compare4_steps_s": round(tokens_per_second(samples) / len(specs), 1),
            "phasegpt_compare4_tokens": new_tokens}


def forward_seconds(engine: Engine, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()``'s result and the seconds it spent inside the model's forward passes."""
    spent, real = [0.0], engine.lm.forward

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            spent[0] += time.perf_counter() - t0

    engine.lm.forward = timed
    try:
        return fn(), spent[0]
    finally:
        del engine.lm.forward  # back to the class's method


@speed_measure
def samples16_vs_one(engine: Engine, args) -> dict[str, Any]:
    """Wall time per generated token of a column (= per decoding step) of the four columns with 16 samples each
    over the same four with one: linear in the samples would be 16; and the share of each in the forward passes."""
    four = four_columns()
    forward: dict[str, float] = {}

    def per_step(key: str, samples: int):
        def go():
            options = RunOptions(seed=args.seed, max_new_tokens=args.tokens, samples=samples)
            run, spent = forward_seconds(engine, lambda: engine.run(BENCH_PROMPT, four, options))
            steps = max(1, max(len(c.tokens) for c in run.decoding))
            forward[key] = spent / max(run.elapsed_s, 1e-9)  # the last repeat's
            return steps
        return go

    samples = interleaved({"sixteen": per_step("sixteen", 16), "one": per_step("one", 1)}, args.repeats)
    step = {k: min(t / n for t, n in v) for k, v in samples.items()}
    return {"samples16_vs_one": round(step["sixteen"] / step["one"], 3),
            "samples16_step_ms": round(step["sixteen"] * 1000, 1), "samples1_step_ms": round(step["one"] * 1000, 1),
            "samples16_forward_share": round(forward["sixteen"], 3), "samples1_forward_share": round(forward["one"], 3)}


PAGE_TOKENS = 48  # the page's default max_new_tokens
SESSIONS = 8
SHARED_STEP_ROWS = (8, 16, 32)


def concurrent_sessions(engine: Engine, specs: list[ColumnSpec], sessions: int, tokens: int, seed: int) -> int:
    """``sessions`` runs of ``specs`` at once, each in its own thread through the page's path (a BackgroundRun
    over ``Engine.stream(shared=True)``: the prefill in its thread, the steps in the model's shared loop);
    returns the tokens decoded."""
    from .prompts import BENCHMARK_PROMPTS
    from .ui.sessions import BackgroundRun

    finished: list[Any] = [None] * sessions

    def session(i: int) -> None:
        prompt = BENCHMARK_PROMPTS[i % len(BENCHMARK_PROMPTS)] + " " * (i // len(BENCHMARK_PROMPTS))
        options = RunOptions(seed=seed + i, max_new_tokens=tokens)
        finished[i] = BackgroundRun(engine.stream(prompt, specs, options, shared=True)).result()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(len(c.tokens) for run in finished for c in run.decoding)


def session_ratios(samples: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    """The keys of ``sessions8_vs_one`` from its interleaved (wall, forward seconds) samples of "one" and
    "eight": the fastest run of each side, and the median of the ratios of the runs made one after the
    other (a pair shares the machine's speed of the moment, which the fastest runs need not)."""
    best = {k: min(v) for k, v in samples.items()}
    return {"sessions8_vs_one": round(best["eight"][0] / best["one"][0], 3),
            "sessions8_vs_one_paired": round(statistics.median(
                e[0] / o[0] for o, e in zip(samples["one"], samples["eight"])), 3),
            "sessions8_wall_s": round(best["eight"][0], 2), "sessions1_wall_s": round(best["one"][0], 2),
            "sessions8_forward_vs_one": round(best["eight"][1] / best["one"][1], 3),
            "sessions8_forward_s": round(best["eight"][1], 3), "sessions1_forward_s": round(best["one"][1], 3)}


@speed_measure
def sessions8_vs_one(engine: Engine, args) -> dict[str, Any]:
    """Wall time of eight concurrent sessions of the page's default run (the four columns, 48 tokens or
    ``--tokens`` if fewer, one prompt each) over one such session alone, both through the page's path; the
    same ratio of their forward passes' seconds alone (the floor the runs' own work adds to); and the shared
    batch's step time at 8, 16 and 32 rows (2, 4 and 8 sessions of four temperature columns)."""
    from .shared_loop import shared_loop_of

    four, tokens = four_columns(), min(args.tokens, PAGE_TOKENS)
    loop, temperature = shared_loop_of(engine.lm), [ColumnSpec("temperature")] * 4
    concurrent_sessions(engine, four, 2, 2, args.seed)  # the first shared passes' one-time costs, before any clock

    def sessions(n: int) -> Callable[[], float]:
        def run() -> float:  # the seconds its steps spent in forward passes
            loop.step_seconds = []
            concurrent_sessions(engine, four, n, tokens, args.seed)
            return sum(step.forward_seconds for step in loop.step_seconds)
        return run

    result = session_ratios(interleaved({"one": sessions(1), "eight": sessions(SESSIONS)}, args.repeats))
    for rows in SHARED_STEP_ROWS:
        steps: list[float] = []
        for _ in range(args.repeats):
            loop.step_seconds = []
            concurrent_sessions(engine, temperature, rows // len(temperature), tokens, args.seed)
            steps += [step.seconds for step in loop.step_seconds if step.rows == rows]
        result[f"shared_step_ms_{rows}"] = round(min(steps) * 1000, 1) if steps else None
    return result


@speed_measure
def largest_request_memory(engine: Engine, args) -> dict[str, Any]:
    """Peak resident memory (growth) of the largest request the default row cap allows on this device:
    eight columns x (cap / 8) samples, ``--tokens`` new tokens each (the 1,024-token figure: --tokens 1024)."""
    from .samples import row_cap

    per_column = min(32, row_cap(engine.lm.device.type) // 8)
    options = RunOptions(seed=args.seed, max_new_tokens=args.tokens, samples=per_column)
    holder: list = []
    go = lambda: holder.append(engine.run(BENCH_PROMPT, eight_columns(), options))  # noqa: E731
    if engine.lm.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(engine.lm.device)
        before = torch.cuda.memory_allocated(engine.lm.device)
        go()
        peak = (torch.cuda.max_memory_allocated(engine.lm.device) - before) / 1e9
    else:
        peak = peak_rss_growth_gb(go)
    return {"largest_request": f"8 columns x {per_column} samples x {args.tokens} tokens",
            "largest_request_s": round(holder[0].elapsed_s, 1),
            "largest_request_tokens": sum(len(c.tokens) for c in holder[0].decoding),  # rows stop at EOS
            "largest_request_peak_gb": None if peak is None else round(peak, 3)}


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
def new_samplers_vs_temperature(engine: Engine, args) -> dict[str, Any]:
    """entropix and mirostat tok/s over temperature sampling's, each with its defaults, Kuramoto R off."""
    no_r = {"record_order_parameter": False}
    samples = interleaved({name: (lambda name=name: engine_tokens(engine, [ColumnSpec(name)], args, **no_r))
                           for name in ("entropix", "mirostat", "temperature")}, args.repeats)
    tok_s = {k: tokens_per_second(v) for k, v in samples.items()}
    return {"entropix_tok_s": round(tok_s["entropix"], 2), "mirostat_tok_s": round(tok_s["mirostat"], 2),
            "new_samplers_temperature_tok_s": round(tok_s["temperature"], 2),
            "entropix_vs_temperature": round(tok_s["entropix"] / tok_s["temperature"], 3),
            "mirostat_vs_temperature": round(tok_s["mirostat"] / tok_s["temperature"], 3)}


DRY_PROMPT = ("The keeper wrote in his log: the lamp is lit, the sea is calm, the ships pass by. " * 100)[:8170]


def decode_seconds_per_step(engine: Engine, specs: list[ColumnSpec], prompt: str, args) -> tuple[float, int]:
    """Wall time of the decoding steps alone (the prefill and first token left out), per step."""
    stream = engine.stream(prompt, specs, RunOptions(seed=args.seed, max_new_tokens=args.tokens,
                                                      record_order_parameter=False))
    next(stream)  # prefill + the first token
    start, run = time.perf_counter(), None
    for run in stream:
        pass
    return (time.perf_counter() - start) / max(1, run.step), run.step


@speed_measure
def dry_step_overhead(engine: Engine, args) -> dict[str, Any]:
    """Step time of a temperature column with DRY on (multiplier 0.8) over off, at a ~2,000-token context."""
    on, off = ColumnSpec("temperature", {"dry_multiplier": 0.8}), ColumnSpec("temperature")

    def timed(spec):
        return lambda: decode_seconds_per_step(engine, [spec], DRY_PROMPT, args)[0]

    timed(on)()  # the breaker ids are found once per tokenizer, before the clock
    samples = {"on": [], "off": []}
    for _ in range(args.repeats):  # interleaved, best of each: interference only ever adds time
        for key, spec in (("on", on), ("off", off)):
            samples[key].append(timed(spec)())
    return {"dry_context_tokens": len(engine.lm.encode(DRY_PROMPT)),
            "dry_step_on_ms": round(min(samples["on"]) * 1000, 2),
            "dry_step_off_ms": round(min(samples["off"]) * 1000, 2),
            "dry_step_overhead": round(min(samples["on"]) / min(samples["off"]), 3)}


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


@speed_measure
def long_prompt(engine: Engine, args) -> dict[str, Any]:
    """A 3,001-token prompt + 8 new tokens, one temperature column: peak memory, and the time of stock
    transformers' generate (a separately loaded, unmodified model, default attention) over ours."""
    lm = engine.lm
    ours = lambda: engine_tokens(engine, [ColumnSpec("temperature")], args, prompt=LONG_PROMPT,  # noqa: E731
                                 max_new_tokens=LONG_PROMPT_NEW_TOKENS)
    peak = peak_rss_growth_gb(ours)  # first, before the stock model's allocations share the heap
    samples = interleaved({"ours": ours, "stock": stock_generate(lm, args, LONG_PROMPT, LONG_PROMPT_NEW_TOKENS)},
                          max(1, min(args.repeats, 3)))
    seconds = {k: min(t for t, _ in v) for k, v in samples.items()}
    return {"long_prompt_tokens": len(lm.encode(LONG_PROMPT)), "long_prompt_ours_s": round(seconds["ours"], 2),
            "long_prompt_stock_generate_s": round(seconds["stock"], 2),
            "long_prompt_vs_generate": round(seconds["stock"] / seconds["ours"], 3),
            "long_prompt_peak_gb": None if peak is None else round(peak, 3)}


WHY_TOKENS = 500  # "why this token" is timed at this token of an 8-column run


@speed_measure
def trace_overhead(engine: Engine, args) -> dict[str, Any]:
    """Wall time of a 4-column run that records every token's chain trace (and so its divergences) over
    the same run without; the page's bytes per streamed and final update, and the JSON export's per token."""
    from .ui import render, why

    specs = four_columns()
    runs: dict[bool, Any] = {}

    def run(record: bool):
        def go():
            runs[record] = engine.run(BENCH_PROMPT, specs, RunOptions(seed=args.seed, max_new_tokens=args.tokens,
                                                                       record_traces=record))
            return sum(len(c.tokens) for c in runs[record].columns)
        return go

    samples = interleaved({"with": run(True), "without": run(False)}, args.repeats)
    seconds = {k: min(t for t, _ in v) for k, v in samples.items()}
    traced, bare = runs[True], runs[False]
    tokens = sum(len(c.tokens) for c in traced.columns)
    exported = len(json.dumps(traced.to_json(), ensure_ascii=False))
    without_divergences = len(json.dumps({**traced.to_json(), "divergences": []}, ensure_ascii=False))
    final = len(render.columns_html(traced)) + len(why.parts_html(traced.to_json()))
    return {"traces_vs_none": round(seconds["with"] / seconds["without"], 3),
            "streamed_update_bytes": len(render.columns_html(traced, detail=False)),
            "streamed_update_bytes_without_traces": len(render.columns_html(bare, detail=False)),
            "final_update_bytes": final,
            "final_update_bytes_without_explain": len(render.columns_html(traced, mark_parts=False)),
            "export_bytes_per_token": round(exported / tokens, 1),
            "export_divergence_bytes_per_token": round((exported - without_divergences) / tokens, 1),
            "trace_json_bytes_per_token": round(len(json.dumps(traced.to_json(traces=True))) / tokens
                                                - exported / tokens, 1)}


@speed_measure
def why_latency(engine: Engine, args) -> dict[str, Any]:
    """The page's "why this token" handler (the trace read from the session, rendered as the stage table) at
    token ``WHY_TOKENS`` of an 8-column run (``--tokens`` with --quick), and a pair's two traces side by side."""
    from .traces import RunTraces
    from .ui.handlers import why_token

    n = args.tokens if args.quick else WHY_TOKENS
    run = engine.run(BENCH_PROMPT, eight_columns(), RunOptions(seed=args.seed, max_new_tokens=n))
    step = min(len(c.tokens) for c in run.columns) - 1
    kept: RunTraces = run.recorded_traces()
    result = run.to_json()
    one = json.dumps({"tokens": [{"column": 7, "step": step}]})
    two = json.dumps({"tokens": [{"column": 0, "step": step}, {"column": 4, "step": step}]})
    times = {"one": [], "two": []}
    for _ in range(max(3, args.repeats)):
        for key, payload in (("one", one), ("two", two)):
            start = time.perf_counter()
            html_out = why_token(payload, kept, result)
            times[key].append(time.perf_counter() - start)
    return {"why_at_token": step + 1, "why_ms": round(min(times["one"]) * 1000, 2),
            "why_pair_ms": round(min(times["two"]) * 1000, 2), "why_html_bytes": len(html_out)}


QUICK_TOKENS, QUICK_REPEATS = 16, 1  # bench speed --quick


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .bench_quality import add_quality_arguments

    p.add_argument("what", choices=["speed", "quality"], help="which benchmark")
    add_model_arguments(p)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the best of them is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated measure names (default: all)")
    p.add_argument("--quick", action="store_true",
                   help=f"a first look: --tokens {QUICK_TOKENS} --repeats {QUICK_REPEATS} (rougher ratios)")
    p.add_argument("--json", action="store_true")
    add_quality_arguments(p)  # bench quality's flags (bench_quality.py)


def run(args: argparse.Namespace) -> int:
    if args.what == "quality":
        from .bench_quality import run_quality_cli

        return run_quality_cli(args)
    from tqdm import tqdm

    if args.quick:
        args.tokens, args.repeats = QUICK_TOKENS, QUICK_REPEATS
    names = args.only.split(",") if args.only else list(SPEED_MEASURES)
    unknown = [n for n in names if n not in SPEED_MEASURES]
    if unknown:
        raise PlaygroundError(f"--only: unknown measure {', '.join(unknown)}; "
                              f"the measures are {', '.join(SPEED_MEASURES)}")
    say("bench speed: loading the model")
    engine = Engine(model_from_arguments(args))
    say("bench speed: a warm-up run of every sampler (and Phase-Slip's calibration)")
    engine.run(BENCH_PROMPT, list(SAMPLERS), RunOptions(max_new_tokens=4))  # before any clock starts
    result: dict[str, Any] = {"model": engine.lm.name, "device": str(engine.lm.device),
                              "dtype": str(engine.lm.dtype).removeprefix("torch."), "tokens": args.tokens,
                              "repeats": args.repeats, "threads": torch.get_num_threads()}
    seconds: dict[str, float] = {}
    bar = tqdm(names, desc="bench speed", unit="measure", file=sys.stderr)
    for name in bar:
        bar.set_postfix_str(name)
        start = time.perf_counter()
        result.update(SPEED_MEASURES[name](engine, args))
        seconds[name] = round(time.perf_counter() - start, 1)
    result["measure_wall_s"] = seconds  # where a run's time goes, for choosing --only
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32s} {value}")
    return 0
