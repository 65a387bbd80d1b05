"""A run: everything one decoding owns, from its options to its KV cache.

    Run      the prompt, options and columns (what a caller reads and exports), and the
             decoding's own state: the prompt tensor, whether passes return attention
             weights, and the row plan that holds the rows' layout and their KV cache
    Column   one sampler's state: its generator, tokens, telemetry rows, and a lookahead
             step waiting for its candidates' outputs; one Column per sample of a column
    samples  ``Run.columns`` are the columns' sample 0 (a one-sample run's columns); ``Run.samples[c]``
             holds column c's samples, item i seeded ``seed + i``; ``Run.decoding`` every Column that
             owns rows, sample by sample (sample 0 of every column first, as a one-sample run lays them)
    per step CleanStep (the clean distribution's statistics, read in one batch) and
             StepRecord (what the sampler decided from it), named fields the loop passes on

The Engine holds none of this: two Runs on one Engine decode one after the other or
interleaved, each with its own cache and generators.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from . import metrics
from .samples import with_statistics
from .columns import ColumnSpec
from .divergence import Divergence, divergences
from .rows import RowPlan
from .samplers import Sampler
from .telemetry import DistributionStats, TokenRow
from .traces import ChainTrace, CleanWindow, RunTraces


class StopSignal(Protocol):
    """What ``stop`` may be: a threading.Event, or the page's StopFlag that other processes can set."""

    def is_set(self) -> bool: ...


@dataclass
class RunOptions:
    seed: int = 0
    max_new_tokens: int = 50
    chat: bool = False
    record_order_parameter: bool = True  # Kuramoto R per token (needs attention weights)
    probe_layer: int | None = None  # layer whose R is the column's order_parameter; None: ~58% depth
    record_traces: bool = True  # each token's chain trace (traces.py), kept on the run, not exported
    samples: int = 1  # samples per column; sample i is seeded seed + i (docs/samples.md)
    reference: int = 0  # the column the others are compared with, sample by sample


def describe_branch(point: dict[str, Any]) -> str:
    """``column 2, token 7: ' door' → ' gate'`` (1-based, as the page counts) from a Parent's JSON."""
    return (f"column {point['column'] + 1}, token {point['step'] + 1}: "
            f"{point.get('replaced_text', '')!r} → {point.get('token_text', '')!r}")


@dataclass
class Parent:
    """Where a branch run comes from: the parent's column, the step whose token was replaced, the new token.

    The branch's prompt ids are the parent's prompt text, tokenized as the parent's were, plus
    ``continuation``: the parent's own continuation, its column's tokens before ``step``, and ``token``.
    """

    column: int
    step: int
    token: int
    replaced: int | None  # the parent column's token at ``step``
    prompt: str  # the parent's prompt text (the branch shares it)
    continuation: list[int]
    column_label: str = ""
    token_text: str = ""
    replaced_text: str = ""
    continuation_text: str = ""  # the continuation before ``token``, decoded (the page shows it)

    def describe(self) -> str:
        return describe_branch(dataclasses.asdict(self))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CleanStep:
    """What a step's clean distribution says about one row: read for all rows in one batch."""

    stats: DistributionStats  # entropy, varentropy and log-probabilities of this row ([1, V], [1])
    top_ids: list[int]  # the clean top-5
    top_probs: list[float]
    r_layers: list[float] | None  # Kuramoto R of every layer; None when not recorded
    window: CleanWindow | None = None  # the clean top-64: the top-5, the top-k's hint, the trace's clean read


@dataclass
class StepRecord:
    """One column's step between its sampler's decision and its telemetry row."""

    clean: CleanStep
    params: dict[str, Any]  # the sampling parameters in force
    signals: dict[str, Any]  # the sampler's telemetry (fusion_alpha, state, ...)
    drawn_from: torch.Tensor | None  # the distribution drawn from; None: a deterministic choice
    support: torch.Tensor | None = None  # ids outside which drawn_from is 0 (None: not known; read it all)
    candidates: list[int] | None = None  # a lookahead: tokens fed as rows next pass, one chosen after
    u: float = 0.0  # the column's uniform number at this step
    own_choice: bool = False  # the sampler chose the token itself (argmax, best of n), not the draw at u
    stages: list[Any] = field(default_factory=list)  # the decision's stages (the chain trace's input)
    logits: torch.Tensor | None = None  # the clean logits (kept only while a trace is to be made)


