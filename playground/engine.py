"""The decoding engine: one loop, one batched forward pass per step, for every sampler.

    prompt -> tokens -> prefill once -> per step: plan the rows, one forward over all rows
           -> each sampler decides from its rows -> one telemetry row per token

Shared loop. ``stream(..., shared=True)`` prefills the run alone, then steps it in the model's
shared loop with every other such run (shared_loop.py): one pass a step over all their rows, each
run deciding from its own rows with this module's code (``row_requests``, ``after_pass``).

State. Everything one decoding owns (columns, options, prompt tensor, the row plan and its KV
cache) lives on its ``Run`` (runs.py); the Engine is the model and this loop's code. The model
is locked per block between two yields, and each pass asks for the attention it needs, so runs
on one model may interleave.

Rows. Every column (sampler) is one row of the batch, plus the side and candidate rows its
sampler asks for; ``rows.RowPlan`` lays them out and keeps the cache in step (see rows.py).
Prefill. The prompt goes in without attention weights (sdpa, in chunks), and its last token
is fed like a decoding step, so memory grows linearly with the prompt.

Branches. ``branch`` runs a run's columns again from another token at one step of one column:
the prompt ids gain that column's tokens before the step, then the token (``Parent`` says which).

Randomness (common random numbers). Each column has its own torch.Generator seeded with the
run seed alone, and the engine draws exactly one uniform number per column per step, used
or not. A column's tokens therefore do not depend on its neighbours, and two samplers that
produce the same distribution produce the same tokens.

Samples. With ``samples`` = N every column decodes N samples, each one more Column of the same
batch (``Run.decoding``); sample i's generator and sampler start from seed + i, so sample 0 is
the one-sample run and sample i of every column shares its random numbers (docs/samples.md).

Devices. Every tensor of a run lives on the model's device, and statistics are float32
whatever the model's dtype. The random draws alone stay on CPU generators (and the draw's
inverse CDF on the CPU, in float64), so a run's tokens depend on its distributions, not on a
device's random number generator.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Iterator

import torch

from . import kuramoto, traces
from .columns import MAX_COLUMNS, ColumnSpec, check_columns, column_from_dict, column_labels
from .draw import draw
from .inputs import prompt_ids
from .model_changes import SideRowJoin
from .models import LoadedModel, last_attention_rows
from .openmp import release_workers
from .rows import Row, RowPlan, RowRequest
from .runs import CleanStep, Column, Parent, Run, RunOptions, StepRecord, StopSignal, describe_branch
from .samples import check_samples, decoded_once
from .shared_loop import shared_loop_of, shares_loop
from .samplers import Decision, PlaygroundError, RunContext, StepView, make_settings, sampler_class
from .samplers.base import point_mass_stage
from .telemetry import SIGNAL_FIELDS, TokenRow, distribution_stats, sampler_view
from .traces import ChainTrace

MAX_NEW_TOKENS = 1024
TOP_ALTERNATIVES = 5  # the clean top-k of each token row
WEIGHTED_PREFILL_TOKENS = 128  # a prompt up to this long goes in with its attention weights in one pass

__all__ = ["MAX_COLUMNS", "MAX_NEW_TOKENS", "CleanStep", "Column", "ColumnSpec", "Engine", "Parent", "Run",
           "RunOptions", "StepRecord", "branch", "branch_point", "check_options", "describe_branch", "compare", "draw",
           "parse_columns"]


def parse_columns(samplers: list[str | ColumnSpec]) -> list[ColumnSpec]:
    """Sampler names or ColumnSpecs -> checked ColumnSpecs (a name means that sampler at its defaults)."""
    return check_columns([s if isinstance(s, ColumnSpec) else ColumnSpec(sampler=str(s).strip()) for s in samplers])


def check_options(lm: LoadedModel, prompt: str, options: RunOptions, continuation: list[int] = ()) -> list[int]:
    """Validate a run's inputs; return its token ids (the prompt's, then a branch's continuation)."""
    n = options.max_new_tokens
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
        raise PlaygroundError(f"max_new_tokens must be an integer in 1..{MAX_NEW_TOKENS}, got {n!r}")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or not 0 <= options.seed < 2**63:
        raise PlaygroundError(f"seed must be an integer in [0, 2^63), got {options.seed!r}")
    if options.probe_layer is not None and not 0 <= options.probe_layer < lm.n_layers:
        raise PlaygroundError(f"probe_layer must be in 0..{lm.n_layers - 1}, got {options.probe_layer}")
    vocab = lm.model.config.vocab_size
    if not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab for t in continuation):
        raise PlaygroundError(f"a branch's continuation must be token ids in 0..{vocab - 1}")
    ids = prompt_ids(lm, prompt, options.chat) + list(continuation)
    if len(ids) + n > lm.max_context:
        raise PlaygroundError(
            f"the prompt is {len(ids)} tokens; with max_new_tokens={n} that exceeds the model's "
            f"context of {lm.max_context} tokens: shorten the prompt or ask for fewer tokens")
    return ids


