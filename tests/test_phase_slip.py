"""Phase-Slip: exact rotation, an untouched clean cache, zero noise = temperature, fusion alpha, calibration."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from playground import calibration
from playground.calibration import HeadScore, calibrate_heads, select_heads
from playground.engine import ColumnSpec, Engine, RunOptions
from playground.facades import PhaseSlipSampler
from playground.samplers import RunContext, SettingsError, StepView, make_settings
from playground.samplers.phase_slip import (
    PhaseSlip,
    entropy_nats,
    fusion_alpha,
    rotate_toward,
    rotation_angle,
    tempered_log_probs,
)
from playground.samplers.temperature import sampling_probs

from margins import LOGIT_NOISE, assert_draws_decided, recorded_draws

PROMPT = "The ancient door creaked open"


def angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle (radians) between matching vectors of a and b, [..., d] -> [...]."""
    a, b = a.double(), b.double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    return torch.acos(cos.clamp(-1, 1))


# ---- rotation -------------------------------------------------------------------------------
def test_rotation_angle_is_the_public_effective_angle():
    # beta * atan(eps sqrt(d) / (1 - eps)), written out independently
    assert rotation_angle(0.03, 64) == pytest.approx(0.15 * math.atan(0.03 * 8 / 0.97), rel=1e-12)
    assert rotation_angle(0.0, 64) == 0.0
    assert rotation_angle(1.0, 64) == pytest.approx(0.15 * math.pi / 2)
    assert rotation_angle(0.2, 64) > rotation_angle(0.1, 64) > rotation_angle(0.1, 16)


@pytest.mark.parametrize("phi", [0.0364, 0.3, 1.2, math.pi / 2])
def test_rotation_keeps_norm_and_turns_by_phi(phi):
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(200, 64, generator=gen) * torch.rand(200, 1, generator=gen) * 5
    turned = rotate_toward(v, phi, torch.randn(200, 64, generator=gen, dtype=torch.float64))
    assert turned.dtype == v.dtype
    assert torch.allclose(turned.norm(dim=-1), v.norm(dim=-1), rtol=1e-5, atol=0)
    assert torch.allclose(angle_between(v, turned), torch.full((200,), phi, dtype=torch.float64), atol=1e-4)


def test_zero_angle_is_the_identity_bit_for_bit():
    v = torch.randn(10, 64)
    assert torch.equal(rotate_toward(v, 0.0, torch.randn(10, 64, dtype=torch.float64)), v)


def _sampler(lm, **overrides) -> PhaseSlip:
    sampler = PhaseSlip(make_settings("phase_slip", overrides), lm)
    sampler.start(RunContext(seed=0, prompt_ids=torch.tensor([1, 2, 3])))
    return sampler


def test_perturb_rotates_only_eligible_heads_in_the_generated_window(tiny_llama):
    sampler = _sampler(tiny_llama, heads="1.0,3.1", noise_scale=0.5, perturbation_window=3)
    values = [torch.randn(2, 10, 16) for _ in range(4)]  # [kv_heads, seq, head_dim]
    before = [v.clone() for v in values]
    n_prompt = 5  # 5 generated positions in the cache: the window is the last 3
    assert sampler.perturb(values, n_prompt, step=6) == 3
    phi = rotation_angle(0.5, 16)
    for layer in range(4):
        for head in range(2):
            if (layer, head) not in [(1, 0), (3, 1)]:
                assert torch.equal(values[layer][head], before[layer][head])
                continue
            assert torch.equal(values[layer][head, :7], before[layer][head, :7])  # prompt + older generated
            new, old = values[layer][head, 7:], before[layer][head, 7:]
            assert torch.allclose(new.norm(dim=-1), old.norm(dim=-1), rtol=1e-5, atol=0)
            assert torch.allclose(angle_between(old, new), torch.full((3,), phi, dtype=torch.float64), atol=1e-4)


