"""One decoding loop per loaded model, serving every session's run in one batched pass a step.

    a run      prefills alone (its own cache, between two of the loop's steps), then joins
    the batch  one RowPlan (rows.py) over every member run's rows, each run's columns numbered
               apart (``COLUMN_SPAN``), so side rows, lookahead candidates and the side rows'
               re-sync work across runs as within one; each run's sampler code reads its own rows
    lengths    the shared cache is left-padded to a common length: a member's rows hold padding
               before ``pad``, masked by a 2-D attention mask, and ``position_ids`` count its real
               positions (transformers' own means: the model makes the 4-D mask and the rotary angles)
    join       a joining run's prefilled cache is padded and concatenated once; a run that ends or is
               stopped makes no more requests, so the next re-index drops its rows, and the padding
               every remaining row has is trimmed
    bound      at most ``max_rows()`` main and side rows ($PLAYGROUND_SHARED_ROWS): a run that does not
               fit, or whose prompt would pad the cache beyond twice its real positions, waits, first
               come first served, and says so (``Run.waiting``)
    stepping   a member's stream yields its Run after each of its steps; the loop takes its next step
               once every member's stream has asked for it, as a solo stream is stepped

A run's tokens are those it decodes alone: its columns keep their own generators and samplers,
and every statistic is read on its own positions (attention rows without the padding).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Protocol

import torch

from .inputs import positive_env_int
from .model_changes import GROUPED_MODEL_TYPES
from .models import LoadedModel, last_attention_rows
from .rows import Row, RowPlan, RowRequest
from .runs import Column, Run, StopSignal

SHARED_ROWS_VARIABLE = "PLAYGROUND_SHARED_ROWS"
# main and side rows in one pass: eight sessions of the page's four columns (five rows each) with room
# to spare on a CPU; a GPU's pass costs little more for more rows
DEFAULT_SHARED_ROWS = {"cpu": 64, "gpu": 512}
COLUMN_SPAN = 1 << 16  # member m's column c is column m * COLUMN_SPAN + c of the shared plan
# decoder loops that take a 2-D padding mask and per-row position ids over a DynamicCache (stock Llama's);
# other models (PhaseGPT, whose oscillator sums live in its own cache) decode alone
SHARED_MODEL_TYPES = GROUPED_MODEL_TYPES
WAITING_NOTE = "waiting for room in the shared batch"
# a run joins only while the padded cache stays within twice its rows' real positions (plus a little):
# a prompt as long as the context beside short runs waits, rather than padding every row to its length
PADDING_ALLOWED, PADDING_SLACK = 2, 256


class StepTime(NamedTuple):
    """One step of the shared batch: its rows, its seconds, and of them those in the forward pass."""

    rows: int
    seconds: float
    forward_seconds: float


def max_rows(device_type: str) -> int:
    """The most main and side rows the shared batch holds: $PLAYGROUND_SHARED_ROWS, else the device's default."""
    bound = positive_env_int(SHARED_ROWS_VARIABLE)
    return bound if bound is not None else DEFAULT_SHARED_ROWS["cpu" if device_type == "cpu" else "gpu"]


def shares_loop(lm: LoadedModel) -> bool:
    """Whether ``lm``'s runs may share one batch (else each decodes alone)."""
    return getattr(lm.model.config, "model_type", None) in SHARED_MODEL_TYPES and not lm.oscillator_layers


class Engine(Protocol):
    """The parts of ``engine.Engine`` the loop runs (engine.py imports this module, not the other way)."""

    lm: LoadedModel

    def row_requests(self, run: Run, main: dict[int, int], offset: int = 0,
                     first_row: int = 0) -> list[RowRequest]: ...

    def perturb_side_row(self, run: Run, plan: RowPlan, row: int, col: Column, first: int = 0) -> None: ...

    def after_pass(self, run: Run, logits: torch.Tensor, attn: torch.Tensor | None, t_step: float) -> None: ...

    def stop(self, run: Run) -> None: ...


def run_rows(run: Run) -> int:
    """The rows a run's running columns hold in a pass: a main row each, plus its sampler's side rows."""
    return sum(1 + col.sampler.extra_rows for col in run.decoding if not col.done)


