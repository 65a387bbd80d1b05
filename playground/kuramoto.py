"""Kuramoto oscillators: order parameter, attractive mean-field coupling, the sequence forms (causal
prefix mean field, its step-by-step running sums, and the whole-sequence form), anti-over-synchronisation
controls, and the per-token read-out from a model's attention.

Model:  d theta_i/dt = omega_i + (K/N) sum_j sin(theta_j - theta_i).
Order parameter:  R e^{i psi} = sum_j w_j e^{i theta_j} / sum_j w_j   (w = 1: the plain mean).
R = 1 when all phases agree, ~1/sqrt(N) for random phases, 0 for phases spread evenly.
Mean-field identity:  (1/N) sum_j sin(theta_j - theta_i) = R sin(psi - theta_i) = Im(z e^{-i theta_i}),
with z = R e^{i psi}; so one coupling step costs O(N), and K > 0 pulls every phase toward psi.

PhaseGPT's public layer had the sign reversed (sin(theta_i - theta_j): repulsive for K > 0) and
coupled every position with every other (no causal mask, O(L^2 N)); ``causal_kuramoto`` fixes both.
``sequence_kuramoto(causal=False)`` with coupling -K is the published layer's dynamics in O(L N).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import require

Coupling = float | torch.Tensor  # K, or per-group strengths that broadcast against the phases

REGULARISER_MODES = ("ceiling", "centre", "band")


# ---- order parameter and coupling -------------------------------------------------------------
def order_parameter(phases: torch.Tensor, dim: int = -1,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, psi) of the phases along ``dim``: R e^{i psi} = sum_j w_j e^{i theta_j} / sum_j w_j.

    Without weights it is the plain mean. R is clamped to [0, 1] against rounding.
    """
    cos, sin = torch.cos(phases), torch.sin(phases)
    if weights is None:
        c, s = cos.mean(dim), sin.mean(dim)
    else:
        total = weights.sum(dim).clamp_min(torch.finfo(cos.dtype).tiny)
        c, s = (weights * cos).sum(dim) / total, (weights * sin).sum(dim) / total
    return torch.sqrt(c * c + s * s).clamp(0.0, 1.0), torch.atan2(s, c)


def mean_field_drive(phases: torch.Tensor, field_cos: torch.Tensor, field_sin: torch.Tensor) -> torch.Tensor:
    """R sin(psi - theta_i) = Im(z e^{-i theta_i}) = s cos(theta_i) - c sin(theta_i), z = c + i s."""
    return field_sin * torch.cos(phases) - field_cos * torch.sin(phases)


def kuramoto_step(phases: torch.Tensor, omega: torch.Tensor, coupling: float, dt: float) -> torch.Tensor:
    """One Euler step over the last dim (the N oscillators), mean-field form, O(N):

    theta_i <- theta_i + dt (omega_i + K R sin(psi - theta_i)),   R e^{i psi} = mean_j e^{i theta_j}.
    Attractive for K > 0 (phases move toward psi), repulsive for K < 0.
    """
    c, s = torch.cos(phases).mean(-1, keepdim=True), torch.sin(phases).mean(-1, keepdim=True)
    return phases + dt * (omega + coupling * mean_field_drive(phases, c, s))


