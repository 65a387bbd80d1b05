"""Linear kernels chosen by measurement, per weight shape and row count, on the machine at hand.

Decoding multiplies thin matrices: one row per row of the batch (1-8 columns, plus side and
candidate rows); a short prompt's prefill slightly fatter ones (a prompt of 9-32 tokens), a
long prompt's fat ones. Which CPU kernel is fastest depends on the CPU, the shape and the row
count, so nothing is assumed. These compute the same y = x W^T + b from the same dense weight:

    stock        F.linear: MKL's x W^T. On one 2-core machine it takes 3-4x longer at 4+ rows
                 than at 2 (0.40 against 0.11 ms for 576 x 576, weights read from memory).
    onednn       oneDNN's linear on the dense weight.
    weight_left  (W x^T)^T: the same product with the weight as the left operand and x^T a
                 transposed view, which MKL multiplies by a thin matrix without that cliff. On a
                 2-core AVX2 EPYC at 2 rows: 0.12 against 0.20 ms (stock) for 576 x 576, 0.28
                 against 0.40 ms (onednn) for 576 x 1536; a contiguous copy of x^T takes 2-3x
                 longer there.
    packed       MKL's packed sgemm on a copy of the weight re-laid for 8 rows (8 rows a call,
                 the last one padded; timed up to 16 rows): memory-bound at 3-8 rows (0.23
                 against 0.37 ms for 576 x 1536, 6.9 against 12.6 ms for the 576 x 49152 output
                 layer at 4 rows), slower than stock at 1-2. The copy is as large as the layer's
                 weight (resident memory grows by 110.6 MB per 113.2 MB layer), so copies are
                 made only within a budget (``PLAYGROUND_PACK_MB``, default an eighth of the
                 machine's memory), the layers that save the most time per byte first, and each
                 when its layer first runs the kernel (a pass of 3-16 rows: a multi-column
                 step, a short prompt's prefill; one-column decoding alone never does).

At load, each distinct weight shape is timed with each kernel at 1, 2, 4, 8, 16, 32, 48 and 64 rows
(48-64: the shared batch of several sessions), on a pool of copies larger than the CPU's last-level
cache (a model's weights stream from memory once per step; a warm single matrix would flatter the
kernels that reuse cache). The fastest is kept per (shape, rows) and the table cached per machine,
torch version, model and instruction cap (``ISA_LIMITS``); a row count between two measured ones
takes the next one up's, and above 64 rows (a long prompt's chunks) stock runs. The weights stay
ordinary dense tensors, so the model is still a plain transformers model (``generate``, state dicts,
other devices).

``PLAYGROUND_KERNELS=stock``, ``onednn`` or ``weight_left`` (that kernel at 1-64 rows) or ``auto``
(the default: measured, ``packed`` included within the budget).
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .errors import PlaygroundError
from .progress import say

MEASURED_ROWS = (1, 2, 4, 8, 16, 32, 48, 64)
REPEATS = 1
POOL_BYTES = 40 * 2**20  # weights timed per shape: more than a 36 MB last-level cache
MAX_COPIES = 128  # ... of one small shape (a model's small layers share the cache with its big ones)
PACK_ROWS = 8  # MKL packs a weight for one row count: a call takes that many rows, the last padded
PACKED_MAX_ROWS = 16  # more rows stream the weight more times: other kernels win
TABLE_VERSION = 9  # part of the cache file name: tables measured another way are measured again
# settings that cap the instructions torch's kernels use: a capped run has a table of its own
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x W^T + b through oneDNN, on the dense weight (no prepacked copy)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def weight_left_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """y = (W x^T)^T + b: the weight as the left operand of one matrix product."""
    rows = x.reshape(-1, x.shape[-1])
    # x^T stays a transposed view: MKL multiplies it 1.5-3x faster at 2-8 rows than a contiguous copy
    y = torch.mm(weight, rows.t()).t().contiguous()  # contiguous: callers .view() the output
    if bias is not None:
        y += bias
    return y.view(*x.shape[:-1], weight.shape[0])


def packed_available() -> bool:
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight re-laid in MKL's packed format for ``PACK_ROWS`` rows: a copy of the weight's size
    (an opaque tensor whose ``numel`` is not its storage; ``packed_bytes`` counts the weight's bytes)."""
    return torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), PACK_ROWS)


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  packed: torch.Tensor) -> torch.Tensor:
    """y = x W^T + b through MKL's packed sgemm, ``PACK_ROWS`` rows a call (the last call's padded)."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    padded = rows.new_zeros(-(-n // PACK_ROWS) * PACK_ROWS, rows.shape[1])
    padded[:n] = rows
    chunks = [torch.ops.mkl._mkl_linear(chunk, packed, weight, bias, PACK_ROWS) for chunk in padded.split(PACK_ROWS)]
    y = (chunks[0] if len(chunks) == 1 else torch.cat(chunks))[:n]
    return y.view(*x.shape[:-1], weight.shape[0])


KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "stock": F.linear, "onednn": onednn_linear, "weight_left": weight_left_linear}
MODES = (*KERNELS, "auto")


class MeasuredLinear(torch.nn.Linear):
    """An nn.Linear that runs another kernel for the row counts where that measured faster."""

    kernel_by_rows: dict[int, Callable] = {}  # rows -> kernel; absent: stock
    packed_weight: torch.Tensor | None = None  # the packed kernel's copy of the weight, once made

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel_by_rows.get(x.numel() // x.shape[-1])
        if kernel is None or not x.is_cpu:  # the kernels were measured for the CPU; a moved model runs stock
            return F.linear(x, self.weight, self.bias)
        if kernel is packed_linear:
            if self.packed_weight is None:  # made on first use: a model only ever fed one row never pays for it
                self.packed_weight = pack_weight(self.weight)
            return packed_linear(x, self.weight, self.bias, self.packed_weight)
        return kernel(x, self.weight, self.bias)


def _ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def time_shape(in_features: int, out_features: int, bias: bool) -> dict[int, dict[str, float]]:
    """{rows: {kernel: ms per layer}} for one weight shape: the best of ``REPEATS`` passes of each
    kernel over a pool of ``POOL_BYTES`` of weights (constant values: speed only), the kernels
    interleaved, as a forward streams its layers from memory."""
    copies = max(1, min(MAX_COPIES, POOL_BYTES // (4 * in_features * out_features)))
    pool = [torch.full((out_features, in_features), 0.01) for _ in range(copies)]
    b = torch.full((out_features,), 0.01) if bias else None
    kernels = {k: fn for k, fn in KERNELS.items() if k != "onednn" or onednn_available()}
    if packed_available():
        packs = {w.data_ptr(): pack_weight(w) for w in pool}
        kernels["packed"] = lambda x, w, b: packed_linear(x, w, b, packs[w.data_ptr()])
    inputs = {rows: torch.randn(1, rows, in_features) for rows in MEASURED_ROWS}
    best = {rows: {k: float("inf") for k in kernels if k != "packed" or rows <= PACKED_MAX_ROWS}
            for rows in MEASURED_ROWS}
    with torch.inference_mode():
        for fn in kernels.values():  # warm-up: first calls pay for allocation and kernel selection
            fn(inputs[1], pool[0], b)
        for _ in range(REPEATS):
            for rows, x in inputs.items():
                for k in best[rows]:
                    fn = kernels[k]
                    best[rows][k] = min(best[rows][k], _ms(lambda: [fn(x, w, b) for w in pool]) / copies)
    return best


def _shape_key(layer: torch.nn.Linear) -> str:
    return f"{layer.in_features}x{layer.out_features}{'+b' if layer.bias is not None else ''}"


def _cache_file(folder: Path, model_name: str) -> Path:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    stamp = (f"v{TABLE_VERSION}|{model_name}|{cpu}|{os.cpu_count()}|{torch.get_num_threads()}"
             f"|torch{torch.__version__}")
    limits = [f"{name}={os.environ[name]}" for name in ISA_LIMITS if os.environ.get(name)]
    if limits:
        stamp += "|" + "|".join(limits)
    safe = "".join(c if c.isalnum() else "-" for c in stamp)[:200]
    return folder / f"{safe}.json"


def kernel_table(layers: list[torch.nn.Linear], model_name: str, cache: Path | None) -> dict[str, dict[str, Any]]:
    """{shape: {rows: {kernel: ms}, ...}} for the distinct shapes of ``layers``, cached."""
    path = _cache_file(cache, model_name) if cache is not None else None
    shapes = {_shape_key(layer): layer for layer in layers}
    if path is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if all(set(cached.get(key, {})) == {str(r) for r in MEASURED_ROWS} for key in shapes):
                return cached
        except (OSError, ValueError, AttributeError):
            pass  # unreadable or measured otherwise: measure again
    say(f"timing linear kernels for {len(shapes)} weight shapes on this CPU, once per machine "
        f"(~{4 * len(shapes)} s on 2 cores)…")
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


def choose_linear_kernels(model: Any, model_name: str,
                          cache: Path | None = None) -> tuple[dict[str, dict[int, str]], list[tuple[Any, dict]]]:
    """The kernel that measured fastest for each CPU float32 nn.Linear's shape at each row count 1-64
    (``packed`` only for the shapes within the memory budget): ({shape: {rows: kernel name}},
    [(layer, {rows: kernel}) for every layer, only its non-stock row counts]). Changes no layer:
    ``model_changes.use_measured_kernels`` gives the layers their kernels."""
    mode = os.environ.get("PLAYGROUND_KERNELS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise PlaygroundError(f"PLAYGROUND_KERNELS must be one of {', '.join(MODES)}, got {mode!r}")
    layers = [m for m in model.modules() if type(m) in (torch.nn.Linear, MeasuredLinear)
              and m.weight.device.type == "cpu" and m.weight.dtype == torch.float32]
    if mode == "onednn" and not onednn_available():
        mode = "stock"
    if mode == "auto" and layers:
        table = kernel_table(layers, model_name, cache)
        packable = shapes_to_pack(table, layers, pack_budget_bytes())
        measured = {shape: {int(r): _fastest(ms, shape in packable) for r, ms in per_rows.items()}
                    for shape, per_rows in table.items()}
    else:
        measured = {_shape_key(m): dict.fromkeys(MEASURED_ROWS, "stock" if mode == "auto" else mode) for m in layers}
    chosen = {shape: _fill_rows(by_rows) for shape, by_rows in measured.items()}
    kernels = {**KERNELS, "packed": packed_linear}
    per_layer = [(layer, {r: kernels[k] for r, k in chosen[_shape_key(layer)].items() if k != "stock"})
                 for layer in layers]
    return chosen, per_layer


def pack_budget_bytes() -> int:
    """Memory the packed copies may take: ``PLAYGROUND_PACK_MB``, else an eighth of the machine's memory."""
    value = os.environ.get("PLAYGROUND_PACK_MB", "").strip()
    if value:
        try:
            megabytes = float(value)
        except ValueError:
            megabytes = -1.0
        if not megabytes >= 0:
            raise PlaygroundError(f"PLAYGROUND_PACK_MB must be a number of megabytes >= 0, got {value!r}")
        return int(megabytes * 1e6)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (AttributeError, ValueError, OSError):
        return 0  # memory unknown: no copies