@dataclass(eq=False)
class Member:
    """One run in the shared loop: where its rows are, and how far its stream has followed."""

    run: Run
    stop: StopSignal | None
    ident: int
    t0: float  # when its stream started (the run's elapsed_s counts from it)
    rows: int  # main and side rows it holds (``run_rows``), counted against the bound
    pad: int = 0  # leading padding positions of its rows in the shared cache
    places: list[int] = field(default_factory=list)  # its rows in the last pass's layout (at first: its prefill row)
    view: RowPlan | None = None  # its rows alone (its own column numbers): what its sampler code reads
    steps: int = 0  # steps the loop has done for it
    seen: int = 0  # of them, those its stream has yielded and been resumed after
    ended: bool = False  # it left the batch (every column done, stopped, failed or abandoned)
    abandoned: bool = False  # its stream was closed before the run ended
    error: BaseException | None = None

    @property
    def offset(self) -> int:
        return self.ident * COLUMN_SPAN

    @property
    def prefill_col(self) -> int:
        return -1 - self.ident  # its prefill row's column in the shared plan: no run's column


def left_padded(tensor: torch.Tensor, pad: int) -> torch.Tensor:
    """``tensor`` [rows, heads, n, dim] with ``pad`` zero positions before its n."""
    return torch.nn.functional.pad(tensor, (0, 0, pad, 0)) if pad else tensor


@dataclass
class SharedBatch:
    """Every member's rows: one RowPlan over one left-padded KV cache."""

    capacity: int  # positions the cache may reach (a GrowingLayer doubles up to it)
    plan: RowPlan | None = None
    members: list[Member] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.plan.cache.get_seq_length() if self.plan is not None else 0

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.members)

    def join(self, member: Member) -> None:
        """Append ``member``'s prefilled one-row cache: both sides padded on the left to one length."""
        cache = member.run.plan.cache
        prefill_row = Row(col=member.prefill_col, kind="main", source=0, token=-1)
        if self.plan is None:
            self.plan = RowPlan(cache)
            self.plan.layout = [prefill_row]
            for layer in cache.layers:
                if hasattr(layer, "capacity_limit"):  # a GrowingLayer: its run's limit is not the batch's
                    layer.capacity_limit = self.capacity
        else:
            own = cache.get_seq_length()
            grow = max(0, own - self.length)  # the joining prompt is the longest: every row gets more padding
            member.pad = max(0, self.length - own)
            for shared, mine in zip(self.plan.cache.layers, cache.layers):
                shared.keys, shared.values = left_padded(shared.keys, grow), left_padded(shared.values, grow)
                keys, values = left_padded(mine.keys, member.pad), left_padded(mine.values, member.pad)
                if hasattr(shared, "append_rows"):  # a GrowingLayer: room for the rows its first step adds
                    shared.append_rows(keys, values, spare_rows=member.rows - 1)
                else:
                    shared.keys, shared.values = torch.cat([shared.keys, keys]), torch.cat([shared.values, values])
            self.shift(grow)
            self.plan.layout.append(prefill_row)
        member.places = [len(self.plan.layout) - 1]
        member.view = RowPlan(self.plan.cache)
        member.run.plan = member.view
        self.members.append(member)

    def shift(self, by: int) -> None:
        """Every member's positions moved ``by`` (padding added before them, or trimmed when negative)."""
        if not by:
            return
        for m in self.members:
            m.pad += by
        for row in self.plan.layout:
            if row.dirty_from is not None:
                row.dirty_from += by

    def leave(self, member: Member) -> None:
        """``member``'s rows go with the next re-index; padding every remaining row has goes now."""
        self.members.remove(member)
        member.ended = True
        if member.view is not None:
            member.view.cache = None  # a finished Run must not keep the batch's cache alive
        if not self.members:
            self.plan = None
            return
        trim = min(m.pad for m in self.members)
        if trim:
            for layer in self.plan.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, trim:], layer.values[:, :, trim:]
            self.shift(-trim)

    def member_of(self, row: Row) -> Member:
        ident = row.col // COLUMN_SPAN
        return next(m for m in self.members if m.ident == ident)

    def step(self, engine: Engine) -> float:
        """One pass over every member's rows, then each member's sampler code on its own rows; returns
        the seconds of the pass."""
        t_step = time.perf_counter()
        plan, lm = self.plan, engine.lm
        main, _, _ = plan.roles()
        requests = [q for m in self.members
                    for q in engine.row_requests(m.run, main, m.offset, main.get(m.prefill_col, 0))]
        rows = plan.next_rows(requests)
        plan.move_to(rows)
        owners = [self.member_of(r) for r in rows]
        for m in self.members:  # a member's rows, in layout order (rows keep their places: not contiguous)
            m.places = [i for i, owner in enumerate(owners) if owner is m]
        for i in plan.side_rows():
            m = owners[i]
            engine.perturb_side_row(m.run, plan, i, m.run.decoding[rows[i].col - m.offset], m.pad)
        fed, side_rows = plan.pass_rows()  # side rows join at their layer: not fed
        length = plan.cache.get_seq_length()
        pads = torch.tensor([owners[i].pad for i in fed], device=lm.device)
        mask = (torch.arange(length + 1, device=lm.device)[None, :] >= pads[:, None]).long()  # padding: 0
        tokens = torch.tensor([[rows[i].token] for i in fed], dtype=torch.long, device=lm.device)
        need_attn = any(m.run.need_attn for m in self.members)
        lm.use_attention(weights=need_attn)
        t_pass = time.perf_counter()
        out, plan.cache = lm.forward(tokens, plan.cache, side_rows, output_attentions=need_attn, logits_to_keep=1,
                                     attention_mask=mask, position_ids=(length - pads)[:, None])
        logits = out.logits[:, -1, :].float()
        if logits.device.type == "cuda":  # the pass's queued work: the runs' first read would wait for it anyway
            torch.cuda.synchronize(logits.device)
        forward_seconds = time.perf_counter() - t_pass
        attn = last_attention_rows(out) if need_attn else None
        for m in list(self.members):
            self._after_pass(engine, m, rows, logits, attn, t_step)
        return forward_seconds

    def _after_pass(self, engine: Engine, m: Member, rows: list[Row], logits: torch.Tensor,
                    attn: torch.Tensor | None, t_step: float) -> None:
        """``m``'s columns decide from its rows (its attention on its own positions); a failure is its own."""
        places = m.places
        start = places[0] if places else 0
        mine = slice(start, start + len(places)) if places == list(range(start, start + len(places))) else \
            torch.tensor(places, dtype=torch.long, device=logits.device)  # a gather: a copy of its rows alone
        own_rows = [rows[i] for i in places]
        m.view.cache = self.plan.cache
        m.view.layout = [dataclasses.replace(r, col=r.col - m.offset) for r in own_rows]
        try:
            engine.after_pass(m.run, logits[mine], attn[mine][..., m.pad:] if m.run.need_attn else None, t_step)
        except Exception as exc:  # noqa: BLE001  (its stream raises it; the other runs go on)
            m.error = exc
        for shared, own in zip(own_rows, m.view.layout):
            shared.kind = own.kind  # a lookahead's chosen candidate continues as its column's main row
        m.run.elapsed_s = time.perf_counter() - m.t0
        m.steps += 1


