"""Many samples per column: the row cap, and the statistics of a run's samples (docs/samples.md).

Sample i of every column is decoded with seed ``seed + i`` (its draws and its sampler's own), so
sample i of column a and sample i of column b share their random numbers: they are *paired*.

    summary     per metric over a column's N samples: mean, sd = sqrt(sum (x - mean)^2 / (N - 1)),
                95% interval mean -+ t(0.975, N-1) * sd / sqrt(N)
    pooled      distinct-n = unique n-grams / all n-grams over all N samples' token ids; the number
                of distinct texts
    paired      d_i = x_i(column) - x_i(reference) for each sample i; mean d, its paired t interval
                mean d -+ t(0.975, N-1) * sd(d) / sqrt(N); wins / losses / ties: how many d_i are
                better / worse / exactly 0 (lower perplexity and rep-2, higher distinct-2, better;
                length has no better side: "wins" counts the longer)
    histogram   the first tokens of a column's samples counted against the step-0 sampler
                probabilities recorded on sample 0 (its top alternatives, and the rest as "other")

Everything here reads the run JSON (``Run.to_json()``), so the CLI, the page and the plots share it.
"""
from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache
from typing import Any, Sequence

from . import metrics
from .errors import PlaygroundError
from .inputs import positive_env_int

MAX_SAMPLES = 32
ROW_CAP_ENV = "PLAYGROUND_MAX_ROWS"
DEFAULT_ROW_CAP = {"cpu": 32, "gpu": 256}  # columns x samples; 256 = 8 columns x 32 samples
SUMMARY_METRICS = ("tokens", "perplexity", "distinct_1", "distinct_2", "rep_2", "type_token_ratio", "mean_entropy",
                   "mean_order_parameter")
# metric -> the sign of a better difference (+1: higher is better, -1: lower is better)
PAIRED_METRICS = {"perplexity": -1, "distinct_2": +1, "rep_2": -1, "tokens": +1}
POOLED_N = (1, 2, 3)


# ---- the cap ----------------------------------------------------------------------------------


def row_cap(device_type: str) -> int:
    """The most columns x samples one run may ask for: ``PLAYGROUND_MAX_ROWS``, else the device's default."""
    cap = positive_env_int(ROW_CAP_ENV)
    return cap if cap is not None else DEFAULT_ROW_CAP["cpu" if device_type == "cpu" else "gpu"]


def check_samples(samples: Any, columns: int, reference: Any, device_type: str) -> None:
    """``samples`` in 1..MAX_SAMPLES, ``reference`` a column, columns x samples within the row cap."""
    if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
        raise PlaygroundError(f"samples must be an integer in 1..{MAX_SAMPLES}, got {samples!r}")
    if isinstance(reference, bool) or not isinstance(reference, int) or not 0 <= reference < columns:
        raise PlaygroundError(f"reference must be a column in 0..{columns - 1}, got {reference!r}")
    cap = row_cap(device_type)
    if columns * samples > cap:
        raise PlaygroundError(
            f"{columns} columns x {samples} samples = {columns * samples} rows is over this deployment's cap of "
            f"{cap} rows ({ROW_CAP_ENV}): ask for at most {max(1, cap // columns)} samples per column")


def decoded_once(sampler: str, settings: Any) -> bool:
    """A column whose tokens no seed changes (greedy, temperature 0): its samples are identical by construction."""
    return sampler == "greedy" or (sampler == "temperature" and getattr(settings, "temperature", None) == 0.0)


# ---- statistics -------------------------------------------------------------------------------


