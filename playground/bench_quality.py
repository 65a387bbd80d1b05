"""Quality benchmark: ``python -m playground bench quality`` (the published Phase-Slip protocol; docs/benchmarks.md).

    prompts x rounds -> per prompt, one batched Engine.run with every configuration as a column and
    the rounds as its samples (docs/samples.md; as many rounds per run as the row cap allows)
    -> one results.csv row per sample (written as each run finishes)
    -> summary (mean +- std per configuration) -> summary.csv, summary.json, frontier.html

Protocol. The five BENCHMARK_PROMPTS (or the user's, ``--prompts-file``), ``rounds`` rounds each,
seed = prompt_index * 1000 + round: a run of rounds r0.. has seed prompt_index * 1000 + r0, and
its sample i is seeded that + i, round r0 + i.
All configurations of one (prompt, round) are sample i of the columns of one run: same seed, common
random numbers. Configurations: greedy; standard sampling (T 0.8, top-k 40, top-p 0.92); Phase-Slip at
T 0.65 as published; Phase-Slip at T 0.8 (equal temperature); the adaptive sampler; min-p 0.1 at
T 0.8 (equal temperature, top-k and top-p off); mirostat τ = 5; entropix. A configuration whose
sampler is not registered is skipped with a note.

Metrics of one sample: the public type-token ratio (prompt included), rep-2, the mean entropy
of the clean next-token distribution, mean Kuramoto R, perplexity under the generating model
(exp of the mean negative clean log-probability of the generated tokens, prompt masked: the
public way) and, with a scorer, under another model. distinct-n pools the token ids of all
samples of one prompt, then averages over prompts. Every figure is mean +- std (ddof 0).

Speed. In a batched run all columns share the wall time, so per-configuration speed is timed
separately: each configuration alone, on the first prompt, ``timing_tokens`` tokens, repeats
interleaved, best tokens / wall time (R telemetry off, as the public benchmark had none).

Resume. The summary is always computed from results.csv read back, and a rerun with the same
``out`` skips the samples already there, so an interrupted run finishes with the same summary.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import metrics
from .engine import MAX_COLUMNS, MAX_NEW_TOKENS, ColumnSpec, Engine, RunOptions
from .models import LoadedModel, load_model, model_from_arguments
from .prompts import BENCHMARK_PROMPTS
from .samples import MAX_SAMPLES, row_cap
from .samplers import SAMPLERS, PlaygroundError, make_settings, sampler_class
from .tables import format_table
from .timing import interleaved, tokens_per_second

FORMAT_VERSION = 1
STANDARD = "standard T=0.8"  # the denominator of the speed ratio

RESULT_COLUMNS = ("config", "sampler", "temperature", "prompt_index", "round", "seed", "finish_reason",
                  "n_tokens", "type_token_ratio", "rep_2", "mean_entropy", "mean_order_parameter",
                  "perplexity", "scorer_perplexity", "text", "token_ids", "run_wall_s", "run_columns")
TIMING_COLUMNS = ("run_wall_s",)  # differ between identical runs
SAMPLE_METRICS = ("type_token_ratio", "rep_2", "mean_entropy", "mean_order_parameter", "perplexity",
                  "scorer_perplexity")
PROMPT_METRICS = {"distinct_2": 2, "distinct_3": 3}  # pooled over the samples of one prompt


@dataclass(frozen=True)
class Config:
    """One benchmarked configuration: a sampler with setting overrides, run as one column."""

    label: str
    sampler: str
    settings: tuple[tuple[str, Any], ...] = ()
    temperature: float | None = None  # the T in force, for sweeps and plots; None if adaptive/greedy
    group: int = 0  # configurations of one group share one Engine.run

    def spec(self) -> ColumnSpec:
        return ColumnSpec(self.sampler, dict(self.settings), self.label)


# the public protocol, in table order: (label, sampler, overrides, temperature)
PROTOCOL: tuple[tuple[str, str, dict[str, Any], float | None], ...] = (
    ("greedy", "greedy", {}, None),
    (STANDARD, "temperature", {}, 0.8),  # the temperature sampler's defaults are the public ones
    ("phase_slip T=0.65", "phase_slip", {}, 0.65),  # as published
    ("phase_slip T=0.8", "phase_slip", {"temperature": 0.8, "top_k": 40, "top_p": 0.92}, 0.8),
    ("adaptive_entropy", "adaptive_entropy", {}, None),
    ("min_p 0.1 T=0.8", "temperature", {"top_k": 0, "top_p": 1.0, "min_p": 0.1}, 0.8),  # equal temperature
    ("mirostat tau=5", "mirostat", {}, 1.0),
    ("entropix", "entropix", {}, None),  # its quadrants set T
)


@dataclass
class QualityOptions:
    rounds: int = 4
    max_new_tokens: int = 200
    samplers: list[str] | None = None  # None: every protocol sampler that is registered
    scorer: str | None = None  # model id of the grading model
    sweep: list[float] | None = None  # temperatures
    out: str | Path = "bench-out/quality"
    prompts: int | None = None  # the first N prompts (tests use fewer); None: all
    prompt_texts: list[str] | None = None  # the user's prompts (--prompts-file); None: BENCHMARK_PROMPTS
    timing_tokens: int = 32  # 0: no speed measurement
    timing_repeats: int = 3
    max_samples: int | None = None  # stop once this many samples are written (whole runs)
    progress: bool = True


# ---------------------------------------------------------------------------------------
# Flags


def parse_sweep(text: str | None) -> list[float] | None:
    """``temperature=0.5,0.65,0.8`` -> [0.5, 0.65, 0.8]; anything else is refused."""
    if text is None:
        return None
    usage = f"--sweep {text!r}: expected temperature=T1,T2,... with each T in (0, 100], e.g. temperature=0.5,0.8,1.0"
    key, eq, values = text.partition("=")
    if key.strip() != "temperature" or not eq or not values.strip():
        raise PlaygroundError(usage)
    try:
        temps = [float(v) for v in values.split(",")]
    except ValueError:
        raise PlaygroundError(usage) from None
    if not all(0.0 < t <= 100.0 for t in temps) or len(set(temps)) != len(temps):
        raise PlaygroundError(usage)
    return temps


def check_options(o: QualityOptions) -> None:
    def integer(value: Any, name: str, low: int, high: int | None = None) -> None:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
        if not ok:
            bound = f"in {low}..{high}" if high is not None else f">= {low}"
            raise PlaygroundError(f"{name} must be an integer {bound}, got {value!r}")

    integer(o.rounds, "--rounds", 1, 999)  # seed = prompt_index * 1000 + round must stay unique
    integer(o.max_new_tokens, "--max-new-tokens", 1, MAX_NEW_TOKENS)
    texts = o.prompt_texts if o.prompt_texts is not None else BENCHMARK_PROMPTS
    if not texts:
        raise PlaygroundError("--prompts-file: the file has no prompt "
                              "(one per line; lines starting with # are skipped)")
    if o.prompts is not None:
        integer(o.prompts, "--prompts", 1, len(texts))
    integer(o.timing_tokens, "--timing-tokens", 0, MAX_NEW_TOKENS)
    integer(o.timing_repeats, "--repeats", 1)
    if o.max_samples is not None:
        integer(o.max_samples, "--max-samples", 1)
    for name in o.samplers or []:
        sampler_class(name)  # an unknown one: a SettingsError listing the registered ones


# ---------------------------------------------------------------------------------------
# Configurations


def read_prompts_file(path: str | Path) -> list[str]:
    """One prompt per line; empty lines and lines starting with # are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaygroundError(f"--prompts-file {str(path)!r}: {exc}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def prompt_list(o: QualityOptions) -> list[str]:
    """The prompts this benchmark runs: the user's file or the built-in set, the first ``o.prompts``."""
    texts = list(o.prompt_texts if o.prompt_texts is not None else BENCHMARK_PROMPTS)
    return texts[:o.prompts] if o.prompts is not None else texts