@dataclass
class Column:
    """A column's state: its sampler, its tokens so far and their telemetry."""

    label: str
    sampler_name: str
    settings: Any
    sampler: Sampler
    generator: torch.Generator
    spec: ColumnSpec | None = None  # as asked for (its label None where the label is made)
    sample: int = 0  # this Column is sample ``sample`` of its column, seeded run seed + sample
    tokens: list[int] = field(default_factory=list)
    rows: list[TokenRow] = field(default_factory=list)
    finish_reason: str | None = None  # "eos", "length" or "stopped"
    final_text: str | None = None  # decoded once the column finishes (special tokens skipped)
    lookahead: StepRecord | None = None  # a step whose token awaits its candidates' outputs (choose())
    decoded_tokens: int = 0  # tokens whose text has been given to a row (incremental decoding)
    traces: list[ChainTrace] = field(default_factory=list)  # one per token, when the run records them

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        """The column's text: streamed token pieces until it finishes, then the clean decode."""
        return self.final_text if self.final_text is not None else "".join(r.text for r in self.rows)

    def new_text(self, tokenizer: Any) -> str:
        """The newest token's share of the decoded text; held back while a character is incomplete."""
        ids, start = self.tokens, self.decoded_tokens
        anchor = max(0, start - 4)  # a little context: some tokenizers decode a token differently alone
        base = tokenizer.decode(ids[anchor:start]) if start > anchor else ""
        full = tokenizer.decode(ids[anchor:])
        if full.endswith("\ufffd") and len(ids) - start < 4:
            return ""
        self.decoded_tokens = len(ids)
        return full[len(base):] if full.startswith(base) else full

    def to_json(self, elapsed_s: float, prompt: str = "") -> dict[str, Any]:
        return {
            "sampler": self.sampler_name,
            "label": self.label,
            "settings": dataclasses.asdict(self.settings),
            "spec": self.spec.to_dict() if self.spec else None,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "tokens": [row.to_dict() for row in self.rows],
            "metrics": metrics.column_metrics(self.rows, self.text, elapsed_s, prompt),
        }

    def sample_json(self, sample: int, seed: int, elapsed_s: float, prompt: str = "") -> dict[str, Any]:
        """This Column as sample ``sample`` of its column: compact (token ids, no per-token telemetry)."""
        return {"sample": sample, "seed": seed, "text": self.text, "finish_reason": self.finish_reason,
                "tokens": list(self.tokens), "metrics": metrics.column_metrics(self.rows, self.text, elapsed_s, prompt)}