def test_one_rotation_call_turns_each_layer_as_a_call_per_layer_would(tiny_llama):
    sampler = _sampler(tiny_llama, heads="1.0,1.1,3.1", noise_scale=0.5, perturbation_window=3)
    values = [torch.randn(2, 10, 16) for _ in range(4)]
    expected = [v.clone() for v in values]
    generator = torch.Generator().manual_seed(0)  # the sampler's own, seeded with the run seed
    for layer, heads in ((1, [0, 1]), (3, [1])):  # one draw and one rotation per layer, in layer order
        window = expected[layer][heads, -3:]
        noise = torch.randn(window.shape, generator=generator, dtype=torch.float64)
        expected[layer][heads, -3:] = rotate_toward(window, rotation_angle(0.5, 16), noise)
    assert sampler.perturb(values, n_prompt=5, step=6) == 3
    assert all(torch.equal(v, e) for v, e in zip(values, expected))


def test_perturb_never_touches_the_prompt(tiny_llama):
    sampler = _sampler(tiny_llama, calibrate=False, search_layers=4, noise_scale=0.5, perturbation_window=12)
    values = [torch.randn(2, 9, 16) for _ in range(4)]
    before = [v.clone() for v in values]
    assert sampler.perturb(values, n_prompt=7, step=3) == 2  # only 2 generated positions exist
    assert all(torch.equal(v[:, :7], b[:, :7]) for v, b in zip(values, before))
    assert all(not torch.equal(v[:, 7:], b[:, 7:]) for v, b in zip(values, before))
    assert sampler.perturb(values, n_prompt=9, step=1) == 0  # first step: the window is empty


# ---- the engine: two rows, one forward, the clean cache untouched ---------------------------
def test_clean_cache_gets_one_position_equal_to_a_run_without_the_side_row(tiny_llama):
    lm = tiny_llama
    assert lm.joins_side_rows  # the side row joins at layer 2, the lowest perturbed one
    spec = ColumnSpec("phase_slip", {"heads": "2.1,3.0", "noise_scale": 0.8, "perturbation_window": 4})
    engine = Engine(lm)
    stream = engine.stream(PROMPT, [spec], RunOptions(seed=1, max_new_tokens=8, record_order_parameter=False))
    n_prompt = len(lm.encode(PROMPT))
    run = next(stream)
    for _ in range(6):
        length = run.cache.get_seq_length()
        snapshot = [(layer.keys[:1].clone(), layer.values[:1].clone()) for layer in run.cache.layers]
        token = run.columns[0].tokens[-1]
        run = next(stream)
        cache = run.cache
        assert cache.get_seq_length() == length + 1
        with torch.inference_mode():  # the same step with the clean row alone
            alone = DynamicCache(ddp_cache_data=snapshot, config=lm.model.config)
            lm.forward(torch.tensor([[token]]), alone)
        generated = length - n_prompt
        for index, layer in enumerate(cache.layers):
            assert layer.keys.shape[0] == layer.values.shape[0] == (1 if index < 2 else 2)  # below: the clean row only
            clean_k, clean_v = layer.keys[0], layer.values[0]
            assert torch.equal(clean_k[:, :length], snapshot[index][0][0])  # old positions: bit-identical
            assert torch.equal(clean_v[:, :length], snapshot[index][1][0])
            assert torch.allclose(clean_k[:, length], alone.layers[index].keys[0, :, length], atol=1e-5)
            assert torch.allclose(clean_v[:, length], alone.layers[index].values[0, :, length], atol=1e-5)
            if index < 2:  # the clean row passed these layers alone: a one-row step's numbers, bit for bit
                assert torch.equal(clean_k[:, length], alone.layers[index].keys[0, :, length])
                assert torch.equal(clean_v[:, length], alone.layers[index].values[0, :, length])
                continue
            side_k, side_v = layer.keys[1], layer.values[1]
            assert torch.equal(side_k[:, :length], clean_k[:, :length])  # keys are never perturbed
            assert torch.equal(side_v[:, :n_prompt], clean_v[:, :n_prompt])  # nor is the prompt
            for head in range(lm.n_kv_heads):
                differs = not torch.equal(side_v[head, :length], clean_v[head, :length])
                assert differs == ((index, head) in [(2, 1), (3, 0)] and generated > 0)
        signals = run.columns[0].rows[-1]
        assert signals.extra["perturbed_positions"] == min(4, generated)
        assert signals.extra["eligible_heads"] == ["2.1", "3.0"]


