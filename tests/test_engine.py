"""The decoding engine: exactness against transformers, common random numbers, rows, stop, EOS."""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import pytest
import torch

from playground import samplers as registry
from playground.engine import ColumnSpec, Engine, RunOptions, compare, draw
from playground.samplers import Decision, PlaygroundError, Sampler, SettingsError, StepView

from margins import assert_draws_decided, assert_greedy_decided, recorded_draws

PROMPT = "The ancient door creaked open"


# ---- integration: the real default model --------------------------------------------------
def test_greedy_equals_generate(real_lm):
    ids = torch.tensor([real_lm.encode(PROMPT)])
    with torch.inference_mode():
        ref = real_lm.model.generate(ids, do_sample=False, max_new_tokens=24, pad_token_id=2)
    run = compare(real_lm, PROMPT, ["greedy"], max_new_tokens=24)
    assert_greedy_decided(run.columns[0].rows)  # two numeric paths: equal tokens only where no rounding decides
    assert run.columns[0].tokens == ref[0, ids.shape[1]:].tolist()


def test_same_seed_same_tokens_other_seed_differs(real_lm):
    a = compare(real_lm, PROMPT, ["temperature"], seed=7, max_new_tokens=20).columns[0].tokens
    b = compare(real_lm, PROMPT, ["temperature"], seed=7, max_new_tokens=20).columns[0].tokens
    c = compare(real_lm, PROMPT, ["temperature"], seed=8, max_new_tokens=20).columns[0].tokens
    assert a == b
    assert a != c


def test_column_alone_equals_column_batched(real_lm):
    spec = ColumnSpec("temperature", {"temperature": 1.0, "top_k": 50, "top_p": 1.0})
    with recorded_draws() as margins:  # 1 row and 3 rows run other kernels: decided draws only
        alone = compare(real_lm, PROMPT, [spec], seed=8, max_new_tokens=20).columns[0]
    assert_draws_decided(margins)
    batched = compare(real_lm, PROMPT, ["greedy", spec, ColumnSpec("temperature", {"temperature": 0.5})],
                      seed=8, max_new_tokens=20).columns[1]
    assert batched.tokens == alone.tokens
    for x, y in zip(alone.rows, batched.rows):
        assert y.logprob == pytest.approx(x.logprob, abs=1e-4)
        assert y.entropy == pytest.approx(x.entropy, abs=1e-4)


def test_json_has_every_telemetry_key(real_lm):
    out = compare(real_lm, PROMPT, ["greedy", "temperature"], max_new_tokens=3).to_json()
    keys = {"id", "text", "prob", "entropy", "entropy_bits_norm", "varentropy", "top", "fusion_alpha",
            "adaptive_alpha", "state", "order_parameter", "step_ms"}
    assert [c["sampler"] for c in out["columns"]] == ["greedy", "temperature"]
    for col in out["columns"]:
        assert len(col["tokens"]) == 3
        for row in col["tokens"]:
            assert keys <= set(row)
            assert len(row["top"]) == 5 and row["fusion_alpha"] is None
        assert "".join(r["text"] for r in col["tokens"]) == col["text"]
        assert set(col["metrics"]) >= {"perplexity", "type_token_ratio", "distinct_1", "distinct_2", "rep_2", "tok_s"}


# ---- common random numbers and the draw ------------------------------------------------------
def test_draw_is_the_inverse_cdf():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    assert draw(probs, 0.0) == 0
    assert draw(probs, 0.0999) == 0
    assert draw(probs, 0.1001) == 2  # zero-probability token 1 is never drawn
    assert draw(probs, 0.6999) == 2
    assert draw(probs, 0.7001) == 3
    assert draw(probs, 0.999999) == 3


def test_a_column_does_not_depend_on_its_neighbours(tiny_llama):
    spec = ColumnSpec("temperature", {"temperature": 0.01, "top_k": 0, "top_p": 1.0})
    with recorded_draws() as margins:
        alone = compare(tiny_llama, "Hello world", [spec], seed=11, max_new_tokens=12).columns[0].tokens
    # a random model's logits are nearly flat (T 0.01 gives them a shape); the check is against this model's
    # own rounding between 1 and 3 rows, divided by T as the draw sees it, with ten times room for other CPUs
    ids = torch.tensor([tiny_llama.encode("Hello world")] * 3)
    with torch.inference_mode():
        one, three = tiny_llama.model(ids[:1]).logits, tiny_llama.model(ids).logits[:1]
    assert_draws_decided(margins, floor=10 * 2 * float((one - three).abs().max()) / 0.01)
    for neighbours in (["greedy"], ["temperature", "temperature"]):
        run = compare(tiny_llama, "Hello world", neighbours + [spec], seed=11, max_new_tokens=12)
        assert run.columns[-1].tokens == alone