def integrate(phases: torch.Tensor, omega: torch.Tensor, coupling: float, dt: float, steps: int,
              noise_sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """``steps`` Euler(-Maruyama) steps of ``kuramoto_step``; optional phase noise per step:

    theta <- kuramoto_step(theta) + noise_sigma sqrt(dt) xi,   xi ~ N(0, 1) from ``generator``.
    """
    return _evolve(phases, lambda p: kuramoto_step(p, omega, coupling, dt), dt, steps, noise_sigma, generator)


def causal_mean_field(phases: torch.Tensor, share_oscillators: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix mean field of phases [..., L, N]: position t sees positions s <= t only.

    share_oscillators:  z_t   = (1 / ((t+1) N)) sum_{s<=t} sum_j e^{i theta_sj}   -> [..., L, 1]
    otherwise:          z_t,j = (1 / (t+1))     sum_{s<=t}       e^{i theta_sj}   -> [..., L, N]
    Returned as (Re z, Im z). A cumulative sum over L: O(L N) memory, never an L x L matrix.
    """
    return _field(torch.cos(phases), torch.sin(phases), True, share_oscillators)


def sequence_mean_field(phases: torch.Tensor, causal: bool = True,
                        share_oscillators: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The field each position of phases [..., L, N] is coupled to, as (Re z, Im z):

    causal:      the prefix mean over positions s <= t (``causal_mean_field``);
    not causal:  the mean over all L positions, the later ones included, the same for every t.
    """
    return _field(torch.cos(phases), torch.sin(phases), causal, share_oscillators)


def _field(cos: torch.Tensor, sin: torch.Tensor, causal: bool,
           share_oscillators: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``sequence_mean_field`` from the phases' cosines and sines [..., L, N]."""
    if share_oscillators:
        cos, sin = cos.mean(-1, keepdim=True), sin.mean(-1, keepdim=True)
    if causal:
        count = torch.arange(1, cos.shape[-2] + 1, dtype=cos.dtype, device=cos.device).unsqueeze(-1)
        return cos.cumsum(-2) / count, sin.cumsum(-2) / count
    c, s = cos.mean(-2, keepdim=True), sin.mean(-2, keepdim=True)
    return c.expand(cos.shape), s.expand(sin.shape)


def sequence_kuramoto(phases: torch.Tensor, omega: torch.Tensor, coupling: Coupling, dt: float, steps: int,
                      causal: bool = True, share_oscillators: bool = True, noise_sigma: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Kuramoto over a sequence, phases [..., L, N]:

    theta_ti <- theta_ti + dt (omega_i + K Im(z_t e^{-i theta_ti})),  z_t from ``sequence_mean_field``,
    repeated ``steps`` times (with optional phase noise as in ``integrate``). Causal: position t's result
    depends on the initial phases of positions <= t alone. Not causal with coupling -K: the pairwise form
    theta_ti <- theta_ti + dt (omega_i + (K/L) sum_s sin(theta_ti - theta_si)) over all L positions.
    """
    def step(p: torch.Tensor) -> torch.Tensor:
        cos, sin = torch.cos(p), torch.sin(p)  # once per step: the field and the drive share them
        c, s = _field(cos, sin, causal, share_oscillators)
        return p + dt * (omega + coupling * (s * cos - c * sin))

    return _evolve(phases, step, dt, steps, noise_sigma, generator)


def causal_kuramoto(phases: torch.Tensor, omega: torch.Tensor, coupling: Coupling, dt: float, steps: int,
                    share_oscillators: bool = True, noise_sigma: float = 0.0,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """``sequence_kuramoto`` with the causal prefix mean field: position t couples only to positions <= t."""
    return sequence_kuramoto(phases, omega, coupling, dt, steps, True, share_oscillators, noise_sigma, generator)


@dataclass
class RunningMeanField:
    """For each integration level k = 0..steps: sum over the positions seen so far of e^{i theta^(k)}.

    Enough to integrate one more position of ``causal_kuramoto`` in O(steps N), whatever the length.
    """

    cos: torch.Tensor  # [steps + 1, ..., N or 1]
    sin: torch.Tensor
    count: int = 0

    @classmethod
    def empty(cls, steps: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> RunningMeanField:
        """No position seen yet; ``shape`` is one position's phases [..., N] (or [..., 1] when shared)."""
        zeros = torch.zeros((steps + 1, *shape), dtype=dtype, device=device)
        return cls(zeros, zeros.clone(), 0)

    def field(self, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Re z, Im z) at ``level`` over the positions seen so far."""
        return self.cos[level] / self.count, self.sin[level] / self.count


def causal_kuramoto_extend(phases: torch.Tensor, omega: torch.Tensor, coupling: Coupling, dt: float, steps: int,
                           running: RunningMeanField | None = None,
                           share_oscillators: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L new positions' phases [..., L, N] through ``causal_kuramoto``, after the positions ``running`` has summed.

    At level k every new position adds e^{i theta^(k)} to the prefix sum, then steps with the prefix mean field
    (earlier positions and new ones up to it). Returns the final phases and, per level, the running sums after
    each new position: cos and sin [steps + 1, ..., L, N or 1]. ``running`` None (or empty): ``causal_kuramoto``.
    """
    _check_dynamics(dt, steps, 0.0)
    seen = running.count if running is not None else 0
    count = torch.arange(seen + 1, seen + phases.shape[-2] + 1, dtype=phases.dtype, device=phases.device).unsqueeze(-1)
    cos_levels, sin_levels = [], []
    for level in range(steps + 1):
        cos, sin = torch.cos(phases), torch.sin(phases)
        c, s = (cos.mean(-1, keepdim=True), sin.mean(-1, keepdim=True)) if share_oscillators else (cos, sin)
        c, s = c.cumsum(-2), s.cumsum(-2)
        if seen:
            c, s = c + running.cos[level].unsqueeze(-2), s + running.sin[level].unsqueeze(-2)
        cos_levels.append(c)
        sin_levels.append(s)
        if level < steps:
            phases = phases + dt * (omega + coupling * ((s / count) * cos - (c / count) * sin))
    return phases, torch.stack(cos_levels), torch.stack(sin_levels)


def causal_kuramoto_next(phases: torch.Tensor, omega: torch.Tensor, coupling: Coupling, dt: float, steps: int,
                         running: RunningMeanField,
                         share_oscillators: bool = True) -> tuple[torch.Tensor, RunningMeanField]:
    """One new position's phases [..., N] through ``causal_kuramoto``, given the earlier positions' sums.

    Returns its final phases and the sums with it included (the input ``running`` is not changed).
    """
    phases, cos, sin = causal_kuramoto_extend(phases.unsqueeze(-2), omega, coupling, dt, steps, running,
                                              share_oscillators)
    return phases.squeeze(-2), RunningMeanField(cos[..., -1, :], sin[..., -1, :], running.count + 1)


def wrap_phases(phases: torch.Tensor) -> torch.Tensor:
    """Phases folded into [-pi, pi)."""
    return torch.remainder(phases + math.pi, 2.0 * math.pi) - math.pi


def _evolve(phases: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor], dt: float, steps: int,
            noise_sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    """``steps`` times: phases <- step(phases), then phase noise noise_sigma sqrt(dt) xi if noise_sigma > 0."""
    _check_dynamics(dt, steps, noise_sigma)
    for _ in range(steps):
        phases = step(phases)
        if noise_sigma > 0:
            phases = add_phase_noise(phases, noise_sigma * math.sqrt(dt), generator)
    return phases


# ---- anti-over-synchronisation controls ----------------------------------------------------------
def add_phase_noise(phases: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """theta + sigma xi, xi ~ N(0, 1) drawn from ``generator`` (seeded: reproducible)."""
    require(sigma >= 0 and math.isfinite(sigma), f"noise_sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return phases
    noise = torch.randn(phases.shape, generator=generator, dtype=phases.dtype, device=phases.device)
    return phases + sigma * noise


def jitter_frequencies(omega: torch.Tensor, jitter: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative frequency jitter: omega_i (1 + jitter xi_i), xi ~ N(0, 1) from ``generator``."""
    require(jitter >= 0 and math.isfinite(jitter), f"frequency_jitter must be a finite number >= 0, got {jitter}")
    noise = torch.randn(omega.shape, generator=generator, dtype=omega.dtype, device=omega.device)
    return omega * (1.0 + jitter * noise)


def coherence_regulariser(R: torch.Tensor, target: float = 0.45, mode: str = "band",
                          band: float = 0.1) -> torch.Tensor:
    """Penalty on R (mean over its elements), zero inside the allowed region, quadratic outside:

    ceiling:  max(0, R - target)^2                (allowed: R <= target)
    centre:   (R - target)^2                       (allowed: R = target)
    band:     max(0, |R - target| - band)^2        (allowed: |R - target| <= band)
    """
    require(mode in REGULARISER_MODES, f"regulariser mode must be one of {', '.join(REGULARISER_MODES)}, got {mode!r}")
    require(0.0 <= target <= 1.0, f"regulariser target must be in [0, 1], got {target}")
    require(band >= 0.0, f"regulariser band must be >= 0, got {band}")
    if mode == "ceiling":
        excess = (R - target).clamp_min(0.0)
    elif mode == "centre":
        excess = R - target
    else:
        excess = ((R - target).abs() - band).clamp_min(0.0)
    return (excess * excess).mean()


@dataclass
class CouplingSettings:
    """A phase-coupled layer's oscillators: PhaseGPT's winning N, K, dt and steps; controls off by default.

    The controls as PhaseGPT proposed them: noise_sigma 0.03, frequency_jitter 0.02, and the coherence
    regulariser (weight > 0) on R with target 0.45 in one of ``REGULARISER_MODES``.
    """

    n_oscillators: int = 32
    coupling: float = 1.0  # K; K = 2 collapsed in PhaseGPT's training
    dt: float = 0.1
    steps: int = 10
    noise_sigma: float = 0.0
    frequency_jitter: float = 0.0
    regulariser_weight: float = 0.0
    target_R: float = 0.45
    regulariser_mode: str = "ceiling"
    band: float = 0.1

    def __post_init__(self) -> None:
        require(isinstance(self.n_oscillators, int) and self.n_oscillators >= 1,
                f"n_oscillators must be an integer >= 1, got {self.n_oscillators}")
        require(math.isfinite(self.coupling), f"coupling must be finite, got {self.coupling}")
        _check_dynamics(self.dt, self.steps, self.noise_sigma)
        require(self.frequency_jitter >= 0, f"frequency_jitter must be >= 0, got {self.frequency_jitter}")
        require(self.regulariser_weight >= 0, f"regulariser_weight must be >= 0, got {self.regulariser_weight}")
        require(0.0 <= self.target_R <= 1.0, f"target_R must be in [0, 1], got {self.target_R}")
        require(self.regulariser_mode in REGULARISER_MODES,
                f"regulariser_mode must be one of {', '.join(REGULARISER_MODES)}, got {self.regulariser_mode!r}")
        require(self.band >= 0.0, f"band must be >= 0, got {self.band}")


def _check_dynamics(dt: float, steps: int, noise_sigma: float) -> None:
    require(0.0 < dt <= 1.0, f"dt must be in (0, 1], got {dt}")
    require(isinstance(steps, int) and 0 <= steps <= 10_000, f"steps must be an integer in 0..10000, got {steps}")
    require(noise_sigma >= 0 and math.isfinite(noise_sigma), f"noise_sigma must be a finite number >= 0, got {noise_sigma}")


# ---- the per-token read-out from attention -------------------------------------------------------
def attention_phases(attn: torch.Tensor) -> torch.Tensor:
    """Each head's phase: the angle of the first circular moment of its attention row.

    theta_h = arg sum_j a_hj exp(i 2 pi j / n), over the n positions that exist (j = 0..n-1).
    """
    n = attn.shape[-1]
    angles = torch.arange(n, dtype=attn.dtype, device=attn.device) * (2.0 * math.pi / n)
    return torch.atan2((attn * torch.sin(angles)).sum(-1), (attn * torch.cos(angles)).sum(-1))


def attention_order_parameter(attn: torch.Tensor) -> torch.Tensor:
    """R over heads per layer: attn is [layers, heads, n] (newest query's rows) -> [layers]."""
    return order_parameter(attention_phases(attn.float()), dim=-1)[0]


def default_probe_layer(n_layers: int) -> int:
    """PhaseGPT's layer 7 of 12: about 58% depth (index 17 of 30 for the default model)."""
    return min(n_layers - 1, int(n_layers * 7 / 12))


__all__ = ["CouplingSettings", "RunningMeanField", "add_phase_noise", "attention_order_parameter",
           "attention_phases", "causal_kuramoto", "causal_kuramoto_extend", "causal_kuramoto_next", "causal_mean_field",
           "coherence_regulariser",
           "default_probe_layer", "integrate", "jitter_frequencies", "kuramoto_step", "mean_field_drive",
           "order_parameter", "sequence_kuramoto", "sequence_mean_field", "wrap_phases"]