# ---- side rows join the pass at the lowest perturbed layer -----------------------------------
def _decoded(lm, monkeypatch, joined: bool, prompt: str, columns: list, parent=None, **options):
    """A run with side rows joining the pass at their layer (``joined``) or fed whole from the first layer;
    per Phase-Slip Column its steps' (clean, perturbed) logits; after the first step, the plan's join
    layer and each cache layer's rows."""
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    decide = PhaseSlip.decide

    def recorded(self, view: StepView):
        if view.extra_logits is not None:
            seen.setdefault(id(self), []).append((view.logits.clone(), view.extra_logits[0].clone()))
        return decide(self, view)

    monkeypatch.setattr(PhaseSlip, "decide", recorded)
    monkeypatch.setattr(lm, "joins_side_rows", joined)
    run, first_step = None, None
    for run in Engine(lm).stream(prompt, columns, RunOptions(**options), parent=parent):
        if run.step == 1 and first_step is None:
            first_step = (run.plan.join_layer, [layer.keys.shape[0] for layer in run.cache.layers])
    logits = [seen.get(id(c.sampler), []) for c in run.decoding if isinstance(c.sampler, PhaseSlip)]
    return run, logits, first_step


def _largest_gap(a: list, b: list) -> float:
    """The largest |difference| between two runs' clean or perturbed logits, step by step."""
    pairs = [(x, y) for col_a, col_b in zip(a, b, strict=True) for x, y in zip(col_a, col_b, strict=True)]
    assert pairs
    return max(float((u - v).abs().max()) for x, y in pairs for u, v in zip(x, y))


JOINED_TOKENS = 20
JOINED_SEED = 10  # seeds 10, 11, 12 (three samples): every draw of the whole-row runs is decided


@pytest.mark.slow
def test_side_rows_from_the_lowest_perturbed_layer_give_the_whole_rows_tokens(real_lm, monkeypatch):
    """The five benchmark prompts x 3 seeds: the tokens of side rows fed whole, and logits within rounding."""
    from playground.prompts import BENCHMARK_PROMPTS

    lowest = min(layer for layer, _ in calibrate_heads(real_lm).heads)  # 25 of 30
    options = {"seed": JOINED_SEED, "samples": 3, "max_new_tokens": JOINED_TOKENS}
    gaps, moved = [], []
    for prompt in BENCHMARK_PROMPTS:
        with recorded_draws() as margins:  # two numeric paths (3 or 6 rows below the join): decided draws only
            whole, whole_logits, whole_rows = _decoded(real_lm, monkeypatch, False, prompt, ["phase_slip"], **options)
        assert_draws_decided(margins)
        joined, joined_logits, joined_rows = _decoded(real_lm, monkeypatch, True, prompt, ["phase_slip"], **options)
        assert [s.tokens for s in joined.samples[0]] == [s.tokens for s in whole.samples[0]]
        assert whole_rows == (0, [6] * real_lm.n_layers)
        assert joined_rows == (lowest, [3] * lowest + [6] * (real_lm.n_layers - lowest))  # no side row below
        gaps.append(_largest_gap(whole_logits, joined_logits))
        moved.append(max(float((p - c).abs().max()) for col in whole_logits for c, p in col))
    assert max(gaps) < LOGIT_NOISE  # rounding only: other row counts below the join (6.2e-5 measured on AVX2)
    assert min(moved) > 100 * LOGIT_NOISE  # the control: the perturbation moves the logits far more


MIXED_COLUMNS = ["greedy", ColumnSpec("phase_slip", {"heads": "2.1,3.0", "noise_scale": 0.8, "temperature": 0}),
                 ColumnSpec("adaptive_entropy", {"lookahead": True}),
                 ColumnSpec("phase_slip", {"heads": "3.1", "noise_scale": 0.8, "temperature": 0}), "temperature"]