def _takes_temperature(sampler: str) -> bool:
    return "temperature" in {f.name for f in dataclasses.fields(SAMPLERS[sampler].Settings)}


def build_configs(samplers: list[str] | None, sweep: list[float] | None, notes: list[str]) -> list[Config]:
    """The protocol's configurations of the chosen samplers; with a sweep, the sampling ones at each T."""
    protocol = list(PROTOCOL)
    known = {sampler for _, sampler, _, _ in protocol}
    for name in samplers or []:  # a registered sampler outside the protocol: its defaults
        if name not in known:
            protocol.append((name, name, {}, make_settings(name).temperature if _takes_temperature(name) else None))
            known.add(name)
    chosen = []
    for label, sampler, overrides, temp in protocol:
        if samplers is not None and sampler not in samplers:
            continue
        if sampler not in SAMPLERS:
            notes.append(f"skipping {label!r}: sampler {sampler!r} is not registered")
            continue
        chosen.append((label, sampler, overrides, temp))
    if not chosen:
        raise PlaygroundError("no configuration to run: none of the chosen samplers is registered")

    configs: list[Config] = []
    if sweep is None:
        configs = [Config(lb, s, tuple(sorted(o.items())), t) for lb, s, o, t in chosen]
    else:  # fixed configurations run once, in the first group; swept ones once per temperature
        swept, seen = [], set()
        for label, sampler, overrides, temp in chosen:
            if temp is None or not _takes_temperature(sampler):
                configs.append(Config(label, sampler, tuple(sorted(overrides.items())), temp, 0))
            elif sampler not in seen:  # phase_slip's two protocol points collapse into its curve
                seen.add(sampler)
                swept.append((STANDARD.split()[0] if sampler == "temperature" else sampler, sampler, overrides))
        for g, t in enumerate(sweep):
            for name, sampler, overrides in swept:
                settings = {**overrides, "temperature": t}
                configs.append(Config(f"{name} T={t:g}", sampler, tuple(sorted(settings.items())), t, g))
    for c in configs:  # refuse bad settings before any work
        make_settings(c.sampler, dict(c.settings))
    return split_groups(configs)