class Engine:
    """The loaded model and the decoding loop's code; every run's state lives on its Run.

    ``stream`` yields the Run after every step. ``start``, ``prefill`` and ``step`` are that loop's
    parts, so two runs on one Engine may be decoded one after the other or interleaved.
    """

    def __init__(self, lm: LoadedModel):
        self.lm = lm

    # ---- the loop -----------------------------------------------------------------------
    def stream(self, prompt: str, samplers: list[str | ColumnSpec], options: RunOptions | None = None,
               stop: StopSignal | None = None, parent: Parent | None = None, shared: bool = False) -> Iterator[Run]:
        """Yield the Run after the prefill and after every step. ``parent``: a branch (see ``branch``).

        ``shared``: after its prefill the run decodes in the model's shared loop, beside other
        sessions' runs (shared_loop.py; a model that cannot share one decodes alone); the same tokens.
        """
        run = self.start(prompt, samplers, options, parent)
        t0 = time.perf_counter()
        alone = not (shared and shares_loop(self.lm))
        try:
            self.prefill(run)
            if not alone:
                release_workers()  # the loop's thread does the rest: this one's OpenMP pool would idle
            run.elapsed_s = time.perf_counter() - t0
            yield run
            if alone:
                yield from self._decode_alone(run, stop, t0)
            else:
                yield from shared_loop_of(self.lm).decode(self, run, stop, t0)
        finally:
            if alone:
                with self.lm.lock:  # the model at rest keeps the attention that returns weights
                    self.lm.rest_attention()
            release_workers()  # the next stream may run in another thread: this one's pool would idle
        run.done = True
        yield run

    def _decode_alone(self, run: Run, stop: StopSignal | None, t0: float) -> Iterator[Run]:
        """Step the run in passes of its own until every column ends or ``stop`` is set."""
        while not all(c.done for c in run.decoding):
            if stop is not None and stop.is_set():
                self.stop(run)
                break
            self.step(run)
            run.elapsed_s = time.perf_counter() - t0
            yield run

    def run(self, prompt: str, samplers: list[str | ColumnSpec], options: RunOptions | None = None,
            stop: StopSignal | None = None, parent: Parent | None = None, shared: bool = False) -> Run:
        """Run to the end and return the finished Run (``shared``: as ``stream``'s)."""
        run = None
        for run in self.stream(prompt, samplers, options, stop, parent, shared):
            pass
        return run

    def start(self, prompt: str, samplers: list[str | ColumnSpec], options: RunOptions | None = None,
              parent: Parent | None = None) -> Run:
        """A checked Run with its columns made and their samplers started; no token decoded yet."""
        options = dataclasses.replace(options or RunOptions())
        specs = parse_columns(samplers)
        settings = [make_settings(s.sampler, s.settings) for s in specs]  # validate before any work
        ids = check_options(self.lm, prompt, options, parent.continuation if parent else ())
        check_samples(options.samples, len(specs), options.reference, self.lm.device.type)  # before any pass
        if options.probe_layer is None:
            options.probe_layer = kuramoto.default_probe_layer(self.lm.n_layers)
        prompt_tensor = torch.tensor(ids, dtype=torch.long, device=self.lm.device)
        with self.lm.lock:  # a sampler's start may run the model (calibration)
            samples = self._make_columns(specs, settings, options, prompt_tensor)
        need_attn = options.record_order_parameter or any(s[0].sampler.needs_attentions for s in samples)
        return Run(model=self.lm.name, prompt=prompt, prompt_ids=ids, options=options,
                   columns=[s[0] for s in samples], samples=samples, parent=parent, prompt_tensor=prompt_tensor,
                   need_attn=need_attn, piece=self.lm.piece)

    def prefill(self, run: Run) -> None:
        """The prompt into the run's cache, and every column's first token."""
        # grad mode is thread-local and a stream may be resumed from other threads: each
        # block runs in inference mode and ends before its yield
        with self.lm.lock, torch.inference_mode():
            t0 = time.perf_counter()
            logits, attn = self._prefill(run)
            main = {i: 0 for i in range(len(run.decoding))}
            self._decide_all(run, main, {}, logits, attn, (time.perf_counter() - t0) * 1000)

    def step(self, run: Run) -> None:
        """One forward pass over every running column's rows, and each column's next token."""
        with self.lm.lock, torch.inference_mode():
            t_step = time.perf_counter()
            rows = self._arrange_rows(run)
            logits, attn = self._forward(run, rows)
            self.after_pass(run, logits, attn, t_step)

    def after_pass(self, run: Run, logits: torch.Tensor, attn: torch.Tensor | None, t_step: float) -> None:
        """A step's pass is done (``logits``/``attn``: the run's rows, in its plan's layout): each column's token."""
        main, sides = self._resolve(run, logits, attn, t_step)
        self._decide_all(run, main, sides, logits, attn, (time.perf_counter() - t_step) * 1000)
        run.step += 1

    def stop(self, run: Run) -> None:
        """End every running column (every sample) as "stopped"."""
        for c in run.decoding:
            if not c.done:
                c.finish_reason = "stopped"
                c.final_text = self.lm.tokenizer.decode(c.tokens, skip_special_tokens=True)
        run.stopped = True

    # ---- setup ----------------------------------------------------------------------------
    def _make_columns(self, specs, settings, options, prompt_tensor) -> list[list[Column]]:
        """Per column its samples: sample i seeded seed + i; a column no seed changes decodes one."""
        columns = []
        for spec, st, label in zip(specs, settings, column_labels(specs)):
            cls = sampler_class(spec.sampler)
            asked = ColumnSpec(spec.sampler, {k: getattr(st, k) for k in spec.settings}, spec.label)  # typed values
            samples = []
            for i in range(1 if decoded_once(spec.sampler, st) else options.samples):
                seed = options.seed + i  # the same for every column: common random numbers, sample by sample
                sampler = cls(st, self.lm)
                sampler.start(RunContext(seed=seed, prompt_ids=prompt_tensor))
                samples.append(Column(label=label, sampler_name=spec.sampler, settings=st, sampler=sampler,
                                      generator=torch.Generator().manual_seed(seed), spec=asked, sample=i))
            columns.append(samples)
        return columns

    def _prefill(self, run: Run):
        """The prompt into a fresh cache (room for ``max_new_tokens`` more); the last prompt token's
        logits and attention rows.

        A run that wants no attention weights feeds the whole prompt through sdpa (``LoadedModel.prefill``:
        chunks, memory linear in the prompt). One that does feeds a short prompt in one pass with
        weights (they cost layers x heads x n^2 floats: 18 MB at ``WEIGHTED_PREFILL_TOKENS`` for the
        default model); a longer one goes in without them but for its last token, which is then
        fed like a decoding step, so its attention row is the only one asked for.
        """
        prompt = run.prompt_tensor
        capacity = len(prompt) + run.options.max_new_tokens
        if not run.need_attn:
            cache, logits = self.lm.prefill(prompt, fast=True, capacity=capacity)
            run.plan = RowPlan(cache)
            return logits.float(), None
        first = 0 if len(prompt) <= WEIGHTED_PREFILL_TOKENS else len(prompt) - 1
        run.plan = RowPlan(self.lm.prefill(prompt[:first], fast=True, capacity=capacity)[0])
        return self._pass(run, prompt[first:].view(1, -1))

    # ---- one step -----------------------------------------------------------------------
    def _arrange_rows(self, run: Run) -> list[Row]:
        """Lay out the next pass's rows, bring the cache to them, and let samplers perturb their side rows."""
        main, _, _ = run.plan.roles()  # after the prefill every column continues its one row
        rows = run.plan.next_rows(self.row_requests(run, main))
        run.plan.move_to(rows)
        for i in run.plan.side_rows():
            self.perturb_side_row(run, run.plan, i, run.decoding[rows[i].col])
        return rows

    def row_requests(self, run: Run, main: dict[int, int], offset: int = 0, first_row: int = 0) -> list[RowRequest]:
        """What each running column feeds the next pass, its columns numbered from ``offset``; a column
        with no main row yet continues row ``first_row`` (the prefill's)."""
        return [RowRequest(col=offset + c, source=main.get(offset + c, first_row),
                           token=col.tokens[-1] if col.tokens else -1, side_rows=col.sampler.extra_rows,
                           candidates=col.lookahead.candidates if col.lookahead else None,
                           side_layer=col.sampler.side_layer() if self.lm.joins_side_rows else 0)
                for c, col in enumerate(run.decoding) if not col.done]

    @staticmethod
    def perturb_side_row(run: Run, plan: RowPlan, row: int, col: Column, first: int = 0) -> None:
        """Let ``col``'s sampler perturb side row ``row`` of ``plan``, on its positions from ``first`` on
        (before ``first``: a shared cache's padding, which no sampler may touch)."""
        values = plan.values_of(row)
        values = [v[:, first:] for v in values] if first else values
        plan.mark_perturbed(row, col.sampler.perturb(values, run.n_prompt, len(col.tokens)))

    def _forward(self, run: Run, rows: list[Row]):
        fed, side_rows = run.plan.pass_rows()  # side rows join at their layer: not fed
        tokens = torch.tensor([[rows[i].token] for i in fed], dtype=torch.long, device=self.lm.device)
        return self._pass(run, tokens, side_rows)

    def _pass(self, run: Run, tokens: torch.Tensor, side_rows: SideRowJoin | None = None):
        """``tokens`` [rows, n] through the model onto the run's cache: the last position's logits and
        attention rows (of every row of the layout, where ``side_rows`` join the pass)."""
        self.lm.use_attention(weights=run.need_attn)  # no weights wanted: sdpa, which never materialises them
        out, run.plan.cache = self.lm.forward(tokens, run.plan.cache, side_rows, output_attentions=run.need_attn,
                                              logits_to_keep=1)
        attn = last_attention_rows(out) if run.need_attn else None
        own = out.get("oscillator_order_parameter")  # a model with oscillators (PhaseGPT) reports their own R
        run.plan.own_order_parameter = own[:, -1] if own is not None else None
        return out.logits[:, -1, :].float(), attn

    def _view(self, run: Run, col: Column, row: int, logits, attn, side_rows: list[int] | None = None) -> StepView:
        ids = torch.cat([run.prompt_tensor, torch.tensor(col.tokens, dtype=torch.long, device=self.lm.device)])
        return StepView(step=len(col.tokens), logits=logits[row], input_ids=ids, n_prompt=run.n_prompt,
                        attentions=attn[row] if attn is not None else None,
                        extra_logits=logits[side_rows] if side_rows else None)

    def _resolve(self, run: Run, logits, attn, t_step: float):
        """After a forward: settle pending lookaheads; return each column's main and side rows."""
        main, sides, cands = run.plan.roles()
        for c, idx in cands.items():
            col = run.decoding[c]
            record, col.lookahead = col.lookahead, None
            views = [self._view(run, col, i, logits, attn) for i in idx]
            # the candidates' rows saw the candidate appended; their view's history must include it
            for view, tok in zip(views, record.candidates):
                view.input_ids = torch.cat([view.input_ids, view.input_ids.new_tensor([tok])])
                view.step += 1
            k, signals = col.sampler.choose(views)
            run.plan.keep_candidate(idx[k])
            record.signals.update(signals)
            self._emit(run, col, record, record.candidates[k], (time.perf_counter() - t_step) * 1000)
            main[c] = idx[k]
        return main, sides

    def _decide_all(self, run: Run, main, sides, logits, attn, step_ms: float) -> None:
        running = [c for c, col in enumerate(run.decoding) if not col.done]
        observed = self._observe(run, [main[c] for c in running], logits, attn)
        for c, clean in zip(running, observed):
            col = run.decoding[c]
            view = self._view(run, col, main[c], logits, attn, sides.get(c))
            view.likely = clean.window.ids
            trace = view.record_stages = run.options.record_traces and col.sample == 0  # the shown sample's
            decision: Decision = col.sampler.decide(view)
            # one draw per step, always, on the CPU generator
            u = float(torch.rand((), generator=col.generator, dtype=torch.float64, device="cpu"))
            record = StepRecord(clean=clean, params=dict(decision.params), signals=dict(decision.signals),
                                drawn_from=decision.probs, support=decision.support,  # None: a deterministic choice
                                u=u, own_choice=decision.token is not None, stages=decision.stages,
                                logits=view.logits if trace else None)
            if decision.candidates:
                record.candidates = list(decision.candidates)
                col.lookahead = record
                continue
            token = decision.token if decision.token is not None else draw(decision.probs, u, decision.support)
            self._emit(run, col, record, token, step_ms)

    def _observe(self, run: Run, rows: list[int], logits, attn) -> list[CleanStep]:
        """The clean-distribution statistics, top alternatives and Kuramoto R of ``rows``, in one batch."""
        stats = distribution_stats(logits[rows])
        # one top-k over the batch: each row's top-5, its sampler's top-k hint and its trace's clean read
        windows = traces.clean_windows(stats.probs, count_support=run.options.record_traces)
        r_layers = None
        if run.options.record_order_parameter and attn is not None:
            r = kuramoto.attention_order_parameter(attn[rows])
            if run.plan.own_order_parameter is not None:  # the oscillators' R at their layers, not a read-out
                r[:, self.lm.oscillator_layers] = run.plan.own_order_parameter[rows].to(r.dtype)
            r_layers = r.tolist()
        return [CleanStep(stats=stats.row(i), top_ids=w.ids[:TOP_ALTERNATIVES].tolist(),
                          top_probs=w.values[:TOP_ALTERNATIVES].tolist(),
                          r_layers=[round(x, 6) for x in r_layers[i]] if r_layers else None, window=w)
                for i, w in enumerate(windows)]

    def _trace(self, run: Run, col: Column, record: StepRecord, token: int) -> ChainTrace:
        """The chain trace of this token; each stage's draw at u while the column shares its history."""
        stages, lookahead, how = record.stages, None, traces.OWN if record.own_choice else traces.DRAW
        if record.candidates:
            how, scores = traces.LOOKAHEAD, record.signals.get("lookahead_scores", [])
            lookahead = {"candidates": record.candidates, "scores": scores, "chosen": token}
            stages = [*stages, point_mass_stage("lookahead", f"{len(record.candidates)} candidates, the calmest "
                                                             "attention wins", record.logits, token)]
        with_draws = bool(run.partners[run.columns.index(col)])
        clean = record.clean  # the clean distribution as the row's telemetry has it
        return traces.chain_trace(len(col.tokens), record.logits, stages, token, record.u, how,
                                  final=record.drawn_from, with_draws=with_draws, lookahead=lookahead,
                                  clean=(clean.stats.probs[0], float(clean.stats.entropy[0]), clean.window))

    def _emit(self, run: Run, col: Column, record: StepRecord, token: int, step_ms: float) -> None:
        """Append the chosen token and its telemetry row; finish the column on EOS or length."""
        clean, signals = record.clean, record.signals
        stats = clean.stats
        if record.logits is not None:
            col.traces.append(self._trace(run, col, record, token))
        col.tokens.append(token)
        if col.sample == 0:  # where columns part is a question about the shown sample
            run.note_token(run.columns.index(col))
        view = sampler_view(record.drawn_from, token, clean.top_ids, record.support)
        logprob = float(stats.log_probs[0, token])
        extra = {k: v for k, v in signals.items() if k not in SIGNAL_FIELDS}
        extra.update(col.sampler.update(token, view.prob))  # a sampler with feedback (mirostat) moves now
        r_layers = clean.r_layers
        row = TokenRow(
            step=len(col.tokens) - 1, id=token, text=col.new_text(self.lm.tokenizer), prob=math.exp(logprob),
            logprob=logprob, entropy=float(stats.entropy[0]), entropy_bits_norm=float(stats.entropy_bits_norm[0]),
            varentropy=float(stats.varentropy[0]),
            top=[{"id": i, "text": self.lm.piece(i), "prob": p, "sampler_prob": q}
                 for i, p, q in zip(clean.top_ids, clean.top_probs, view.top_probs)],
            sampler_prob=view.prob, sampler_entropy=view.entropy, support=view.support,
            params=record.params,
            order_parameter=r_layers[run.options.probe_layer] if r_layers else None,
            order_parameter_layers=r_layers, step_ms=round(step_ms, 3),
            extra=extra,
            **{k: signals[k] for k in SIGNAL_FIELDS if k in signals},
        )
        col.rows.append(row)
        if token in self.lm.eos_ids:
            col.finish_reason = "eos"
        elif len(col.tokens) >= run.options.max_new_tokens:
            col.finish_reason = "length"
        if col.done:
            col.final_text = self.lm.tokenizer.decode(col.tokens, skip_special_tokens=True)