class SharedLoop:
    """The decoding loop of one loaded model: a thread that steps the shared batch while it has runs."""

    def __init__(self, lm: LoadedModel):
        self.lm = lm
        self.batch = SharedBatch(capacity=lm.max_context)
        self.waiting: list[Member] = []
        self.changed = threading.Condition()  # guards members, waiting and every Member's counters
        self.thread: threading.Thread | None = None
        self.joined = 0  # members so far: each one's ident
        self.bound = max_rows(lm.device.type)  # rows the batch holds at most (read as each run comes)
        self.step_seconds: list[StepTime] = []  # the recent steps (bench speed reads them)

    def decode(self, engine: Engine, run: Run, stop: StopSignal | None, t0: float) -> Iterator[Run]:
        """The run's steps in the shared batch (its prefill done): yields it after each of its steps."""
        if all(c.done for c in run.decoding):
            return
        bound = max_rows(self.lm.device.type)  # a bad setting is this caller's error, not the loop's
        with self.changed:
            self.bound = bound
            member = Member(run=run, stop=stop, ident=self.joined, t0=t0, rows=run_rows(run))
            self.joined += 1
            self.waiting.append(member)
            run.waiting = WAITING_NOTE if not self._fits(member) else ""
            if self.thread is None:
                self.thread = threading.Thread(target=self._serve, args=(engine,), daemon=True,
                                               name=f"shared-loop-{self.lm.name}")
                self.thread.start()
            self.changed.notify_all()
        try:
            while True:
                with self.changed:
                    self.changed.wait_for(lambda: member.steps > member.seen or member.ended)
                    fresh = member.steps
                if member.error is not None:
                    raise member.error
                if fresh > member.seen:
                    yield run
                    with self.changed:
                        member.seen = fresh
                        self.changed.notify_all()
                elif member.ended:
                    return
        finally:
            with self.changed:
                if not member.ended:
                    member.abandoned = True  # the loop lets it go before its next step
                    self.changed.notify_all()

    def _fits(self, member: Member) -> bool:
        """Room for ``member``'s rows, and padding that stays within the batch's real positions (an empty
        batch takes any run, so none waits for ever)."""
        batch = self.batch
        if not batch.members:
            return True
        rows, own = batch.rows + member.rows, member.run.plan.cache.get_seq_length()
        real = sum(m.rows * (batch.length - m.pad) for m in batch.members) + member.rows * own
        return rows <= self.bound and rows * max(batch.length, own) <= PADDING_ALLOWED * real + rows * PADDING_SLACK

    def _ready(self) -> bool:
        """Every member's stream has followed the last step, or the batch has someone to admit or let go."""
        return (all(m.seen == m.steps for m in self.batch.members) and bool(self.batch.members or self.waiting)) \
            or any(m.abandoned for m in self.batch.members + self.waiting)

    def _serve(self, engine: Engine) -> None:
        """Step the batch while it has runs; then the thread ends (the next run starts another)."""
        while True:
            try:
                with self.changed:
                    if not self._next_step(engine):
                        if self.batch.members or self.waiting:
                            continue
                        self.thread = None
                        break
                t0 = time.perf_counter()
                with self.lm.lock, torch.inference_mode():
                    forward_seconds = self.batch.step(engine)
                with self.changed:
                    self._after_step(time.perf_counter() - t0, forward_seconds)
            except BaseException as exc:  # noqa: BLE001  (the pass itself failed: every member's stream raises it)
                with self.changed:
                    self._fail_all(exc)
        with self.lm.lock:  # the model at rest keeps the attention that returns weights
            self.lm.rest_attention()

    def _next_step(self, engine: Engine) -> bool:
        """Wait until every member's stream has followed the last step; let go, admit; True: step now."""
        self.changed.wait_for(lambda: self._ready() or not (self.batch.members or self.waiting))
        self._let_go(engine)
        if not all(m.seen == m.steps for m in self.batch.members):
            return False
        self._admit()
        return bool(self.batch.members)

    def _after_step(self, seconds: float, forward_seconds: float) -> None:
        """Record the step; runs whose columns all ended (or whose sampler code failed) leave."""
        self.step_seconds = [*self.step_seconds[-255:], StepTime(self.batch.rows, seconds, forward_seconds)]
        for m in list(self.batch.members):
            if m.error is not None or all(c.done for c in m.run.decoding):
                self.batch.leave(m)
        for m in self.batch.members:
            m.rows = run_rows(m.run)
        self.changed.notify_all()

    def _fail_all(self, exc: BaseException) -> None:
        """Every member and waiting run ends with ``exc``; the batch starts empty."""
        for m in [*self.batch.members, *self.waiting]:
            m.error, m.ended = exc, True
            if m.view is not None:
                m.view.cache = None
        self.batch = SharedBatch(capacity=self.lm.max_context)
        self.waiting = []
        self.changed.notify_all()

    def _let_go(self, engine: Engine) -> None:
        """Members whose stream was closed leave; a stopped one ends as "stopped" (within one step)."""
        for m in [m for m in self.waiting if m.abandoned or (m.stop is not None and m.stop.is_set())]:
            self.waiting.remove(m)
            engine.stop(m.run)
            m.ended = True
        for m in list(self.batch.members):
            if m.abandoned or (m.stop is not None and m.stop.is_set()):
                engine.stop(m.run)
                self.batch.leave(m)
        self.changed.notify_all()

    def _admit(self) -> None:
        """Waiting runs join the batch in the order they came, while they fit."""
        while self.waiting and self._fits(self.waiting[0]):
            member = self.waiting.pop(0)
            member.run.waiting = ""
            self.batch.join(member)  # the loop's thread alone touches the shared cache
        for member in self.waiting:
            member.run.waiting = WAITING_NOTE


_loops: dict[int, tuple[LoadedModel, SharedLoop]] = {}
_loops_lock = threading.Lock()


def shared_loop_of(lm: LoadedModel) -> SharedLoop:
    """The one shared loop of ``lm`` (made on first use)."""
    with _loops_lock:
        held = _loops.get(id(lm))
        if held is None or held[0] is not lm:
            held = _loops[id(lm)] = (lm, SharedLoop(lm))
        return held[1]