def split_groups(configs: list[Config]) -> list[Config]:
    """Renumber groups so that none holds more columns than one run allows."""
    out, group, size, last = [], -1, 0, None
    for c in configs:
        if c.group != last or size == MAX_COLUMNS:
            group, size, last = group + 1, 0, c.group
        out.append(dataclasses.replace(c, group=group))
        size += 1
    return out


# ---------------------------------------------------------------------------------------
# One sample's metrics


def scorer_perplexity(scorer: LoadedModel, prompt: str, text: str) -> float:
    """Perplexity of ``text`` after ``prompt`` under another model, tokenised by its own tokenizer."""
    if not text:
        return float("nan")
    prompt_ids = scorer.tokenizer(prompt).input_ids
    continuation_ids = scorer.tokenizer(text, add_special_tokens=False).input_ids
    keep = scorer.max_context - len(prompt_ids)  # a long continuation is graded up to the context
    return metrics.perplexity(scorer.model, prompt_ids, continuation_ids[:keep])


def sample_row(config: Config, prompt_index: int, rnd: int, seed: int, prompt: str, column: Any,
               run_wall_s: float, run_columns: int, scorer: LoadedModel | None) -> dict[str, Any]:
    rows = column.rows
    ids = [r.id for r in rows]
    r_values = [r.order_parameter for r in rows if r.order_parameter is not None]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "config": config.label, "sampler": config.sampler, "temperature": config.temperature,
        "prompt_index": prompt_index, "round": rnd, "seed": seed, "finish_reason": column.finish_reason,
        "n_tokens": len(ids),
        "type_token_ratio": metrics.type_token_ratio(column.text, prompt),
        "rep_2": metrics.rep_n(ids, 2),
        "mean_entropy": mean([r.entropy for r in rows]),
        "mean_order_parameter": mean(r_values),
        "perplexity": metrics.perplexity_from_logprobs([r.logprob for r in rows]),
        "scorer_perplexity": scorer_perplexity(scorer, prompt, column.text) if scorer else float("nan"),
        "text": column.text, "token_ids": " ".join(map(str, ids)),
        "run_wall_s": round(run_wall_s, 4), "run_columns": run_columns,
    }