def test_identical_settings_give_identical_columns(tiny_llama):
    run = compare(tiny_llama, "Hello world", ["temperature", "temperature"], seed=5, max_new_tokens=10)
    assert run.columns[0].tokens == run.columns[1].tokens
    assert [c.label for c in run.columns] == ["temperature", "temperature #2"]


# ---- rows the samplers ask for ---------------------------------------------------------------------
@dataclass
class _NoSettings:
    pass


class _SideRowProbe(Sampler):
    """Asks for one side row and leaves it unperturbed: its logits must equal the clean ones."""

    name = "side_probe"
    Settings = _NoSettings
    extra_rows = 1

    def start(self, ctx):
        self.max_gap = 0.0
        self.steps_with_side = 0

    def decide(self, view: StepView) -> Decision:
        if view.extra_logits is not None:
            self.steps_with_side += 1
            self.max_gap = max(self.max_gap, float((view.extra_logits[0] - view.logits).abs().max()))
        return Decision(token=int(view.logits.argmax()))


class _Lookahead(Sampler):
    """Every step offers the top-2 tokens as candidates and picks the second one."""

    name = "lookahead_probe"
    Settings = _NoSettings

    def decide(self, view: StepView) -> Decision:
        return Decision(candidates=torch.topk(view.logits, 2).indices.tolist())

    def choose(self, views):
        assert len(views) == 2
        return 1, {"chose": "second"}


class _SecondBest(Sampler):
    """The same choice as _Lookahead, made directly."""

    name = "second_best"
    Settings = _NoSettings

    def decide(self, view: StepView) -> Decision:
        return Decision(token=int(torch.topk(view.logits, 2).indices[1]))


class _EosAtStep2(Sampler):
    name = "eos_at_2"
    Settings = _NoSettings

    def decide(self, view: StepView) -> Decision:
        return Decision(token=2 if view.step == 2 else int(view.logits.argmax()))


@pytest.fixture
def probes(monkeypatch):
    for cls in (_SideRowProbe, _Lookahead, _SecondBest, _EosAtStep2):
        monkeypatch.setitem(registry.SAMPLERS, cls.name, cls)


def test_side_row_is_an_exact_copy_and_leaves_the_clean_row_alone(tiny_llama, probes):
    engine = Engine(tiny_llama)
    run = engine.run("Hello world", ["greedy", "side_probe"], RunOptions(max_new_tokens=8))
    probe = run.columns[1].sampler
    assert probe.steps_with_side == 7
    assert probe.max_gap < 1e-4
    assert run.columns[1].tokens == run.columns[0].tokens
    assert run.cache.get_seq_length() == len(run.prompt_ids) + 7


def test_lookahead_candidates_equal_a_direct_choice(tiny_llama, probes):
    run = compare(tiny_llama, "Hello world", ["lookahead_probe", "second_best", "greedy"], max_new_tokens=6)
    look, direct = run.columns[0], run.columns[1]
    assert look.tokens == direct.tokens
    assert [r.logprob for r in look.rows] == pytest.approx([r.logprob for r in direct.rows], abs=1e-5)
    assert all(r.extra == {"chose": "second"} for r in look.rows)
    assert len(run.columns[2].tokens) == 6


def test_eos_ends_one_column_and_the_others_go_on(tiny_llama, probes):
    run = compare(tiny_llama, "Hello world", ["eos_at_2", "greedy"], max_new_tokens=6)
    eos, greedy = run.columns
    assert eos.finish_reason == "eos" and len(eos.tokens) == 3 and eos.tokens[-1] == 2
    assert greedy.finish_reason == "length" and len(greedy.tokens) == 6
    assert eos.tokens[:2] == greedy.tokens[:2]