@pytest.mark.parametrize("record_order_parameter", [True, False])
def test_side_rows_join_a_batch_with_lookaheads_samples_and_a_long_prompt(tiny_llama, monkeypatch,
                                                                          record_order_parameter):
    """Two Phase-Slip columns perturbing from layers 2 and 3, beside greedy, a lookahead and temperature,
    two samples each, after a prompt longer than the prefill with weights: side rows fed whole give the
    same tokens and logits."""
    options = {"seed": 5, "samples": 2, "max_new_tokens": 10, "record_order_parameter": record_order_parameter}
    prompt = "word " * 150 + PROMPT
    whole, whole_logits, _ = _decoded(tiny_llama, monkeypatch, False, prompt, MIXED_COLUMNS, **options)
    joined, joined_logits, (join, rows) = _decoded(tiny_llama, monkeypatch, True, prompt, MIXED_COLUMNS, **options)
    assert [c.tokens for c in joined.decoding] == [c.tokens for c in whole.decoding]
    assert _largest_gap(whole_logits, joined_logits) < 1e-5
    assert join == 2  # the lowest of the side rows' layers: all four side rows join there
    assert rows == [rows[0]] * 2 + [rows[0] + 4] * 2


def test_a_branch_joins_its_side_rows_as_a_run_does(tiny_llama, monkeypatch):
    from playground.engine import branch_point

    parent = Engine(tiny_llama).run(PROMPT, MIXED_COLUMNS, RunOptions(seed=2, max_new_tokens=6))
    specs, options, point = branch_point(tiny_llama, parent, column=1, step=3, token=42)
    options = vars(options)
    whole, whole_logits, _ = _decoded(tiny_llama, monkeypatch, False, point.prompt, specs, parent=point, **options)
    joined, joined_logits, _ = _decoded(tiny_llama, monkeypatch, True, point.prompt, specs, parent=point, **options)
    assert joined.prompt_ids == parent.prompt_ids + parent.columns[1].tokens[:3] + [42]
    assert [c.tokens for c in joined.decoding] == [c.tokens for c in whole.decoding]
    assert _largest_gap(whole_logits, joined_logits) < 1e-5


def test_noise_zero_gives_the_temperature_tokens_in_the_same_run(real_lm, monkeypatch):
    seen: dict[float, list[float]] = {}
    decide = PhaseSlip.decide

    def spy(self, view: StepView):
        if view.extra_logits is not None:
            shift = float((view.extra_logits[0] - view.logits).abs().max())
            seen.setdefault(self.settings.noise_scale, []).append(shift)
        return decide(self, view)

    monkeypatch.setattr(PhaseSlip, "decide", spy)
    sampling = {"temperature": 0.65, "top_k": 40, "top_p": 0.92}
    run = Engine(real_lm).run(PROMPT, [
        ColumnSpec("temperature", sampling),
        ColumnSpec("phase_slip", {**sampling, "noise_scale": 0.0, "calibrate": False}),
        ColumnSpec("phase_slip", {**sampling, "noise_scale": 0.5, "calibrate": False}),
    ], RunOptions(seed=11, max_new_tokens=14, record_order_parameter=False))
    temperature, quiet, noisy = run.columns
    with recorded_draws() as margins:  # fusion rounds the logits: equal tokens only on decided draws
        Engine(real_lm).run(PROMPT, [ColumnSpec("temperature", sampling)],
                            RunOptions(seed=11, max_new_tokens=14, record_order_parameter=False))
    assert_draws_decided(margins)
    assert quiet.tokens == temperature.tokens
    assert max(seen[0.0]) < 1e-4  # perturbed logits = clean logits, to float tolerance
    assert max(seen[0.5]) > 0.1  # the control: a real rotation moves the logits
    alphas = [r.fusion_alpha for r in quiet.rows]
    assert all(0.45 <= a <= 1.0 for a in alphas) and len(set(alphas)) > 1


