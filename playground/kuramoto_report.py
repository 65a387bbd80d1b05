"""``python -m playground kuramoto-report [--json]``: does the per-token Kuramoto R carry information?

For each prompt, ONE batched Engine.run generates greedily and at T = 1.0 (top-k 0, top-p 1) side
by side; we report the mean R of the generated tokens per prompt and mode, and how well R
separates the two modes: the Mann-Whitney AUC over the per-prompt means (and over all tokens).
AUC = P(R of a greedy sample > R of a T = 1 sample); 0.5 means R carries no information.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any, Sequence

import torch

from .models import add_model_arguments, model_from_arguments
from .prompts import BENCHMARK_PROMPTS
from .samplers import PlaygroundError
from .tables import format_table

# our own prompts, added to the five benchmark prompts: recipe, history, code, memoir
REPORT_PROMPTS: tuple[str, ...] = BENCHMARK_PROMPTS + (
    "The recipe for a good loaf of bread starts with",
    "In 1854, the city of London faced an outbreak of",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "My favourite memory from childhood is",
)
MODES = {"greedy": ("greedy", {}), "T=1.0": ("temperature", {"temperature": 1.0, "top_k": 0, "top_p": 1.0})}
ACCEPT_DISTANCE = 0.3  # the read-out is acceptable if |AUC - 0.5| >= this


def mann_whitney_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """P(X > Y) + P(X = Y) / 2 for X from ``positives``, Y from ``negatives`` (all pairs, O(n m))."""
    if not positives or not negatives:
        raise PlaygroundError("the AUC needs at least one value in each group")
    x = torch.tensor(positives, dtype=torch.float64).unsqueeze(1)
    y = torch.tensor(negatives, dtype=torch.float64).unsqueeze(0)
    return float((x > y).double().mean() + 0.5 * (x == y).double().mean())


def report(lm, prompts: Sequence[str], tokens: int, seed: int = 0, probe_layer: int | None = None,
           progress: bool = False) -> dict[str, Any]:
    """Generate both modes per prompt in one batched run; mean R per prompt and mode, and the AUCs.

    ``progress``: a bar on stderr counting the prompts (a run of 120 tokens takes tens of seconds)."""
    from tqdm import tqdm

    from .engine import ColumnSpec, Engine, RunOptions

    engine = Engine(lm)
    specs = [ColumnSpec(name, dict(settings), label) for label, (name, settings) in MODES.items()]
    rows: list[dict[str, Any]] = []
    per_token: dict[str, list[float]] = {label: [] for label in MODES}
    probe = None
    for prompt in tqdm(prompts, desc="kuramoto-report", unit="prompt", file=sys.stderr, disable=not progress):
        run = engine.run(prompt, specs, RunOptions(seed=seed, max_new_tokens=tokens, probe_layer=probe_layer))
        probe = run.options.probe_layer
        row: dict[str, Any] = {"prompt": prompt}
        for col in run.columns:
            values = [r.order_parameter for r in col.rows]
            per_token[col.label] += values
            row[f"R {col.label}"] = round(statistics.fmean(values), 4)
            row[f"tokens {col.label}"] = len(values)
        rows.append(row)
    greedy, sampled = ([r[f"R {label}"] for r in rows] for label in MODES)
    auc = mann_whitney_auc(greedy, sampled)
    return {
        "model": lm.name, "probe_layer": probe, "tokens": tokens, "seed": seed, "prompts": rows,
        "mean_R": {label: round(statistics.fmean(r[f"R {label}"] for r in rows), 4) for label in MODES},
        "auc_prompt_means": round(auc, 4),
        "auc_tokens": round(mann_whitney_auc(per_token["greedy"], per_token["T=1.0"]), 4),
        "acceptable": abs(auc - 0.5) >= ACCEPT_DISTANCE,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=120, help="new tokens per prompt and mode")
    p.add_argument("--probe-layer", type=int, default=None, help="layer whose R is read (default ~58%% depth)")
    p.add_argument("--seed", type=int, default=0)
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    result = report(model_from_arguments(args), REPORT_PROMPTS, args.tokens, args.seed, args.probe_layer,
                    progress=True)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(f"model: {result['model']}   probe layer: {result['probe_layer']}   tokens: {result['tokens']}"
          f"   seed: {result['seed']}\n")
    table = [{**r, "prompt": r["prompt"].replace("\n", " ")[:40]} for r in result["prompts"]]
    table.append({"prompt": "mean", **{f"R {k}": v for k, v in result["mean_R"].items()},
                  **{f"tokens {k}": "" for k in MODES}})
    print(format_table(table, ["prompt", "R greedy", "R T=1.0", "tokens greedy", "tokens T=1.0"]))
    verdict = "acceptable" if result["acceptable"] else "NOT acceptable"
    print(f"\nAUC greedy vs T=1.0 by R: per-prompt means {result['auc_prompt_means']:.3f} ({verdict}: "
          f"|AUC - 0.5| >= {ACCEPT_DISTANCE} needed), per token {result['auc_tokens']:.3f}")
    return 0