def _cell(value: Any) -> Any:
    """CSV cell: floats at 10 significant digits (what a reread must reproduce), nan as empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.10g}"
    return "" if value is None else value


# ---------------------------------------------------------------------------------------
# results.csv


def read_results(path: Path):
    """results.csv as a DataFrame (empty cells of numbers are nan, of texts are '')."""
    import pandas as pd

    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    frame = pd.read_csv(path, dtype={"text": str, "token_ids": str, "config": str})
    frame[["text", "token_ids"]] = frame[["text", "token_ids"]].fillna("")
    return frame


def protocol_record(lm: LoadedModel, o: QualityOptions, configs: list[Config], scorer_name: str | None) -> dict:
    """What must match for results in one folder to belong to one benchmark (rounds and prompts may grow)."""
    texts = o.prompt_texts if o.prompt_texts is not None else BENCHMARK_PROMPTS
    return {"version": FORMAT_VERSION, "model": lm.name, "max_new_tokens": o.max_new_tokens,
            "scorer": scorer_name, "prompt_set": "built-in" if o.prompt_texts is None else list(texts),
            "configs": [[c.label, c.sampler, [list(kv) for kv in c.settings], c.group] for c in configs]}


def prepare_out(out: Path, record: dict) -> None:
    """Create ``out``; refuse to mix results of a different protocol into it."""
    out.mkdir(parents=True, exist_ok=True)
    path, results = out / "protocol.json", out / "results.csv"
    if results.is_file() and results.stat().st_size > 0:
        old = json.loads(path.read_text()) if path.is_file() else None
        if old != record:
            differ = [k for k in record if old is None or old.get(k) != record[k]]
            raise PlaygroundError(
                f"{out} holds results of a different benchmark ({', '.join(differ)} differ): "
                "delete it or choose another --out")
    path.write_text(json.dumps(record, indent=1))


# ---------------------------------------------------------------------------------------
# The run


def plan(configs: list[Config], prompts: int, rounds: int, per_run: int) -> list[tuple[int, range, int]]:
    """(prompt_index, its rounds, group) of every batched run, in order: ``per_run`` rounds a run at most."""
    groups = sorted({c.group for c in configs})
    return [(p, range(r, min(r + per_run, rounds)), g)
            for p in range(prompts) for g in groups for r in range(0, rounds, per_run)]


def rounds_per_run(configs: list[Config], rounds: int, device_type: str) -> int:
    """As many rounds (samples) per run as the row cap allows for the largest group, at most MAX_SAMPLES."""
    widest = max(sum(c.group == g for c in configs) for g in {c.group for c in configs})
    return max(1, min(rounds, MAX_SAMPLES, row_cap(device_type) // widest))


def run_quality(lm: LoadedModel, options: QualityOptions | None = None, scorer: LoadedModel | None = None,
                log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Run (or resume) the benchmark into ``options.out``; return the summary."""
    from tqdm import tqdm

    o = options or QualityOptions()
    check_options(o)
    notes: list[str] = []
    configs = build_configs(o.samplers, o.sweep, notes)
    for note in notes:
        log(f"note: {note}")
    if scorer is None and o.scorer:
        scorer = load_model(o.scorer, lm.device, lm.dtype)
    scorer_name = scorer.name if scorer else None
    out = Path(o.out)
    prepare_out(out, protocol_record(lm, o, configs, scorer_name))
    results_path = out / "results.csv"

    done_frame = read_results(results_path)
    done = set(zip(done_frame["config"], done_frame["prompt_index"].astype(int), done_frame["round"].astype(int)))
    engine = Engine(lm)
    prompts = prompt_list(o)
    todo = plan(configs, len(prompts), o.rounds, rounds_per_run(configs, o.rounds, lm.device.type))
    groups: dict[int, list[Config]] = {}
    for c in configs:
        groups.setdefault(c.group, []).append(c)
    total = sum(len(groups[g]) * len(rs) for _, rs, g in todo)
    already = sum((c.label, p, r) in done for p, rs, g in todo for r in rs for c in groups[g])
    written = 0
    bar = tqdm(total=total, initial=already, unit="sample", desc="bench quality", disable=not o.progress)
    new_file = not results_path.is_file() or results_path.stat().st_size == 0
    try:
        with results_path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(RESULT_COLUMNS))
            if new_file:
                writer.writeheader()
            for p, rs, g in todo:
                if o.max_samples is not None and written >= o.max_samples:
                    log(f"stopped after {written} new samples (--max-samples); rerun with the same --out to resume")
                    break
                group = groups[g]
                missing = {(c.label, r) for c in group for r in rs if (c.label, p, r) not in done}
                if not missing:
                    continue
                # the whole run again even if only some are missing: the same batch, the same numbers
                prompt, seed = prompts[p], p * 1000 + rs[0]
                run = engine.run(prompt, [c.spec() for c in group],
                                 RunOptions(seed=seed, max_new_tokens=o.max_new_tokens, samples=len(rs)))
                rows = [sample_row(c, p, r, seed + i, prompt, run.sample(k, i), run.elapsed_s, len(group), scorer)
                        for i, r in enumerate(rs) for k, c in enumerate(group) if (c.label, r) in missing]
                writer.writerows([{k: _cell(v) for k, v in row.items()} for row in rows])
                fh.flush()
                written += len(rows)
                bar.update(len(rows))
    except KeyboardInterrupt:
        log(f"interrupted: {already + written} samples are in {results_path}; rerun with the same --out to resume")
        raise
    finally:
        bar.close()

    timing = measure_speed(engine, configs, o) if o.timing_tokens else {}
    summary = summarise(read_results(results_path), configs, o, timing)
    summary["protocol"] = {**protocol_record(lm, o, configs, scorer_name), "rounds": o.rounds, "prompts": len(prompts),
                           "sweep": o.sweep, "timing_tokens": o.timing_tokens, "timing_repeats": o.timing_repeats,
                           "notes": notes}
    write_outputs(out, summary)
    return summary


