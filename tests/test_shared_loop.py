"""The shared loop: runs of different sessions decode in one batch and give the tokens they give alone."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import pytest
import torch

from playground.engine import ColumnSpec, Engine, RunOptions
from playground.models import PHASEGPT_MODEL, load_model
from playground.samplers import SAMPLERS, Decision, Sampler, StepView
from playground.shared_loop import (SHARED_ROWS_VARIABLE, WAITING_NOTE, SharedBatch, run_rows, shared_loop_of,
                                    shares_loop)

PHASE_SLIP = ColumnSpec("phase_slip", {"heads": "2.1,3.0", "noise_scale": 0.8, "perturbation_window": 4})
LONG = ("The old lighthouse keeper climbed the stairs one last time, and the lamp",
        ["greedy", "phase_slip", "temperature"], RunOptions(seed=3, max_new_tokens=14))
SHORT = ("Hello there", [ColumnSpec("temperature", {"temperature": 1.3}), "greedy"],
         RunOptions(seed=11, max_new_tokens=12))


def tokens(run) -> list[list[int]]:
    return [c.tokens for c in run.decoding]


class Session(threading.Thread):
    """One session's stream through the shared loop, driven in its own thread as the page drives it."""

    def __init__(self, lm, args, stop=None, at_step=None):
        super().__init__(daemon=True)
        self.lm, self.args, self.stop = lm, args, stop
        self.at_step = at_step or {}  # step -> what to do once the stream has yielded it
        self.states, self.last, self.error = [], None, None

    def run(self) -> None:  # noqa: D102  (threading's entry point)
        try:
            for run in Engine(self.lm).stream(*self.args, stop=self.stop, shared=True):
                self.last = run
                self.states.append((run.step, run.waiting))
                if run.step in self.at_step and not run.done:
                    self.at_step.pop(run.step)()
        except BaseException as exc:  # noqa: BLE001  (the test re-raises it)
            self.error = exc

    def result(self):
        self.join(300)
        assert not self.is_alive(), "the session never ended"
        if self.error is not None:
            raise self.error
        return self.last


def _start_later(lm, args, **kwargs) -> tuple[list[Session], Callable[[], None]]:
    holder: list[Session] = []

    def start() -> None:  # returns once the run is prefilled and queued: the caller's next step is shared
        session = Session(lm, args, **kwargs)
        holder.append(session)
        session.start()
        loop = shared_loop_of(lm)
        assert _wait_for(lambda: session.error is not None or session.last is not None and any(
            m.run is session.last for m in [*loop.waiting, *loop.batch.members]))
    return holder, start


def _two_runs_five_steps_apart(lm, first, second):
    solo = [tokens(Engine(lm).run(*first)), tokens(Engine(lm).run(*second))]
    loop = shared_loop_of(lm)
    loop.step_seconds = []
    later, start_second = _start_later(lm, second)
    a = Session(lm, first, at_step={5: start_second})
    a.start()
    run_a = a.result()
    run_b = later[0].result()
    both = run_rows_at_start(lm, first) + run_rows_at_start(lm, second)
    assert max(step.rows for step in loop.step_seconds) == both  # the two shared passes
    return solo, [tokens(run_a), tokens(run_b)], (run_a, run_b)


def run_rows_at_start(lm, args) -> int:
    engine = Engine(lm)
    return run_rows(engine.start(*args))


@pytest.mark.slow
def test_two_runs_five_steps_apart_give_their_solo_tokens_on_the_default_model(real_lm):
    solo, shared, _ = _two_runs_five_steps_apart(real_lm, LONG, SHORT)
    assert shared == solo
    assert [len(t) for t in shared[0]] == [14, 14, 14]


def test_two_runs_share_the_loop_with_side_rows_lookaheads_and_attention_on_their_own_positions(tiny_llama):
    first = ("The ancient door creaked open and the wind", ["greedy", PHASE_SLIP, "adaptive_entropy", "temperature"],
             RunOptions(seed=3, max_new_tokens=12))
    second = ("Hello world", ["temperature", "mirostat"], RunOptions(seed=8, max_new_tokens=10))
    solo_runs = [Engine(tiny_llama).run(*first), Engine(tiny_llama).run(*second)]
    solo, shared, runs = _two_runs_five_steps_apart(tiny_llama, first, second)
    assert shared == solo
    for alone, together in zip(solo_runs, runs):  # R read on the run's own positions, never the padding
        for a, b in zip(alone.columns, together.columns):
            assert [r.order_parameter for r in b.rows] == pytest.approx([r.order_parameter for r in a.rows], abs=1e-4)


class _LooksAheadEveryThirdStep(Sampler):
    """Three candidate rows every third token, the argmax otherwise; the candidate whose own row is the most
    confident continues."""

    name = "looks_ahead_every_third_step"

    @dataclass
    class Settings:
        pass

    def decide(self, view: StepView) -> Decision:
        if view.step % 3:
            return Decision(token=int(view.logits.argmax()), params={})
        return Decision(candidates=torch.topk(view.logits, 3).indices.tolist(), params={})

    def choose(self, views: list[StepView]) -> tuple[int, dict]:
        return max(range(len(views)), key=lambda k: float(views[k].logits.max())), {}