# ---- fusion ---------------------------------------------------------------------------------
def test_fusion_alpha_formula_and_bounds():
    assert fusion_alpha(2.5, 0.45) == pytest.approx(0.45 + 0.55 * 0.5)
    assert fusion_alpha(0.0, 0.45) == pytest.approx(0.45 + 0.55 / (1 + math.exp(-2.5)))
    assert fusion_alpha(4.0, 0.2) == pytest.approx(0.2 + 0.8 / (1 + math.exp(1.5)))
    for alpha0 in (0.0, 0.45, 1.0):
        values = [fusion_alpha(h, alpha0) for h in (0.0, 0.5, 2.5, 5.0, 11.0, 1e6)]
        assert all(alpha0 <= a <= 1.0 for a in values)
        assert values == sorted(values, reverse=True)  # more uncertain: more weight on the perturbed path


def test_decide_fuses_with_the_entropy_gated_alpha(tiny_llama):
    sampler = _sampler(tiny_llama, calibrate=False, search_layers=2, top_k=0, top_p=1.0, temperature=0.8)
    gen = torch.Generator().manual_seed(3)
    clean, perturbed = torch.randn(50, generator=gen) * 2, torch.randn(50, generator=gen) * 2
    view = StepView(step=3, logits=clean, input_ids=torch.tensor([1, 2, 3]), n_prompt=2,
                    extra_logits=perturbed.view(1, -1))
    decision = sampler.decide(view)
    p = torch.softmax(clean.double() / 0.8, -1)
    entropy = float(-(p * p.log()).sum())
    assert entropy_nats(tempered_log_probs(clean, 0.8)) == pytest.approx(entropy, rel=1e-6)  # computed in float32
    alpha = 0.45 + 0.55 / (1 + math.exp(entropy - 2.5))
    assert decision.signals["fusion_alpha"] == pytest.approx(alpha, rel=1e-6)
    expected = torch.softmax((alpha * clean + (1 - alpha) * perturbed) / 0.8, -1)
    assert torch.allclose(decision.probs, expected, atol=1e-6)
    # no side logits (step 0): the clean distribution itself
    first = sampler.decide(StepView(step=0, logits=clean, input_ids=torch.tensor([1]), n_prompt=1))
    assert torch.equal(first.probs, sampling_probs(clean, torch.tensor([1]), temperature=0.8))


# ---- calibration ----------------------------------------------------------------------------
def test_select_heads_excludes_structural_heads():
    scores = [HeadScore(5, 0, score=0.9, kl=0.9, flip_rate=0.5, structural=True),
              HeadScore(5, 1, score=0.2, kl=0.2, flip_rate=0.0, structural=False),
              HeadScore(4, 2, score=0.2, kl=0.3, flip_rate=0.1, structural=False),
              HeadScore(4, 0, score=0.4, kl=0.4, flip_rate=0.0, structural=False),
              HeadScore(4, 1, score=0.1, kl=0.1, flip_rate=0.0, structural=False)]
    assert select_heads(scores, 3) == [(4, 0), (4, 2), (5, 1)]
    assert select_heads(scores[:1], 3) == []


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_calibration_is_deterministic_on_tiny_models(fixture, request):
    lm = request.getfixturevalue(fixture)
    first = calibrate_heads(lm, search_layers=2, n_heads=3, use_cache=False)
    second = calibrate_heads(lm, search_layers=2, n_heads=3, use_cache=False)
    assert first.heads == second.heads and [s.score for s in first.scores] == [s.score for s in second.scores]
    assert len(first.scores) == 2 * lm.n_kv_heads  # one candidate per KV head of the last 2 layers
    assert 1 <= len(first.heads) <= 3
    assert all(layer in (2, 3) and head < lm.n_kv_heads for layer, head in first.heads)
    assert all(s.score > 0 for s in first.scores if not s.structural)  # every probe moved the distribution
    assert calibrate_heads(lm, search_layers=2, n_heads=3) is calibrate_heads(lm, search_layers=2, n_heads=3)