def measure_speed(engine: Engine, configs: list[Config], o: QualityOptions) -> dict[str, float]:
    """tok/s of each configuration run alone (interleaved repeats, best of them): batched columns share a clock."""
    prompt = prompt_list(o)[0]

    def alone(config: Config, tokens: int) -> Callable[[], int]:
        options = RunOptions(seed=0, max_new_tokens=tokens, record_order_parameter=False)
        return lambda: len(engine.run(prompt, [config.spec()], options).columns[0].tokens)

    for c in configs:  # warm-up, and any per-model calibration, before the clock starts
        alone(c, 2)()
    samples = interleaved({c.label: alone(c, o.timing_tokens) for c in configs}, o.timing_repeats)
    return {label: tokens_per_second(s) for label, s in samples.items()}


# ---------------------------------------------------------------------------------------
# Summary


def _mean_std(values: list[float]) -> tuple[float, float]:
    xs = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), statistics.pstdev(xs)


def summarise(frame, configs: list[Config], o: QualityOptions, timing: dict[str, float]) -> dict[str, Any]:
    """Mean +- std per configuration, over the samples of this protocol's prompts and rounds."""
    frame = frame[(frame["prompt_index"] < len(prompt_list(o))) & (frame["round"] < o.rounds)]
    reference = timing.get(STANDARD, next((timing[c.label] for c in configs if c.sampler == "temperature"
                                           and c.label in timing), float("nan")))
    rows = []
    for c in configs:
        sub = frame[frame["config"] == c.label].sort_values(["prompt_index", "round"])
        row: dict[str, Any] = {"config": c.label, "sampler": c.sampler, "temperature": c.temperature,
                               "samples": len(sub), "prompts": int(sub["prompt_index"].nunique()),
                               "mean_tokens": _mean_std(sub["n_tokens"].astype(float).tolist())[0]}
        for m in SAMPLE_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(sub[m].astype(float).tolist())
        for m, n in PROMPT_METRICS.items():
            per_prompt = [metrics.distinct_n([[int(t) for t in ids.split()] for ids in group["token_ids"]], n)
                          for _, group in sub.groupby("prompt_index")]
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(per_prompt)
        tok_s = timing.get(c.label, float("nan"))
        row["tok_s"], row["speed_vs_standard"] = tok_s, tok_s / reference if reference == reference else float("nan")
        rows.append({k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()})
    return {"configurations": rows}


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_outputs(out: Path, summary: dict[str, Any]) -> None:
    import pandas as pd

    pd.DataFrame(summary["configurations"]).to_csv(out / "summary.csv", index=False)
    (out / "summary.json").write_text(json.dumps(_jsonable(summary), indent=1))
    (out / "summary.md").write_text(markdown_table(summary["configurations"]) + "\n")
    fig = frontier_figure(summary)
    fig.write_html(out / "frontier.html", include_plotlyjs="cdn")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return
    fig.write_image(out / "frontier.png")


TABLE = (("type-token ratio", "type_token_ratio"), ("distinct-2", "distinct_2"), ("distinct-3", "distinct_3"),
         ("rep-2", "rep_2"), ("entropy (nats)", "mean_entropy"), ("R", "mean_order_parameter"),
         ("perplexity", "perplexity"), ("scorer perplexity", "scorer_perplexity"))