def shapes_to_pack(table: dict[str, dict[str, Any]], layers: list[torch.nn.Linear], budget: int) -> set[str]:
    """The shapes whose layers get a packed copy: those where ``packed`` measured fastest at some row
    count, the most milliseconds saved per byte first, while their weights' bytes fit in ``budget``."""
    saving: dict[str, float] = {}  # ms a forward saves at the row count where packing helps most
    size: dict[str, int] = {}
    for layer in layers:
        key = _shape_key(layer)
        ms_by_rows = [ms for ms in table[key].values() if "packed" in ms]
        per_layer = max((min(t for k, t in ms.items() if k != "packed") - ms["packed"] for ms in ms_by_rows),
                        default=0.0)
        if per_layer > 0:
            saving[key] = saving.get(key, 0.0) + per_layer
            size[key] = size.get(key, 0) + layer.weight.numel() * layer.weight.element_size()
    chosen, spent = set(), 0
    for key in sorted(saving, key=lambda k: saving[k] / size[k], reverse=True):
        if spent + size[key] <= budget:
            chosen.add(key)
            spent += size[key]
    return chosen


def _fastest(ms: dict[str, float], may_pack: bool) -> str:
    """The kernel with the least time, ``packed`` only where the layer may have a packed copy."""
    return min((k for k in ms if k != "packed" or may_pack), key=ms.get)


def packed_bytes(model: Any) -> int:
    """Memory held by the packed weight copies made so far (the ``packed`` kernel's): each is its weight's size."""
    return sum(m.weight.numel() * m.weight.element_size() for m in model.modules()
               if getattr(m, "packed_weight", None) is not None)


def _fill_rows(measured: dict[int, str]) -> dict[int, str]:
    """The kernel of each row count 1..64: each takes the next measured count's (3 -> 4)."""
    return {r: measured[min(m for m in MEASURED_ROWS if m >= r)] for r in range(1, MEASURED_ROWS[-1] + 1)}
