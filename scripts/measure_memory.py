"""The largest run a user can ask for, and its memory: 8 columns x 1,024 new tokens x the longest prompt.

    python scripts/measure_memory.py [--tokens 1024] [--columns 8] [--model ID]

Prints one JSON object: the prompt's tokens, the peak resident memory of the whole process and its
growth during the run (Linux VmHWM), and the time. Two columns of each of the four samplers (Phase-Slip's
side rows and the adaptive lookahead's candidate rows make the batch larger than the column count).
The prompt is the context minus --tokens, so the cache ends at the full context (8,192 positions on
the default model) whatever --tokens is: ``--tokens 64`` reaches the same final cache as 1,024 in a
fraction of the time (a 1,024-token run takes over 40 minutes on 2 cores: ~1 s a step at 8k context).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from playground import load_model
from playground.bench import _rss_gb, peak_rss_growth_gb
from playground.engine import ColumnSpec, Engine, RunOptions

SAMPLERS = ("greedy", "temperature", "phase_slip", "adaptive_entropy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--columns", type=int, default=8)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    print("measure_memory: loading the model", file=sys.stderr, flush=True)
    lm = load_model(args.model)
    prompt_tokens = lm.max_context - args.tokens  # the longest prompt that leaves room for every new token
    prompt = "word " * (prompt_tokens - 1)  # + the BOS-free tokenizer's own: "word" x n -> n tokens
    specs = [ColumnSpec(SAMPLERS[i % len(SAMPLERS)], label=f"{SAMPLERS[i % len(SAMPLERS)]} #{i // 4 + 1}")
             for i in range(args.columns)]
    engine = Engine(lm)
    engine.run("warm-up", list(SAMPLERS), RunOptions(max_new_tokens=2))  # calibration, kernels
    after_load = _rss_gb()
    print(f"measure_memory: {args.columns} columns x {args.tokens} new tokens on a {prompt_tokens:,}-token prompt "
          "(about 1 s a step at 8k context on 2 cores)", file=sys.stderr, flush=True)
    runs = []
    start = time.perf_counter()
    growth = peak_rss_growth_gb(lambda: runs.append(engine.run(prompt, specs, RunOptions(max_new_tokens=args.tokens))))
    run = runs[0]
    print(json.dumps({
        "model": lm.name, "prompt_tokens": len(run.prompt_ids), "columns": args.columns,
        "new_tokens": [len(c.tokens) for c in run.columns], "seconds": round(time.perf_counter() - start, 1),
        "rss_after_load_gb": round(after_load, 3), "peak_growth_gb": round(growth, 3),
        "peak_process_gb": round(_rss_gb("VmHWM"), 3)}))


if __name__ == "__main__":
    main()