def test_a_runs_rows_apart_in_the_batch_give_its_solo_tokens(tiny_llama, monkeypatch):
    """Rows keep their places, so a lookahead's extra candidates come after the other run's rows: the run
    reads its rows gathered from apart, and decodes its solo tokens."""
    monkeypatch.setitem(SAMPLERS, _LooksAheadEveryThirdStep.name, _LooksAheadEveryThirdStep)
    first = ("Once upon a time", ["looks_ahead_every_third_step", "greedy", PHASE_SLIP],
             RunOptions(seed=2, max_new_tokens=12))
    second = ("Hello world", ["temperature", "greedy"], RunOptions(seed=4, max_new_tokens=12))
    apart: list[list[int]] = []
    after_pass = SharedBatch._after_pass

    def spy(self, engine, member, *args):
        if member.places != list(range(member.places[0], member.places[0] + len(member.places))):
            apart.append(list(member.places))
        return after_pass(self, engine, member, *args)

    with mock.patch.object(SharedBatch, "_after_pass", spy):
        solo, shared, _ = _two_runs_five_steps_apart(tiny_llama, first, second)
    assert shared == solo
    assert apart, "no member's rows were apart: the gathered path went untested"


def test_a_padded_run_without_attention_weights_beside_one_with_them(tiny_llama):
    first = ("A much longer prompt than the other one, about a lighthouse", ["greedy", "temperature"],
             RunOptions(seed=4, max_new_tokens=16))
    wide_window = ColumnSpec("phase_slip", {**PHASE_SLIP.settings, "perturbation_window": 8})
    second = ("Once upon a time", ["temperature", wide_window], RunOptions(seed=2, max_new_tokens=10,
                                                                           record_order_parameter=False))
    solo, shared, runs = _two_runs_five_steps_apart(tiny_llama, first, second)
    assert shared == solo  # the joining run's Phase-Slip rotates its own positions, never the padding
    assert runs[1].columns[0].rows[-1].order_parameter is None


def test_stopping_one_run_leaves_the_other_to_its_end(tiny_llama):
    first = ("The ancient door creaked open", ["greedy", PHASE_SLIP], RunOptions(seed=1, max_new_tokens=20))
    second = ("Hello world", ["temperature", "greedy", "temperature"], RunOptions(seed=6, max_new_tokens=16))
    solo = [tokens(Engine(tiny_llama).run(*first)), tokens(Engine(tiny_llama).run(*second))]
    stop = threading.Event()
    later, start_second = _start_later(tiny_llama, second)
    a = Session(tiny_llama, first, stop=stop, at_step={2: start_second, 6: stop.set})
    a.start()
    run_a = a.result()
    run_b = later[0].result()
    assert run_a.stopped and [c.finish_reason for c in run_a.columns] == ["stopped", "stopped"]
    assert run_a.step == 6  # stopped within one step
    assert tokens(run_a) == [t[:7] for t in solo[0]]  # the prefill's token and six steps'
    assert not run_b.stopped and tokens(run_b) == solo[1]


def test_a_run_over_the_row_bound_waits_then_runs(tiny_llama, monkeypatch):
    first = ("The ancient door creaked open", ["greedy", "temperature"], RunOptions(seed=1, max_new_tokens=12))
    second = ("Hello world", ["temperature", "greedy"], RunOptions(seed=6, max_new_tokens=8))
    solo = [tokens(Engine(tiny_llama).run(*first)), tokens(Engine(tiny_llama).run(*second))]
    monkeypatch.setenv(SHARED_ROWS_VARIABLE, "3")
    later, start_second = _start_later(tiny_llama, second)
    seen_waiting = []

    def watch_second() -> None:  # the first run's stream holds the loop until the second says it waits
        assert _wait_for(lambda: later and later[0].last is not None and later[0].last.waiting)
        seen_waiting.append((later[0].last.step, later[0].last.waiting))

    a = Session(tiny_llama, first, at_step={2: start_second, 3: watch_second})
    a.start()
    run_a = a.result()
    run_b = later[0].result()
    assert tokens(run_a) == solo[0] and tokens(run_b) == solo[1]
    assert seen_waiting == [(0, WAITING_NOTE)]  # after its prefill it waited for the first run's rows
    assert not run_b.waiting and [c.finish_reason for c in run_b.columns] == ["length", "length"]


