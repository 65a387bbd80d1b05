"""A run owns its decoding: the Engine keeps no run's state, so runs on one Engine can interleave."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from playground.engine import ColumnSpec, Engine, RunOptions
from playground.rows import RowPlan, RowRequest
from playground.samplers import SAMPLERS, Decision, Sampler, StepView

PHASE_SLIP = ColumnSpec("phase_slip", {"heads": "2.1,3.0", "noise_scale": 0.8, "perturbation_window": 4})
WITH_R = ("The ancient door creaked open", ["greedy", PHASE_SLIP, "adaptive_entropy", "temperature"],
          RunOptions(seed=3, max_new_tokens=9))
WITHOUT_R = ("Hello world, this is a longer prompt",
             ["temperature", "mirostat", ColumnSpec("temperature", {"min_p": 0.1})],
             RunOptions(seed=8, max_new_tokens=6, record_order_parameter=False))


def _trace(run) -> list[tuple[list[int], list[float], list[float]]]:
    return [(c.tokens, [r.entropy for r in c.rows], [r.sampler_prob for r in c.rows]) for c in run.columns]


def test_two_runs_advanced_alternately_give_each_runs_solo_tokens(tiny_llama):
    engine = Engine(tiny_llama)
    solo = [_trace(engine.run(*WITH_R)), _trace(engine.run(*WITHOUT_R))]
    # one run reads attention weights (R, the adaptive sampler), the other asks for none (sdpa):
    # each pass must get its own attention, cache and generators
    streams = [engine.stream(*WITH_R), engine.stream(*WITHOUT_R)]
    last = [None, None]
    while any(s is not None for s in streams):
        for i, stream in enumerate(streams):
            if stream is not None:
                last[i] = next(stream, None) or last[i]
                if last[i].done:
                    streams[i] = None
    assert [_trace(r) for r in last] == solo
    assert [len(c.tokens) for c in last[0].columns] == [9, 9, 9, 9]
    assert last[0].cache is not last[1].cache


def test_the_engine_keeps_no_state_of_a_run(tiny_llama):
    engine = Engine(tiny_llama)
    stream = engine.stream(*WITHOUT_R)
    run = next(stream)
    next(stream)
    assert vars(engine) == {"lm": tiny_llama}
    assert run.cache.get_seq_length() == run.n_prompt + 1 and torch.equal(
        run.prompt_tensor, torch.tensor(run.prompt_ids))
    assert tiny_llama.model.config._attn_implementation == "sdpa"  # a run without weights decodes through sdpa
    for _ in stream:
        pass
    assert tiny_llama.model.config._attn_implementation == "eager"  # and leaves the model at rest


class _TopTwoLookahead(Sampler):
    """Every step offers the top-2 tokens as candidates and keeps the second."""

    name = "top_two_lookahead"

    @dataclass
    class Settings:
        pass

    def decide(self, view: StepView) -> Decision:
        return Decision(candidates=torch.topk(view.logits, 2).indices.tolist(), params={"k": 2})

    def choose(self, views):
        return 1, {"chose": "second"}


def test_a_lookahead_is_a_named_step_record_and_its_candidates_become_rows(tiny_llama, monkeypatch):
    monkeypatch.setitem(SAMPLERS, _TopTwoLookahead.name, _TopTwoLookahead)
    engine = Engine(tiny_llama)
    run = engine.start("The ancient door creaked open", ["top_two_lookahead", "greedy"], RunOptions(max_new_tokens=4))
    engine.prefill(run)
    look = run.columns[0]
    record = look.lookahead
    assert look.tokens == [] and len(record.candidates) == 2 and record.params == {"k": 2}
    assert record.clean.top_ids[:2] == record.candidates  # the clean top-2, read in the prefill's batch
    engine.step(run)
    assert [r.kind for r in run.plan.layout] == ["cand", "main", "main"]  # the kept candidate continues column 0
    assert look.tokens == [record.candidates[1]] and look.rows[0].extra == {"chose": "second"}
    assert look.lookahead is not None and len(run.columns[1].tokens) == 2


class _Layer:
    def __init__(self, rows: int, n: int):
        self.keys = torch.arange(rows * n, dtype=torch.float32).view(rows, 1, n, 1).repeat(1, 1, 1, 2)
        self.values = self.keys.clone()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.keys, self.values = self.keys[indices], self.values[indices]


class _Cache:
    """Two layers of [rows, 1 head, n positions, 2 dims], with DynamicCache's calls the plan uses."""

    def __init__(self, rows: int, n: int):
        self.layers = [_Layer(rows, n), _Layer(rows, n)]

    def get_seq_length(self) -> int:
        return self.layers[0].keys.shape[2]


