"""Kuramoto: order parameter, attractive mean-field dynamics, causal form and its running sums, controls,
telemetry R."""
from __future__ import annotations

import math

import pytest
import torch

from playground import kuramoto
from playground.engine import ColumnSpec, Engine, RunOptions
from playground.samplers import SAMPLERS, SettingsError


def _random_phases(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 2 * math.pi


# ---- order parameter ----------------------------------------------------------------------------
def test_identical_phases_give_R_one_and_their_angle():
    R, psi = kuramoto.order_parameter(torch.full((16,), 0.7, dtype=torch.float64))
    assert float(R) == pytest.approx(1.0, abs=1e-12)
    assert float(psi) == pytest.approx(0.7, abs=1e-12)


def test_evenly_spread_phases_give_R_zero():
    for n in (2, 3, 7, 32):
        phases = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n + 0.3
        assert float(kuramoto.order_parameter(phases)[0]) < 1e-12


def test_random_phases_give_R_near_one_over_sqrt_n():
    n = 64
    R, _ = kuramoto.order_parameter(_random_phases(2000, n), dim=-1)
    assert abs(float(R.mean()) - 1 / math.sqrt(n)) < 3 / math.sqrt(n)
    # the exact mean for uniform phases is sqrt(pi / (4 N)) for large N: a tighter, independent check
    assert float(R.mean()) == pytest.approx(math.sqrt(math.pi / (4 * n)), rel=0.05)


def test_R_is_bounded_and_weights_are_respected():
    phases = torch.randn(500, 9, dtype=torch.float64) * 5
    weights = torch.rand(500, 9, dtype=torch.float64)
    for w in (None, weights):
        R, _ = kuramoto.order_parameter(phases, weights=w)
        assert bool(((R >= 0) & (R <= 1)).all())
    # a weight of zero removes an oscillator: two opposite phases, one weighted out -> R = 1
    R, _ = kuramoto.order_parameter(torch.tensor([0.0, math.pi]), weights=torch.tensor([1.0, 0.0]))
    assert float(R) == pytest.approx(1.0)


# ---- dynamics -------------------------------------------------------------------------------------
def test_mean_field_step_equals_pairwise_sum():
    theta = _random_phases(3, 50, seed=1)
    omega = torch.randn(3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    K, dt = 1.3, 0.1
    pairwise = torch.sin(theta.unsqueeze(-2) - theta.unsqueeze(-1)).mean(-1)  # (1/N) sum_j sin(theta_j - theta_i)
    expected = theta + dt * (omega + K * pairwise)
    assert torch.allclose(kuramoto.kuramoto_step(theta, omega, K, dt), expected, atol=1e-6, rtol=0)


def _sync_run(K: float) -> float:
    n = 32
    theta = _random_phases(n, seed=3)
    omega = torch.linspace(-0.05, 0.05, n, dtype=torch.float64)  # spread 0.1
    return float(kuramoto.order_parameter(kuramoto.integrate(theta, omega, K, dt=0.1, steps=500))[0])


def test_positive_coupling_synchronises():
    assert float(kuramoto.order_parameter(_random_phases(32, seed=3))[0]) < 0.5
    assert _sync_run(1.0) > 0.9


def test_negative_coupling_does_not_synchronise():
    assert _sync_run(-1.0) < 0.3


def test_causal_version_ignores_later_positions():
    L, N, t = 12, 8, 5
    theta = _random_phases(2, L, N, seed=4)
    omega = torch.randn(N, dtype=torch.float64)
    changed = theta.clone()
    changed[:, t + 1:] = _random_phases(2, L - t - 1, N, seed=5)
    for share in (True, False):
        a = kuramoto.causal_kuramoto(theta, omega, 1.0, 0.1, 10, share_oscillators=share)
        b = kuramoto.causal_kuramoto(changed, omega, 1.0, 0.1, 10, share_oscillators=share)
        assert torch.equal(a[:, : t + 1], b[:, : t + 1])
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_causal_mean_field_is_the_prefix_mean():
    theta = _random_phases(6, 4, seed=6)
    c, s = kuramoto.causal_mean_field(theta)
    for t in range(6):
        R, psi = kuramoto.order_parameter(theta[: t + 1].flatten())
        assert float(c[t, 0]) == pytest.approx(float(R * torch.cos(psi)), abs=1e-12)
        assert float(s[t, 0]) == pytest.approx(float(R * torch.sin(psi)), abs=1e-12)


def test_causal_version_synchronises_a_sequence_for_positive_coupling():
    theta = _random_phases(16, 32, seed=7)
    out = kuramoto.causal_kuramoto(theta, torch.zeros(32, dtype=torch.float64), 1.0, 0.1, 300)
    assert float(kuramoto.order_parameter(out[-1])[0]) > 0.9


def test_running_sums_continue_the_causal_integration_one_position_at_a_time():
    L, N, steps = 9, 5, 10
    theta = _random_phases(2, L, N, seed=10)
    omega = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    for share in (True, False):
        full = kuramoto.causal_kuramoto(theta, omega, 0.8, 0.1, steps, share_oscillators=share)
        running = kuramoto.RunningMeanField.empty(steps, (2, 1 if share else N), torch.float64)
        for t in range(L):
            out, running = kuramoto.causal_kuramoto_next(theta[:, t], omega, 0.8, 0.1, steps, running, share)
            assert torch.allclose(out, full[:, t], atol=1e-12, rtol=0)
        c, s = kuramoto.causal_mean_field(full, share)  # the last level is the final phases' prefix field
        assert running.count == L
        assert torch.allclose(running.field(steps)[0], c[:, -1], atol=1e-12)
        assert torch.allclose(running.field(steps)[1], s[:, -1], atol=1e-12)


def test_the_whole_sequence_field_is_the_mean_over_every_position_at_every_position():
    theta = _random_phases(7, 3, seed=12)
    c, s = kuramoto.sequence_mean_field(theta, causal=False, share_oscillators=False)
    assert c.shape == (7, 3)
    assert torch.allclose(c, torch.cos(theta).mean(0).expand(7, 3))
    assert torch.allclose(s, torch.sin(theta).mean(0).expand(7, 3))
    # causal: the last position sees everything, the first only itself
    cc, _ = kuramoto.sequence_mean_field(theta, causal=True, share_oscillators=False)
    assert torch.allclose(cc[-1], c[-1]) and torch.allclose(cc[0], torch.cos(theta[0]))


def test_wrapped_phases_are_in_minus_pi_to_pi_and_the_same_angles():
    theta = torch.linspace(-20, 20, 101, dtype=torch.float64)
    wrapped = kuramoto.wrap_phases(theta)
    assert bool(((wrapped >= -math.pi) & (wrapped < math.pi)).all())
    assert torch.allclose(torch.cos(wrapped), torch.cos(theta)) and torch.allclose(torch.sin(wrapped), torch.sin(theta))


# ---- anti-over-synchronisation controls -----------------------------------------------------------
def test_phase_noise_and_jitter_are_seeded_and_reproducible():
    theta, omega = torch.zeros(100, dtype=torch.float64), torch.ones(100, dtype=torch.float64)
    noisy = [kuramoto.add_phase_noise(theta, 0.03, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    jittered = [kuramoto.jitter_frequencies(omega, 0.02, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    for a, b, c in (noisy, jittered):
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((noisy[0] - theta).std()) == pytest.approx(0.03, rel=0.25)
    assert float((jittered[0] / omega - 1).std()) == pytest.approx(0.02, rel=0.25)
    # seeded noise inside the integration is reproducible too
    run = [kuramoto.integrate(_random_phases(32), omega[:32], 1.0, 0.1, 20, noise_sigma=0.03,
                              generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(run[0], run[1])


@pytest.mark.parametrize("mode, inside, outside", [
    ("ceiling", [0.0, 0.3, 0.45], [0.5, 0.9]),
    ("centre", [0.45], [0.44, 0.6]),
    ("band", [0.36, 0.45, 0.54], [0.3, 0.6, 0.9]),
])
def test_regulariser_is_zero_inside_its_band_and_positive_outside(mode, inside, outside):
    for r in inside:
        assert float(kuramoto.coherence_regulariser(torch.tensor([r], dtype=torch.float64), 0.45, mode, 0.1)) == 0.0
    for r in outside:
        assert float(kuramoto.coherence_regulariser(torch.tensor([r], dtype=torch.float64), 0.45, mode, 0.1)) > 0.0


def test_bad_settings_are_refused_by_name():
    with pytest.raises(SettingsError, match="mode"):
        kuramoto.coherence_regulariser(torch.tensor([0.5]), mode="floor")
    with pytest.raises(SettingsError, match="dt"):
        kuramoto.integrate(torch.zeros(3), torch.zeros(3), 1.0, dt=-0.1, steps=3)
    with pytest.raises(SettingsError, match="noise_sigma"):
        kuramoto.add_phase_noise(torch.zeros(3), -1.0)
    with pytest.raises(SettingsError, match="regulariser_mode"):
        kuramoto.CouplingSettings(regulariser_mode="x")


# ---- the per-token read-out from attention ---------------------------------------------------------
def test_attention_phase_is_the_first_circular_moment():
    n = 9
    one_hot = torch.eye(n).unsqueeze(0)  # layer 0: head h attends only to position h
    phases = kuramoto.attention_phases(one_hot)
    expected = torch.remainder(torch.arange(n) * 2 * math.pi / n + math.pi, 2 * math.pi) - math.pi
    assert torch.allclose(phases[0], expected, atol=1e-5)
    # heads spread evenly over the circle -> R = 0; all heads on one position -> R = 1
    same = torch.zeros(1, n, n)
    same[..., 4] = 1.0
    R = kuramoto.attention_order_parameter(torch.cat([one_hot, same]))
    assert float(R[0]) < 1e-5 and float(R[1]) == pytest.approx(1.0, abs=1e-6)


def test_default_probe_layer_is_at_seven_twelfths_depth():
    assert kuramoto.default_probe_layer(12) == 7
    assert kuramoto.default_probe_layer(30) == 17
    assert kuramoto.default_probe_layer(1) == 0


def _all_sampler_specs() -> list[ColumnSpec]:
    """Every registered sampler with its defaults, sized for the 4-layer tiny model where a setting needs it."""
    tiny = {"calibrate": False, "search_layers": 2}  # Phase-Slip: no calibration, heads of the last 2 layers
    specs = []
    for name, cls in SAMPLERS.items():
        fields = getattr(cls.Settings, "__dataclass_fields__", {})
        specs.append(ColumnSpec(name, {k: v for k, v in tiny.items() if k in fields}))
    return specs


def _r_per_column(run) -> list[list[float]]:
    return [[row.order_parameter for row in col.rows] for col in run.columns]


def test_telemetry_R_is_bounded_and_reproducible_for_every_sampler(tiny_llama):
    engine = Engine(tiny_llama)
    specs = _all_sampler_specs()
    options = RunOptions(seed=7, max_new_tokens=12)
    first, second = engine.run("Once upon a time", specs, options), engine.run("Once upon a time", specs, options)
    assert [c.sampler_name for c in first.columns] == list(SAMPLERS)
    assert first.options.probe_layer == kuramoto.default_probe_layer(tiny_llama.n_layers)
    for col in first.columns:
        assert col.rows, col.label
        for row in col.rows:
            assert 0.0 <= row.order_parameter <= 1.0, (col.label, row.step)
            assert len(row.order_parameter_layers) == tiny_llama.n_layers
            assert all(0.0 <= r <= 1.0 for r in row.order_parameter_layers)
            assert row.order_parameter == row.order_parameter_layers[first.options.probe_layer]
    assert _r_per_column(first) == _r_per_column(second)


def test_telemetry_R_is_the_read_out_of_the_models_own_attention(tiny_llama):
    """Recompute R from one full forward over prompt + generated tokens: position t-1's row picks token t."""
    run = Engine(tiny_llama).run("The ancient door creaked open", ["greedy"],
                                 RunOptions(max_new_tokens=6, probe_layer=1))
    col = run.columns[0]
    ids = torch.tensor([run.prompt_ids + col.tokens[:-1]])
    with torch.inference_mode():
        attn = torch.stack(tiny_llama.model(ids, output_attentions=True).attentions, 1)[0]  # [layers, heads, q, k]
    n_prompt = len(run.prompt_ids)
    for row in col.rows:
        q = n_prompt - 1 + row.step
        expected = kuramoto.attention_order_parameter(attn[:, :, q, : q + 1])
        assert row.order_parameter_layers == pytest.approx(expected.tolist(), abs=1e-4)
        assert row.order_parameter == row.order_parameter_layers[1]


def test_recording_can_be_turned_off(tiny_llama):
    run = Engine(tiny_llama).run("Once upon a time", ["greedy"],
                                 RunOptions(max_new_tokens=3, record_order_parameter=False))
    assert all(r.order_parameter is None and r.order_parameter_layers is None for r in run.columns[0].rows)


def test_real_model_R_is_bounded_and_reproducible(real_lm):
    specs = [ColumnSpec("greedy"), ColumnSpec("temperature", {"temperature": 1.0, "top_k": 0, "top_p": 1.0})]
    options = RunOptions(seed=3, max_new_tokens=6)
    first = Engine(real_lm).run("Once upon a time", specs, options)
    second = Engine(real_lm).run("Once upon a time", specs, options)
    assert first.options.probe_layer == 17
    assert _r_per_column(first) == _r_per_column(second)
    for col in first.columns:
        assert len(col.rows) == 6
        assert all(0.0 <= r <= 1.0 for r in _r_per_column(first)[first.columns.index(col)])
        assert all(len(r.order_parameter_layers) == 30 for r in col.rows)


# ---- the report's statistics ----------------------------------------------------------------------
def test_mann_whitney_auc():
    from playground.kuramoto_report import mann_whitney_auc

    assert mann_whitney_auc([3, 4], [1, 2]) == 1.0
    assert mann_whitney_auc([1, 2], [3, 4]) == 0.0
    assert mann_whitney_auc([1, 3], [2, 2]) == 0.5
    assert mann_whitney_auc([2], [2]) == 0.5  # ties count half
    assert mann_whitney_auc([1, 2, 5], [0, 3]) == pytest.approx(4 / 6)


def test_report_command_is_registered():
    from playground.cli import build_parser

    args = build_parser().parse_args(["kuramoto-report", "--json", "--tokens", "5", "--probe-layer", "3"])
    assert (args.json, args.tokens, args.probe_layer) == (True, 5, 3)