def test_a_prompt_that_would_pad_every_row_to_its_length_waits_for_the_batch_to_drain(tiny_llama):
    short = ("Hello world", ["greedy", "temperature"] * 3, RunOptions(seed=1, max_new_tokens=12))
    long_prompt = " ".join(["lamp"] * 480)  # one token a word: nearly the tiny model's 512 positions
    long = (long_prompt, ["temperature"], RunOptions(seed=6, max_new_tokens=8))
    solo = [tokens(Engine(tiny_llama).run(*short)), tokens(Engine(tiny_llama).run(*long))]
    assert len(Engine(tiny_llama).start(*long).prompt_ids) > 400
    loop = shared_loop_of(tiny_llama)
    loop.step_seconds = []
    later, start_long = _start_later(tiny_llama, long)
    seen_waiting = []

    def watch_long() -> None:  # after its prefill it waits instead of padding six rows to its length
        seen_waiting.append(_wait_for(lambda: later and later[0].last is not None
                                      and later[0].last.waiting == WAITING_NOTE))

    a = Session(tiny_llama, short, at_step={2: start_long, 3: watch_long})
    a.start()
    run_a, run_b = a.result(), later[0].result()
    assert tokens(run_a) == solo[0] and tokens(run_b) == solo[1]
    assert seen_waiting == [True] and not run_b.waiting
    assert max(step.rows for step in loop.step_seconds) == 6  # the two never shared a pass


def _wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_closed_stream_leaves_the_batch(tiny_llama):
    second = ("Hello world", ["temperature"], RunOptions(seed=6, max_new_tokens=8))
    solo = tokens(Engine(tiny_llama).run(*second))
    stream = Engine(tiny_llama).stream("Once upon a time", ["greedy"], RunOptions(max_new_tokens=50), shared=True)
    next(stream)
    next(stream)
    stream.close()  # a caller that stops reading: the loop lets its run go
    session = Session(tiny_llama, second)
    session.start()
    assert tokens(session.result()) == solo


def test_a_model_that_cannot_share_decodes_alone_with_the_same_tokens(tiny_gpt2):
    args = ("Once upon a time", ["greedy", "temperature"], RunOptions(seed=5, max_new_tokens=6))
    assert not shares_loop(tiny_gpt2)
    shared = Engine(tiny_gpt2).run(*args, shared=True)
    assert tokens(shared) == tokens(Engine(tiny_gpt2).run(*args))
    assert shared.cache.layers[0].keys.shape[0] == 2  # its own cache: its two rows alone
    assert not shares_loop(load_model(PHASEGPT_MODEL))  # its oscillator sums live in its own cache


def test_zero_gpu_decodes_alone_and_keeps_its_concurrency(monkeypatch):
    from playground.ui import backend, page

    monkeypatch.delenv("PLAYGROUND_CONCURRENCY", raising=False)
    assert backend.shared_decoding() and page.concurrency() == page.DEFAULT_CONCURRENCY
    monkeypatch.setattr(backend, "on_zero_gpu", lambda: True)
    monkeypatch.setattr(page, "on_zero_gpu", lambda: True)
    assert not backend.shared_decoding() and page.concurrency() == page.ZERO_GPU_CONCURRENCY


def test_direct_runs_through_the_loop_give_the_solo_tokens(tiny_llama):
    args = ("The ancient door creaked open", ["greedy", PHASE_SLIP, "adaptive_entropy"],
            RunOptions(seed=9, max_new_tokens=8, samples=2))
    assert tokens(Engine(tiny_llama).run(*args, shared=True)) == tokens(Engine(tiny_llama).run(*args))


class _FailsAtStep3(Sampler):
    """Greedy until its fourth token, then its decision fails."""

    name = "fails_at_step_3"

    @dataclass
    class Settings:
        pass

    def decide(self, view: StepView) -> Decision:
        if view.step == 3:
            raise RuntimeError("this sampler fails at step 3")
        return Decision(token=int(view.logits.argmax()), params={})


def test_a_run_whose_sampler_fails_raises_and_the_other_goes_on(tiny_llama, monkeypatch):
    monkeypatch.setitem(SAMPLERS, _FailsAtStep3.name, _FailsAtStep3)
    second = ("Hello world", ["temperature", "greedy"], RunOptions(seed=6, max_new_tokens=10))
    solo = tokens(Engine(tiny_llama).run(*second))
    later, start_second = _start_later(tiny_llama, second)
    failing = Session(tiny_llama, ("Once upon a time", ["fails_at_step_3"], RunOptions(max_new_tokens=10)),
                      at_step={1: start_second})
    failing.start()
    with pytest.raises(RuntimeError, match="fails at step 3"):
        failing.result()
    assert tokens(later[0].result()) == solo


def test_the_status_line_says_a_run_waits_for_room():
    from types import SimpleNamespace

    from playground.ui.render import run_status

    run = SimpleNamespace(columns=[], step=0, elapsed_s=0.1, options=RunOptions(max_new_tokens=48),
                          waiting=WAITING_NOTE)
    assert 'data-state="waiting"' in run_status(run, "running") and WAITING_NOTE in run_status(run, "running")
    run.waiting = ""
    assert 'data-state="running"' in run_status(run, "running")