def compare(lm: LoadedModel, prompt: str, samplers: list[str | ColumnSpec], **options: Any) -> Run:
    """Run ``samplers`` side by side on ``prompt`` and return the finished Run."""
    return Engine(lm).run(prompt, samplers, RunOptions(**options))


def _integer_arg(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PlaygroundError(f"{name} must be an integer, got {value!r}")
    return value


def run_inputs(data: dict[str, Any]) -> tuple[list[ColumnSpec], RunOptions]:
    """The columns and options a run's JSON was decoded with (a branch, or the same run again)."""
    specs = [column_from_dict(c.get("spec") or {"sampler": c["sampler"], "settings": c["settings"],
                                                 "label": c["label"]}, f"column {i}")
             for i, c in enumerate(data["columns"])]
    options = RunOptions(seed=data["seed"], max_new_tokens=data["max_new_tokens"], chat=data["chat"],
                         probe_layer=data["probe_layer"],
                         record_order_parameter=data.get("record_order_parameter", True),
                         samples=data.get("samples", 1), reference=data.get("reference_column", 0))
    return specs, options


def branch_point(lm: LoadedModel, run: Run | dict[str, Any], column: int, step: int,
                 token: int) -> tuple[list[ColumnSpec], RunOptions, Parent]:
    """What a branch of ``run`` runs: its columns, options and Parent (errors name the bad argument)."""
    data = run.to_json() if isinstance(run, Run) else run
    columns = data["columns"]
    column, step, token = (_integer_arg(column, "column"), _integer_arg(step, "step"), _integer_arg(token, "token"))
    if not 0 <= column < len(columns):
        raise PlaygroundError(f"column must be in 0..{len(columns) - 1}, got {column}")
    tokens = [row["id"] for row in columns[column]["tokens"]]
    if not 0 <= step < len(tokens):
        raise PlaygroundError(f"step must be in 0..{len(tokens) - 1} (the tokens of column {column}), got {step}")
    vocab = lm.model.config.vocab_size
    if not 0 <= token < vocab:
        raise PlaygroundError(f"token must be a token id in 0..{vocab - 1}, got {token}")
    specs, options = run_inputs(data)
    options = run.options if isinstance(run, Run) else options
    before = (data.get("parent") or {}).get("continuation", [])
    decode = lm.tokenizer.decode
    parent = Parent(column=column, step=step, token=token, replaced=tokens[step], prompt=data["prompt"],
                    continuation=[*before, *tokens[:step], token], column_label=columns[column]["label"],
                    token_text=decode([token]), replaced_text=decode([tokens[step]]),
                    continuation_text=decode([*before, *tokens[:step]], skip_special_tokens=True))
    return specs, dataclasses.replace(options), parent


def branch(lm: LoadedModel, run: Run | dict[str, Any], column: int, step: int, token: int,
           stop: StopSignal | None = None) -> Run:
    """Run again from ``token`` put at ``step`` of ``column``: same columns, seed and options.

    Every sample of every column runs from that point: each continues sample 0's tokens before
    ``step`` and ``token``, sample i seeded seed + i (docs/samples.md#branching).

    The new run's prompt ids are ``run.prompt_ids + run.columns[column].tokens[:step] + [token]``;
    its ``parent`` says where it came from. ``run`` is a Run or its JSON (``Run.to_json()``).
    """
    specs, options, parent = branch_point(lm, run, column, step, token)
    return Engine(lm).run(parent.prompt, specs, options, stop, parent)