def test_calibrated_heads_reach_the_telemetry(tiny_llama):
    expected = calibrate_heads(tiny_llama, search_layers=2, n_heads=2, window=12).heads
    run = Engine(tiny_llama).run(PROMPT, [ColumnSpec("phase_slip", {"search_layers": 2, "n_heads": 2})],
                                 RunOptions(seed=0, max_new_tokens=3, record_order_parameter=False))
    assert run.columns[0].rows[0].extra["eligible_heads"] == [f"{l}.{h}" for l, h in expected]


def test_default_model_calibration(real_lm):
    result = calibrate_heads(real_lm)
    assert len(result.heads) == 3 and len(set(result.heads)) == 3
    assert all(24 <= layer <= 29 and 0 <= head < 3 for layer, head in result.heads)
    chosen = [s for s in result.scores if s.head in result.heads]
    others = [s for s in result.scores if s.head not in result.heads and not s.structural]
    assert min(s.score for s in chosen) >= max(s.score for s in others)
    assert result.n_probe == calibration.PROBE_TOKENS


# ---- settings and the library API -----------------------------------------------------------
@pytest.mark.parametrize("overrides, named", [
    ({"noise_scale": "-0.01"}, "noise_scale"),
    ({"perturbation_window": "-1"}, "perturbation_window"),
    ({"logit_fusion_alpha": "1.5"}, "logit_fusion_alpha"),
    ({"logit_fusion_alpha": "-0.1"}, "logit_fusion_alpha"),
    ({"top_p": "0"}, "top_p"),
    ({"temperature": "-1"}, "temperature"),
    ({"n_heads": "0"}, "n_heads"),
    ({"heads": "seven"}, "heads"),
])
def test_bad_settings_are_refused(overrides, named):
    with pytest.raises(SettingsError, match=rf"phase_slip\.{named}"):
        make_settings("phase_slip", overrides)


@pytest.mark.parametrize("overrides, named", [
    ({"search_layers": 4, "n_heads": 9}, "n_heads"),  # 4 layers x 2 KV heads = 8
    ({"search_layers": 2, "n_heads": 5}, "n_heads"),
    ({"search_layers": 5}, "search_layers"),
    ({"heads": "4.0"}, "heads"),
    ({"heads": "1.2"}, "heads"),
])
def test_settings_the_model_cannot_satisfy_are_refused(tiny_llama, overrides, named):
    with pytest.raises(SettingsError, match=rf"phase_slip\.{named}"):
        PhaseSlip(make_settings("phase_slip", overrides), tiny_llama)
    with pytest.raises(SettingsError, match=rf"phase_slip\.{named}"):
        Engine(tiny_llama).run(PROMPT, [ColumnSpec("phase_slip", overrides)], RunOptions(max_new_tokens=2))


def test_library_api_runs_on_the_engine(tiny_llama):
    sampler = PhaseSlipSampler(tiny_llama.model, tiny_llama.tokenizer, noise_scale=0.3,
                               logit_fusion_alpha=0.45, perturbation_window=6, search_layers=2)
    heads = sampler.calibrate_heads("Once upon a time", search_layers=2)
    assert heads == calibrate_heads(sampler.lm, "Once upon a time", search_layers=2, window=6).heads
    text = sampler.generate("The ancient door creaked open", max_new_tokens=6, temperature=0.65)
    assert isinstance(text, str) and text == sampler.generate(PROMPT, max_new_tokens=6, temperature=0.65)
    heads_setting = ",".join(f"{l}.{h}" for l, h in heads)
    run = Engine(tiny_llama).run(PROMPT, [ColumnSpec("phase_slip", {
        "heads": heads_setting, "noise_scale": 0.3, "perturbation_window": 6, "search_layers": 2})],
        RunOptions(seed=0, max_new_tokens=6, record_order_parameter=False))
    assert text == run.columns[0].text
    with pytest.raises(SettingsError, match="noise_scale"):
        PhaseSlipSampler(tiny_llama.model, tiny_llama.tokenizer, noise_scale=-1.0)