def table_rows(configurations: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the human table: mean ± std, tok/s and the speed ratio."""
    fmt = lambda x: "–" if x is None or x != x else f"{x:.3g}" if abs(x) >= 100 else f"{x:.2f}"  # noqa: E731
    keep = [(title, key) for title, key in TABLE
            if any(r[f"{key}_mean"] == r[f"{key}_mean"] for r in configurations)]
    header = ["configuration", *[t for t, _ in keep], "tok/s", "speed vs standard"]
    cells = [[r["config"], *[f"{fmt(r[k + '_mean'])} ± {fmt(r[k + '_std'])}" for _, k in keep],
              fmt(r["tok_s"]),
              fmt(r["speed_vs_standard"]) + ("x" if r["speed_vs_standard"] == r["speed_vs_standard"] else "")]
             for r in configurations]
    return header, cells


def markdown_table(configurations: list[dict[str, Any]]) -> str:
    header, cells = table_rows(configurations)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def frontier_figure(summary: dict[str, Any]):
    """Diversity against perplexity, error bars = std; one curve per sampler (points = temperatures)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .plots import column_colour

    rows = summary["configurations"]
    scored = any(r["scorer_perplexity_mean"] == r["scorer_perplexity_mean"] for r in rows)
    ppl = "scorer_perplexity" if scored else "perplexity"  # a sampler should not grade itself
    fig = make_subplots(rows=1, cols=2, subplot_titles=("distinct-2 (pooled over the rounds of a prompt)",
                                                        "type-token ratio (public, one text)"))
    for i, sampler in enumerate(dict.fromkeys(r["sampler"] for r in rows)):
        points = sorted((r for r in rows if r["sampler"] == sampler),
                        key=lambda r: (r["temperature"] is None, r["temperature"] or 0.0))
        for col, diversity in ((1, "distinct_2"), (2, "type_token_ratio")):
            fig.add_trace(go.Scatter(
                x=[r[f"{ppl}_mean"] for r in points], y=[r[f"{diversity}_mean"] for r in points],
                error_x={"type": "data", "array": [r[f"{ppl}_std"] for r in points]},
                error_y={"type": "data", "array": [r[f"{diversity}_std"] for r in points]},
                mode="lines+markers+text" if len(points) > 1 else "markers+text",
                text=[r["config"] for r in points], textposition="top center",
                name=sampler, legendgroup=sampler, showlegend=col == 1,
                marker={"size": 10, "color": column_colour(i)}), row=1, col=col)
        fig.update_xaxes(title_text=f"{ppl.replace('_', ' ')} (lower is better)")
    fig.update_yaxes(title_text="diversity (higher is more diverse)", row=1, col=1)
    fig.update_layout(title="Quality–diversity frontier (mean ± std over samples)", template="plotly_white")
    return fig


# ---------------------------------------------------------------------------------------
# Command line (``bench quality``; bench.py owns the subcommand)


def add_quality_arguments(p) -> None:
    g = p.add_argument_group("quality (bench quality)")
    g.add_argument("--rounds", type=int, default=4, help="rounds per prompt (the published run used 40)")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--samplers", default=None,
                   help=f"comma-separated samplers (default: every protocol sampler registered: {', '.join(SAMPLERS)})")
    g.add_argument("--scorer", default=None, help="model id or folder that grades the texts (perplexity)")
    g.add_argument("--sweep", default=None, help="temperature=T1,T2,...: the sampling configurations at each T")
    g.add_argument("--out", default="bench-out/quality", help="output folder; a rerun with it resumes")
    g.add_argument("--prompts", type=int, default=None, help="use the first N prompts (default: all)")
    g.add_argument("--prompts-file", default=None,
                   help="your prompts, one per line (# lines skipped), instead of the built-in five")
    g.add_argument("--timing-tokens", type=int, default=32, help="tokens per solo speed run (0: no speed)")
    g.add_argument("--max-samples", type=int, default=None, help="stop after this many new samples")


def run_quality_cli(args) -> int:
    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()] if args.samplers else None
    texts = read_prompts_file(args.prompts_file) if args.prompts_file else None
    options = QualityOptions(rounds=args.rounds, max_new_tokens=args.max_new_tokens, samplers=samplers,
                             scorer=args.scorer, sweep=parse_sweep(args.sweep), out=args.out, prompts=args.prompts,
                             prompt_texts=texts,
                             timing_tokens=args.timing_tokens, timing_repeats=args.repeats,
                             max_samples=args.max_samples, progress=True)
    check_options(options)  # before loading any model
    summary = run_quality(model_from_arguments(args), options)
    if args.json:
        print(json.dumps(_jsonable(summary)))
        return 0
    header, cells = table_rows(summary["configurations"])
    print(format_table([dict(zip(header, row)) for row in cells], header))
    print(f"\nwritten to {args.out}: results.csv summary.csv summary.json summary.md frontier.html")
    return 0