# ---- streaming and stopping ------------------------------------------------------------------------
def test_stream_yields_after_every_step(tiny_llama):
    counts = [sum(len(c.tokens) for c in run.columns)
              for run in Engine(tiny_llama).stream("Hello world", ["greedy"], RunOptions(max_new_tokens=5))]
    assert counts[:5] == [1, 2, 3, 4, 5]


def test_stop_flag_ends_decoding_between_steps(tiny_llama):
    stop = threading.Event()
    engine = Engine(tiny_llama)
    steps = 0
    for run in engine.stream("Hello world", ["greedy", "temperature"], RunOptions(max_new_tokens=200), stop):
        steps += 1
        if run.step == 3:
            stop.set()
    assert run.stopped and run.done
    assert all(c.finish_reason == "stopped" and len(c.tokens) == 4 for c in run.columns)
    assert run.cache.get_seq_length() == len(run.prompt_ids) + 3


# ---- bad input -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt, samplers, options, message", [
    ("   ", ["greedy"], {}, "prompt is empty"),
    ("Hi", ["greedy"], {"max_new_tokens": 0}, "max_new_tokens"),
    ("Hi", ["greedy"], {"max_new_tokens": 10**6}, "max_new_tokens"),
    ("Hi", ["nucleus"], {}, "unknown sampler 'nucleus'"),
    ("Hi", [], {}, "at least one sampler"),
    ("Hi", [ColumnSpec("temperature", {"temperature": -1})], {}, "temperature.temperature"),
    ("Hi", [ColumnSpec("temperature", {"top_p": 0})], {}, "temperature.top_p"),
    ("Hi", [ColumnSpec("temperature", {"top_p": 1.5})], {}, "temperature.top_p"),
    ("Hi", [ColumnSpec("temperature", {"top_k": "many"})], {}, "temperature.top_k must be int"),
    ("Hi", [ColumnSpec("temperature", {"colour": 1})], {}, "unknown setting temperature.colour"),
    ("Hi", ["greedy"], {"seed": -1}, "seed"),
    ("Hi", ["greedy"], {"probe_layer": 99}, "probe_layer"),
    ("word " * 600, ["greedy"], {"max_new_tokens": 10}, "exceeds the model's context of 512"),
])
def test_bad_input_is_refused_with_a_clear_message(tiny_llama, prompt, samplers, options, message):
    with pytest.raises(PlaygroundError, match=message.replace("(", r"\(")):
        compare(tiny_llama, prompt, samplers, **options)


def test_settings_errors_are_playground_errors():
    assert issubclass(SettingsError, PlaygroundError) and issubclass(PlaygroundError, ValueError)


def test_a_stream_resumed_from_other_threads_stays_in_inference_mode(tiny_llama):
    # Gradio and the UI resume the stream from worker threads: grad mode is thread-local
    engine = Engine(tiny_llama)
    steps = engine.stream("Hello world", ["temperature"], RunOptions(max_new_tokens=5))
    run = next(steps)
    for _ in range(3):
        worker = threading.Thread(target=lambda: next(steps))
        worker.start()
        worker.join()
    keys = run.cache.layers[0].keys
    assert keys.shape[2] == len(run.prompt_ids) + 3
    assert not keys.requires_grad and torch.is_inference(keys)


def test_a_run_passes_the_cache_by_the_current_keyword_without_a_deprecation_warning(real_lm):
    import warnings

    from playground.calibration import calibrate_heads

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Engine(real_lm).run("Hello there " * 300, ["greedy", "phase_slip", "adaptive_entropy"],
                            RunOptions(max_new_tokens=3))
        calibrate_heads(real_lm, "A short calibration text for the warning check.", search_layers=1, n_heads=1)
    deprecations = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert deprecations == []


def test_the_greedy_token_is_the_first_of_tied_maxima_as_argmax_gives():
    from playground.samplers.base import argmax_token

    generator = torch.Generator().manual_seed(2)
    for _ in range(50):  # logits with many ties at the top
        logits = torch.randint(0, 20, (49152,), generator=generator).float()
        assert argmax_token(logits) == int(logits.argmax()) == int(torch.nonzero(logits == logits.max())[0])
    logits = torch.full((8,), -math.inf)
    logits[5] = 0.0
    assert argmax_token(logits) == 5