@dataclass
class Run:
    """A whole run; the engine yields it after every step, updated in place."""

    model: str
    prompt: str
    prompt_ids: list[int]
    options: RunOptions
    columns: list[Column]  # sample 0 of each column
    parent: Parent | None = None  # set on a branch run
    samples: list[list[Column]] = field(default_factory=list)  # per column its decoded samples; [c][0] is columns[c]
    step: int = 0  # forward passes done after the prefill
    elapsed_s: float = 0.0
    done: bool = False
    stopped: bool = False
    waiting: str = ""  # why its rows wait to join the shared batch (shared_loop.py); empty: they do not
    # the decoding's own state (not exported)
    prompt_tensor: torch.Tensor | None = field(default=None, repr=False)  # prompt_ids on the model's device
    need_attn: bool = False  # passes return attention weights (R, or a sampler that reads them)
    plan: RowPlan | None = field(default=None, repr=False)  # the rows' layout and their KV cache
    decoding: list[Column] = field(default_factory=list, repr=False)  # every row-owning Column, sample-major
    partners: list[set[int]] = field(default_factory=list, repr=False)  # columns whose sample-0 tokens agree so far
    piece: Callable[[int], str] = field(default=str, repr=False)  # a token's text (the model's tokenizer)

    def __post_init__(self):
        self.samples = self.samples or [[c] for c in self.columns]
        depth = max(len(s) for s in self.samples)
        self.decoding = [s[i] for i in range(depth) for s in self.samples if i < len(s)]
        if not self.partners:
            self.partners = [set(range(len(self.columns))) - {c} for c in range(len(self.columns))]

    def note_token(self, c: int) -> None:
        """Column ``c`` took a token: it parts from every partner whose token at that step differs."""
        tokens = self.columns[c].tokens
        i = len(tokens) - 1
        for o in list(self.partners[c]):
            other = self.columns[o]
            if (len(other.tokens) > i and other.tokens[i] != tokens[i]) or (other.done and len(other.tokens) <= i):
                self.partners[c].discard(o)
                self.partners[o].discard(c)

    @property
    def cache(self) -> Any:
        """The KV cache: one row per row of the last forward pass (None before the prefill)."""
        return self.plan.cache if self.plan is not None else None

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_ids)

    def divergences(self) -> list[Divergence]:
        """Where each pair of columns parts, and which stage parted them (empty without traces)."""
        return divergences([c.label for c in self.columns], [c.tokens for c in self.columns],
                           [c.traces for c in self.columns], self.piece)

    def recorded_traces(self) -> RunTraces:
        """Every token's chain trace, by column (empty lists where the run recorded none)."""
        return RunTraces.of([c.traces for c in self.columns], self.piece)

    def trace(self, column: int, step: int) -> dict[str, Any]:
        """Token ``step`` of column ``column``'s chain trace, as JSON (0-based; a PlaygroundError if absent)."""
        return RunTraces([c.traces for c in self.columns], {}).trace(column, step, self.piece)

    def to_json(self, traces: bool = False) -> dict[str, Any]:
        """The run as the CLI, the page and the exports write it; ``traces``: every token's chain trace too."""
        data = self._json()
        data["divergences"] = [d.to_json() for d in self.divergences()]
        if traces:
            for column, c in zip(data["columns"], self.columns):
                column["traces"] = [t.to_json(self.piece) for t in c.traces]
        return data

    def _json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "seed": self.options.seed,
            "prompt": self.prompt,
            "prompt_ids": self.prompt_ids,
            "chat": self.options.chat,
            "max_new_tokens": self.options.max_new_tokens,
            "probe_layer": self.options.probe_layer,
            "record_order_parameter": self.options.record_order_parameter,
            "parent": self.parent.to_json() if self.parent else None,
            "stopped": self.stopped,
            "elapsed_s": round(self.elapsed_s, 4),
            "samples": self.options.samples,
            "reference_column": self.options.reference,
            "samples_note": "each column's samples[i] is sample i, seeded seed + i; samples[0] repeats the column "
                            "itself (sample 0) in the compact form; a decoded_once column (greedy, temperature 0) "
                            "is decoded once and its samples are identical by construction",
            "columns": with_statistics([self._column_json(c) for c in range(len(self.columns))],
                                       self.options.reference),
        }

    def sample(self, c: int, i: int) -> Column:
        """Sample i of column c (a decoded-once column's one sample stands for all)."""
        decoded = self.samples[c]
        return decoded[min(i, len(decoded) - 1)]

    def _column_json(self, c: int) -> dict[str, Any]:
        """Column c's sample 0 as a one-sample run reports it, plus its ``samples``."""
        out = self.columns[c].to_json(self.elapsed_s, self.prompt)
        out["decoded_once"] = len(self.samples[c]) == 1 and self.options.samples > 1
        out["samples"] = [self.sample(c, i).sample_json(i, self.options.seed + i, self.elapsed_s, self.prompt)
                          for i in range(self.options.samples)]
        return out