def test_the_row_plan_lays_out_reindexes_and_resyncs_only_the_perturbed_tail():
    plan = RowPlan(_Cache(rows=1, n=5))
    rows = plan.next_rows([RowRequest(col=0, source=0, token=7, side_rows=1), RowRequest(col=1, source=0, token=9)])
    assert [(r.col, r.kind, r.source, r.token) for r in rows] == [(0, "main", 0, 7), (0, "side", 0, 7),
                                                                  (1, "main", 0, 9)]
    plan.move_to(rows)
    assert plan.side_rows() == [1]
    for values in plan.values_of(1):
        values[:, -2:] = -1.0  # a sampler's perturbation of the last two positions
    plan.mark_perturbed(1, 2)
    assert plan.layout[1].dirty_from == 3
    kept = plan.next_rows([RowRequest(col=0, source=0, token=8, side_rows=1),
                           RowRequest(col=1, source=2, token=4, candidates=[11, 12])])
    assert [(r.kind, r.source, r.token, r.dirty_from) for r in kept] == [
        ("main", 0, 8, None), ("side", 1, 8, 3), ("cand", 2, 11, None), ("cand", 2, 12, None)]
    plan.move_to(kept)
    for layer in plan.cache.layers:
        assert torch.equal(layer.values[1], layer.values[0])  # the perturbed tail is the clean row's again
        assert torch.equal(layer.values[2], layer.values[3])  # both candidates continue column 1's row
    plan.keep_candidate(3)
    main, sides, cands = plan.roles()
    assert main == {0: 0, 1: 3} and sides == {0: [1]} and cands == {1: [2]}


def test_side_rows_joining_at_a_layer_are_held_from_that_layer_on_only():
    plan = RowPlan(_Cache(rows=1, n=5))
    rows = plan.next_rows([RowRequest(col=0, source=0, token=7), RowRequest(col=1, source=0, token=9, side_rows=1,
                                                                           side_layer=1)])
    plan.move_to(rows)
    assert [r.kind for r in rows] == ["main", "main", "side"] and plan.join_layer == 1
    assert [layer.keys.shape[0] for layer in plan.cache.layers] == [2, 3]  # layer 0: no side row
    fed, join = plan.pass_rows()
    assert fed == [0, 1] and join.layer == 1 and join.sources.tolist() == [0, 1, 1]  # the side row starts as row 1
    values = plan.values_of(2)
    assert values[0].data_ptr() == plan.cache.layers[0].values[1].data_ptr()  # below the join: its clean row's
    values[1][:, -2:] = -1.0
    plan.mark_perturbed(2, 2)
    for layer in plan.cache.layers:  # the forward appends a position to every row each layer holds
        layer.keys, layer.values = (torch.cat([t, t[:, :, -1:]], 2) for t in (layer.keys, layer.values))
    kept = plan.next_rows([RowRequest(col=1, source=1, token=4, side_rows=1, side_layer=1)])  # column 0 ended
    # the main row keeps its place; the side row, past the new end, moves into the place column 0 left
    assert [(r.kind, r.source, r.dirty_from) for r in kept] == [("side", 2, 3), ("main", 1, None)]
    side_values = plan.cache.layers[1].values[2].clone()
    plan.move_to(kept)
    assert [layer.keys.shape[0] for layer in plan.cache.layers] == [1, 2]
    assert torch.equal(plan.cache.layers[1].values[0], plan.cache.layers[1].values[1])  # re-synced from its clean row
    assert torch.equal(plan.cache.layers[1].values[0, :, :3], side_values[:, :3])  # the side row's own cache, moved
    fed, join = plan.pass_rows()
    assert fed == [1] and join.sources.tolist() == [0, 0]  # both rows continue the one fed row
    main, sides, _ = plan.roles()
    assert main == {1: 1} and sides == {1: [0]}
    whole = plan.next_rows([RowRequest(col=1, source=main[1], token=4, side_rows=1, side_layer=0)])
    assert [(r.kind, r.source) for r in whole] == [("side", 1), ("main", 1)]  # a join lower than the held side
    plan.move_to(whole)  # row's: a fresh copy of the clean row, in the place the old side row had
    assert [layer.keys.shape[0] for layer in plan.cache.layers] == [2, 2] and plan.pass_rows() == ([0, 1], None)