def _t_density(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_zero(x: float, df: int, steps: int = 2000) -> float:
    """P(0 < T < x) by Simpson's rule (the density is smooth; 2,000 steps reach ~1e-12)."""
    h = x / steps
    total = _t_density(0.0, df) + _t_density(x, df)
    total += sum((4 if k % 2 else 2) * _t_density(k * h, df) for k in range(1, steps))
    return total * h / 3


@lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with ``df`` degrees of freedom, by bisection on its CDF."""
    low, high = 0.0, 1.0
    while 0.5 + _t_cdf_above_zero(high, df) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if 0.5 + _t_cdf_above_zero(mid, df) < p else (low, mid)
    return (low + high) / 2


def _r(x: float) -> float:
    return round(x, 9)  # the JSON's precision: differences of 6-digit metrics stay exact


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sd (n - 1) and the 95% t interval of the mean; sd and interval None for n < 2."""
    xs = [float(v) for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci95": None}
    mean = sum(xs) / n
    if n < 2:
        return {"n": n, "mean": _r(mean), "sd": None, "ci95": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": _r(mean), "sd": _r(sd), "ci95": [_r(mean - half), _r(mean + half)]}


def paired_difference(xs: Sequence[float], ys: Sequence[float], better: int) -> dict[str, Any]:
    """Sample-by-sample differences x_i - y_i: their mean and paired t interval, and wins / losses / ties.

    ``better`` +1: a positive difference is a win; -1: a negative one is.
    """
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    diffs = [x - y for x, y in pairs]
    stats = mean_interval(diffs)
    return {"mean_difference": stats["mean"], "sd": stats["sd"], "ci95": stats["ci95"], "n": len(diffs),
            "wins": sum(d * better > 0 for d in diffs), "losses": sum(d * better < 0 for d in diffs),
            "ties": sum(d == 0 for d in diffs)}


def sample_metric(column: dict[str, Any], metric: str) -> list[float | None]:
    return [s["metrics"].get(metric) for s in column["samples"]]


def column_summary(column: dict[str, Any]) -> dict[str, Any]:
    """Per metric mean / sd / interval over the column's samples; pooled distinct-n; distinct texts."""
    ids = [s["tokens"] for s in column["samples"]]
    return {"metrics": {m: mean_interval(sample_metric(column, m)) for m in SUMMARY_METRICS},
            "pooled": {f"distinct_{n}": metrics.distinct_n(ids, n) for n in POOLED_N},
            "distinct_texts": len({s["text"] for s in column["samples"]})}


def paired_comparison(column: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``column`` against ``reference``, sample i against sample i (both ran with seed + i)."""
    return {m: paired_difference(sample_metric(column, m), sample_metric(reference, m), better)
            for m, better in PAIRED_METRICS.items()}


def with_statistics(columns: list[dict[str, Any]], reference: int) -> list[dict[str, Any]]:
    """Every column JSON with its ``sample_summary`` and its ``paired`` comparison against column ``reference``."""
    for col in columns:
        col["sample_summary"] = column_summary(col)
        col["paired"] = {"reference": reference, "reference_label": columns[reference]["label"],
                         "interval": "paired t, 95%", **paired_comparison(col, columns[reference])}
    return columns


# ---- the first token ----------------------------------------------------------------------------


def first_token_histogram(column: dict[str, Any]) -> list[dict[str, Any]]:
    """The first tokens of a column's samples counted against sample 0's step-0 sampler probabilities.

    One entry per token of sample 0's recorded top alternatives (``id``, ``text``, ``sampler_prob``,
    ``count``, ``share``), then ``other``: every other token (id None), with the rest of the probability.
    """
    first = Counter(s["tokens"][0] for s in column["samples"] if s["tokens"])
    n = sum(first.values())
    top = column["tokens"][0]["top"] if column["tokens"] else []
    out = [{"id": t["id"], "text": t["text"], "sampler_prob": t.get("sampler_prob", 0.0), "count": first[t["id"]]}
           for t in top]
    listed = {t["id"] for t in top}
    out.append({"id": None, "text": "other", "sampler_prob": max(0.0, 1.0 - sum(t["sampler_prob"] for t in out)),
                "count": sum(c for tok, c in first.items() if tok not in listed)})
    for entry in out:
        entry["share"] = entry["count"] / n if n else 0.0
    return out


def samples_frame(run: dict[str, Any]):
    """One row per (column, sample): seed, finish reason, text, token ids and metrics (the samples CSV)."""
    import pandas as pd

    records = [{"column": col["label"], "sampler": col["sampler"], "sample": s["sample"], "seed": s["seed"],
                "finish_reason": s["finish_reason"], **s["metrics"], "text": s["text"],
                "token_ids": " ".join(map(str, s["tokens"]))}
               for col in run["columns"] for s in col["samples"]]
    return pd.DataFrame.from_records(records)
