"""Timing for the benchmarks: interleaved repeats, best of them (interference only ever adds time)."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn`` takes, its queued GPU work included; and its result."""
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
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
