"""Every change this project makes to a stock transformers model, in one place, with one switch.

A model is loaded as ``AutoModelForCausalLM.from_pretrained(..., attn_implementation="eager")``
gives it (eager: the stock attention that returns weights, which R and two samplers read),
then changed as listed here, in this order. Each change computes what stock computes, up to
float32 rounding, and is here for speed or for exact near-ties:

    change                  what it does                                   why
    float32 head            a bfloat16/float16 model's output projection   a half-precision logit has 8 (11)
                            runs in float32 (``Float32Head``)              mantissa bits: near-ties become
                                                                           ties that greedy breaks by id
    one-call RMS norms      each RMSNorm whose output equals               ~8 tensor ops a norm become one:
                            ``torch.rms_norm``'s on a probe runs that      ~1.3 ms a decoding step on a
                            one call (norms.py probes, this swaps)         2-core CPU
    grouped attention       llama/mistral/qwen attention returns weights   eager copies the KV cache per
                            by multiplying each query-head group by its    query head (3x for SmolLM2)
                            own KV head (attention.py)                     every layer and step
    measured linear kernels each CPU float32 nn.Linear runs, per row       which kernel is fastest for a
                            count, the kernel that measured fastest on     thin matrix depends on the CPU
                            this machine (kernels.py measures)             and the rows (up to 3x)
    growing KV cache        a run's cache writes each new position into    DynamicCache concatenates: a
                            spare room (cache.py) instead of ``torch.cat`` copy of the whole cache a step
    side rows from their    a pass's side rows join it at the lowest       below that layer a side row and
    layer                   layer their samplers change, as copies of      its clean row compute the same
                            their clean rows' hidden states there          states: a whole row's work for
                            (``SideRowJoin``, a hook on that layer)        a few layers' difference

The weights stay the same dense parameters with the same state dict: ``generate`` and
``save_pretrained`` work on a changed model.

Side rows. A side row (Phase-Slip's perturbed copy of its clean row, rows.py) is fed the clean
row's token over the clean row's cache; its sampler changes Value vectors only from some layer
up (the lowest perturbed layer: 25 of 30 with the default model's calibrated heads). Below that
layer both rows compute the same states, so a pass with side rows starts with the other rows
alone: the model's own forward runs, and forward pre-hooks on the decoder layers
(``joined_side_rows``) widen the batch at the join layer, each side row starting from a copy
of its clean row's hidden state, and widen the attention mask for the layers above. The
cache's layers below the join hold no side rows. A model whose decoder loop is not stock
Llama's (``JOIN_MODEL_TYPES``), and the stock switch, keep side rows whole.

The switch. ``PLAYGROUND_STOCK=1`` (or ``load_model(..., stock=True)``) makes none of these
changes: the model is stock transformers' own, and runs use a plain ``DynamicCache``. A pass
that needs no attention weights runs through sdpa either way (transformers' own
``set_attn_implementation``, as stock defaults to).

Agreement. With the switch on, logits and greedy tokens equal stock transformers' loaded on its
own, bit for bit. With it off (the default), the float32 logits of the default model agree with
stock's within ``LOGIT_TOLERANCE`` (absolute, in logit units, on logits of about 10-25): the
largest difference measured over every position of the five benchmark prompts is 2.0e-4 on an
AVX2 CPU (float32 rounding of other kernels and one-call norms); the bound is ten times that,
for other CPUs' kernels (AVX-512, AMX), whose rounding differs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import DynamicCache

from .attention import register as register_grouped_attention
from .cache import growing_cache
from .errors import PlaygroundError
from .kernels import MeasuredLinear, choose_linear_kernels
from .norms import one_call_class, one_call_epsilon

LOGIT_TOLERANCE = 2e-3  # |changed - stock| bound on float32 logits (measured: 2.0e-4 on AVX2)
STOCK_VARIABLE = "PLAYGROUND_STOCK"
# model types whose eager attention is plain scaled dot-product + additive mask (no soft-capping,
# no sinks): ``grouped`` computes the same; other models keep their own eager attention
GROUPED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# model types whose decoder loop feeds every layer the hidden states, a batch-shaped mask and
# position embeddings shared by the batch (stock Llama's loop): side rows may join at a layer
JOIN_MODEL_TYPES = GROUPED_MODEL_TYPES


@dataclass(frozen=True)
class ModelChange:
    """One change to a stock model: its name, what it does, and why."""

    name: str
    does: str
    why: str


CHANGES: tuple[ModelChange, ...] = (
    ModelChange("float32 head", "a half-precision model's output projection runs in float32",
                "half-precision logits turn near-ties into ties that greedy breaks by token id"),
    ModelChange("one-call RMS norms", "RMSNorm layers that compute torch.rms_norm's numbers run that one call",
                "about eight tensor operations a norm become one (~1.3 ms a decoding step on 2 cores)"),
    ModelChange("grouped attention", "attention returns its weights without copying the KV cache per query head",
                "eager attention copies the cache once per query head of a group, every layer and step"),
    ModelChange("measured linear kernels", "each CPU float32 linear layer runs the kernel measured fastest "
                "for its shape and row count", "the fastest kernel for thin matrices depends on the CPU"),
    ModelChange("growing KV cache", "a run's cache writes new positions into spare room",
                "DynamicCache copies the whole cache every step (torch.cat)"),
    ModelChange("side rows from their layer", "a pass's side rows join it at the lowest layer their samplers "
                "change, as copies of their clean rows' hidden states there",
                "below that layer a side row computes its clean row's states: a whole row's work for a few "
                "layers' difference"),
)


def stock_requested(stock: bool | None = None) -> bool:
    """``stock`` when given, else $PLAYGROUND_STOCK (1/true/yes/on or 0/false/no/off; unset: off)."""
    if stock is not None:
        return bool(stock)
    raw = os.environ.get(STOCK_VARIABLE, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise PlaygroundError(f"{STOCK_VARIABLE} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")


class Float32Head(torch.nn.Module):
    """The output projection in float32 for a bfloat16/float16 model: logits = h W^T (+ b) in float32.

    A half-precision head rounds every logit to 8 (or 11) mantissa bits: on logits of 10-20 that is a
    step of 0.06, so near-ties become exact ties and greedy picks by token id. The copy costs
    vocab x hidden float32s (113 MB for SmolLM2-135M).
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.weight = torch.nn.Parameter(head.weight.detach().float(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden.float(), self.weight, self.bias)


def float32_head(model: Any) -> bool:
    """Give a half-precision model a float32 output projection (``Float32Head``); True if it got one."""
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32:
        model.set_output_embeddings(Float32Head(head))
        return True
    return False


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Give every RMSNorm layer of ``model`` whose output equals ``torch.rms_norm``'s on a probe the
    one-call forward; returns how many layers got it."""
    fused = 0
    for layer in model.modules():
        eps = one_call_epsilon(layer)
        if eps is not None:
            layer.rms_eps = eps
            layer.__class__ = one_call_class(type(layer))  # same parameters and state dict; only forward changes
            fused += 1
    return fused


def grouped_attention(model: Any) -> bool:
    """Switch a model whose eager attention is plain scaled dot-product to ``grouped``; True if switched."""
    if model.config.model_type not in GROUPED_MODEL_TYPES:
        return False
    model.set_attn_implementation(register_grouped_attention())
    return True


def use_measured_kernels(model: Any, model_name: str, cache: Path | None = None) -> dict[str, dict[int, str]]:
    """Give every CPU float32 nn.Linear of ``model`` its measured kernels (kernels.py); returns
    {shape: {rows: kernel name}}."""
    chosen, per_layer = choose_linear_kernels(model, model_name, cache)
    for layer, by_rows in per_layer:
        layer.packed_weight = None  # a packed layer makes its copy when it first runs the packed kernel
        # a layer that always runs stock stays a plain nn.Linear (the per-call row check costs ~1.3 ms a step)
        layer.__class__ = MeasuredLinear if by_rows else torch.nn.Linear
        layer.kernel_by_rows = by_rows
    return chosen


def apply_changes(model: Any, model_name: str, device: torch.device,
                  kernel_cache: Path | None) -> dict[str, dict[int, str]]:
    """Make every change above to a freshly loaded ``model`` and move it to ``device``; returns the
    kernel table (``use_measured_kernels``)."""
    float32_head(model)
    fuse_rms_norms(model)  # probed on the CPU, before the move
    grouped_attention(model)
    model.to(device)  # on ZeroGPU this is the documented start-up move: it is recorded, then done per call
    return use_measured_kernels(model, model_name, kernel_cache)  # CPU float32 linears only


def kv_cache(config: Any, capacity: int | None, stock: bool) -> DynamicCache:
    """A run's empty KV cache: growing (room for ``capacity`` positions), or stock's DynamicCache."""
    return DynamicCache(config=config) if stock else growing_cache(config, capacity)


def joins_side_rows(model: Any, stock: bool) -> bool:
    """Whether side rows may join ``model``'s passes at a layer (``joined_side_rows``); else they run whole."""
    return not stock and getattr(model.config, "model_type", None) in JOIN_MODEL_TYPES


@dataclass(frozen=True)
class SideRowJoin:
    """Where a pass's side rows join it: below ``layer`` the pass has its other rows only; from ``layer``
    on, row i of the pass continues row ``sources[i]`` of the rows below (a side row: its clean row's)."""

    layer: int
    sources: torch.Tensor  # [rows from ``layer`` on], int64, on the model's device

    def rows(self, below: torch.Tensor) -> torch.Tensor:
        """``below`` [rows below, ...] as the rows from ``layer`` on: each side row a copy of its clean row's."""
        return below.index_select(0, self.sources)

    def shared(self, value: Any) -> Any:
        """A layer's batch-shaped input (a mask, position embeddings) for the rows from ``layer`` on;
        a batch dimension of 1 is shared by every row and stays as it is."""
        if isinstance(value, tuple):
            return tuple(self.shared(part) for part in value)
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] > 1:
            return self.rows(value)
        return value


BATCH_SHAPED_INPUTS = ("attention_mask", "position_embeddings", "position_ids")  # a decoder layer's, besides the states


@contextmanager
def joined_side_rows(model: Any, join: SideRowJoin | None) -> Iterator[None]:
    """Inside, ``model``'s passes take the rows below ``join.layer`` and widen to every row there.

    Forward pre-hooks on the decoder layers: the join layer's widens the hidden states (each side
    row starts as a copy of its clean row's); it and every layer above widen the mask and position
    inputs the model made for the rows below. ``join`` None: no hook, every row at every layer.
    """
    if join is None:
        yield
        return

    def widen_inputs(layer: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {k: join.shared(v) if k in BATCH_SHAPED_INPUTS else v for k, v in kwargs.items()}

    def widen_states(layer: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:  # stock decoder loops pass the hidden states first, by position
            return (join.rows(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": join.rows(kwargs["hidden_states"])}

    layers = model.get_decoder().layers
    handles = [layers[join.layer].register_forward_pre_hook(widen_states, with_kwargs=True)]
    handles += [layer.register_forward_pre_hook(widen_inputs, with_kwargs=True) for layer in layers[join.layer:]]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
