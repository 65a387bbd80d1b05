"""Linear kernels chosen by measurement, per weight shape and row count, on the machine at hand.

Decoding multiplies thin matrices: one row per row of the batch (1-8 columns, plus side and
candidate rows); the prefill multiplies fat ones (a chunk of the prompt). Which of PyTorch's two
CPU kernels is faster depends on the CPU, the shape and the row count: on one machine oneDNN
was 1.6x faster than MKL at 2 rows, on another MKL was 1.7x faster at 1 row. So nothing is
assumed: at load, each distinct weight shape is timed with both kernels at 1, 2, 4 and 8 rows
(~0.3 s for the default model), the faster one is kept per (shape, rows), and the table is
cached per machine, torch version and model. Row counts above 8 (the prefill) use MKL, which
measured as fast or faster there. The weights stay ordinary dense float32 tensors, so the model
is still a plain transformers model (``generate``, state dicts, other devices).

``PLAYGROUND_KERNELS=stock`` (always MKL, i.e. nn.Linear), ``onednn`` (oneDNN at 1-8 rows) or
``auto`` (the default: measured).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .errors import PlaygroundError

MEASURED_ROWS = (1, 2, 4, 8)
REPEATS = 3
KERNELS = ("stock", "onednn", "auto")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b through oneDNN, on the dense weight (no prepacked copy)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class MeasuredLinear(torch.nn.Linear):
    """An nn.Linear that runs through oneDNN for the row counts where that measured faster."""

    onednn_rows: frozenset[int] = frozenset()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] in self.onednn_rows:
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


def _best_ms(fn, repeats: int = REPEATS) -> float:
    fn()  # warm-up: first calls pay for allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def time_shape(in_features: int, out_features: int, bias: bool) -> dict[int, dict[str, float]]:
    """{rows: {"stock": ms, "onednn": ms}} for one weight shape (random weights: speed only)."""
    weight = torch.randn(out_features, in_features)
    b = torch.randn(out_features) if bias else None
    out = {}
    with torch.inference_mode():
        for rows in MEASURED_ROWS:
            x = torch.randn(1, rows, in_features)
            out[rows] = {"stock": _best_ms(lambda: F.linear(x, weight, b)),
                         "onednn": _best_ms(lambda: onednn_linear(x, weight, b))}
    return out


def _shape_key(layer: torch.nn.Linear) -> str:
    return f"{layer.in_features}x{layer.out_features}{'+b' if layer.bias is not None else ''}"


def _cache_file(folder: Path, model_name: str) -> Path:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    stamp = f"{model_name}|{cpu}|{os.cpu_count()}|{torch.get_num_threads()}|torch{torch.__version__}"
    safe = "".join(c if c.isalnum() else "-" for c in stamp)[:200]
    return folder / f"{safe}.json"


def kernel_table(layers: list[torch.nn.Linear], model_name: str, cache: Path | None) -> dict[str, dict[str, Any]]:
    """{shape: {rows: {"stock": ms, "onednn": ms}, ...}} for the distinct shapes, cached."""
    path = _cache_file(cache, model_name) if cache is not None else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    shapes = {_shape_key(layer): layer for layer in layers}
    table = {key: {str(r): ms for r, ms in time_shape(layer.in_features, layer.out_features,
                                                      layer.bias is not None).items()}
             for key, layer in shapes.items()}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table, indent=1))
        except OSError:
            pass  # a read-only cache folder: measure again next time
    return table


def choose_linear_kernels(model: Any, model_name: str, cache: Path | None = None) -> dict[str, list[int]]:
    """Make every CPU float32 nn.Linear of ``model`` that some row count runs faster on oneDNN a
    MeasuredLinear; returns {shape: oneDNN rows}."""
    mode = os.environ.get("PLAYGROUND_KERNELS", "auto").strip().lower() or "auto"
    if mode not in KERNELS:
        raise PlaygroundError(f"PLAYGROUND_KERNELS must be one of {', '.join(KERNELS)}, got {mode!r}")
    layers = [m for m in model.modules() if type(m) in (torch.nn.Linear, MeasuredLinear)
              and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
    if mode == "stock" or not onednn_available() or not layers:
        chosen = {_shape_key(m): [] for m in layers}
    elif mode == "onednn":
        chosen = {_shape_key(m): list(MEASURED_ROWS) for m in layers}
    else:
        table = kernel_table(layers, model_name, cache)
        chosen = {shape: [int(r) for r, ms in per_rows.items() if ms["onednn"] < ms["stock"]]
                  for shape, per_rows in table.items()}
    for layer in layers:
        rows = frozenset(_fill_rows(chosen[_shape_key(layer)]))
        # same parameters, same state dict: only forward changes; a layer that never runs oneDNN
        # stays a plain nn.Linear (the per-call row check costs ~1.3 ms a step for the default model)
        layer.__class__ = MeasuredLinear if rows else torch.nn.Linear
        layer.onednn_rows = rows
    return chosen


def _fill_rows(measured: list[int]) -> list[int]:
    """Row counts 1..8 that follow a measured choice: each takes the next measured count up (3 -> 4)."""
    return [r for r in range(1, MEASURED_ROWS[-1] + 1)
            if min(m for m in MEASURED_ROWS if m >= r) in measured]
