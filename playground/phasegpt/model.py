"""A character-level GPT (nanoGPT's shape) whose attention, in one block, may be Kuramoto oscillators.

    x -> token + position embedding -> blocks -> LayerNorm -> logits (tied to the token embedding)
    block:  x + mix(LN(x)), then x + MLP(LN(x)); mix is causal self-attention, or ``PhaseCoupling``
            in the block at about 58% depth (PhaseGPT's layer 7 of 12).

The phase-coupled layer, per head h and oscillator n, with theta [B, H, L, N]:
    theta0 = pi tanh(W_phase x)
    theta <- theta + dt (omega_hn + K_h Im(z e^{-i theta})),   10 Euler steps of dt 0.1
    out = W_out wrap(theta)
z is the mean of e^{i theta} over the positions this position couples with (same head and oscillator):
    public  all L positions, later ones included, and K replaced by -K: PhaseGPT's published layer,
            whose pairwise sum (1/L) sum_s sin(theta_t - theta_s) is repulsive for K > 0;
    fixed   positions s <= t (causal prefix mean field), attractive sign.
omega_hn and K_h are learned (initial N(0, 0.1) and K), as in the published layer.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import kuramoto
from ..errors import PlaygroundError, require
from ..kuramoto import CouplingSettings, RunningMeanField

PHASE_MODES = ("public", "fixed")


@dataclass
class ModelConfig:
    """The GPT's shape; ``phase_mode`` None is the baseline (attention in every block)."""

    vocab_size: int
    block_size: int = 128
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 128
    phase_mode: str | None = None
    phase_layer: int | None = None  # None: kuramoto.default_probe_layer(n_layer)
    coupling: CouplingSettings = field(default_factory=CouplingSettings)

    def __post_init__(self) -> None:
        if isinstance(self.coupling, dict):
            self.coupling = CouplingSettings(**self.coupling)
        require(self.vocab_size >= 1 and self.block_size >= 1, "vocab_size and block_size must be >= 1")
        require(self.n_layer >= 1 and self.n_head >= 1, "n_layer and n_head must be >= 1")
        require(self.n_embd % self.n_head == 0, f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        require(self.phase_mode in (None, *PHASE_MODES),
                f"phase_mode must be one of {', '.join(PHASE_MODES)} or none, got {self.phase_mode!r}")
        if self.phase_layer is None:
            self.phase_layer = kuramoto.default_probe_layer(self.n_layer)
        require(0 <= self.phase_layer < self.n_layer, f"phase_layer must be in 0..{self.n_layer - 1}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelOutput:
    """Logits [B, L, V]; the phase layer's final phases [B, H, L, N] (None for the baseline)."""

    logits: torch.Tensor
    phases: torch.Tensor | None = None


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           with_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal attention of the L newest queries [B, H, L, D] over T >= L keys and values, the last L of which
    are theirs: query i sees keys 0..T-L+i. Returns the output and, if asked, the weights [B, H, L, T]."""
    L, T = q.shape[2], k.shape[2]
    visible = torch.ones(L, T, dtype=torch.bool, device=q.device).tril(T - L)
    if not with_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=visible), None
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
    return weights @ v, weights


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        return tuple(t.view(B, L, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, L, D = y.shape
        return self.proj(y.transpose(1, 2).reshape(B, L, H * D))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        q, k, v = self.heads(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)), None

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None):
        """One new position x [B, 1, C] given the keys and values of the earlier ones."""
        q, k, v = self.heads(x)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        return self.merge(F.scaled_dot_product_attention(q, k, v)), (k, v)


class PhaseCoupling(nn.Module):
    """Kuramoto oscillators in place of attention: H heads of N oscillators per position."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        s = config.coupling
        self.mode, self.settings = config.phase_mode, s
        self.n_head, self.n_osc = config.n_head, s.n_oscillators
        self.to_phase = nn.Linear(config.n_embd, self.n_head * self.n_osc)
        self.from_phase = nn.Linear(self.n_head * self.n_osc, config.n_embd)
        self.natural_frequency = nn.Parameter(torch.randn(self.n_head, self.n_osc) * 0.1)
        self.coupling = nn.Parameter(torch.full((self.n_head,), float(s.coupling)))

    @property
    def causal(self) -> bool:
        return self.mode == "fixed"

    def signed_coupling(self) -> torch.Tensor:
        """K_h per head, [H, 1, 1]; negated for the public layer (its sin(theta_t - theta_s) is repulsive)."""
        sign = 1.0 if self.causal else -1.0
        return sign * self.coupling.view(self.n_head, 1, 1)

    def frequencies(self) -> torch.Tensor:
        """omega [H, N]; in training, jittered multiplicatively by frequency_jitter (a fresh draw each call)."""
        omega = self.natural_frequency
        if self.training and self.settings.frequency_jitter > 0:
            omega = kuramoto.jitter_frequencies(omega, self.settings.frequency_jitter)
        return omega

    def initial_phases(self, x: torch.Tensor) -> torch.Tensor:
        """theta0 = pi tanh(W_phase x), as [B, H, L, N]."""
        B, L, _ = x.shape
        return (math.pi * torch.tanh(self.to_phase(x))).view(B, L, self.n_head, self.n_osc).transpose(1, 2)

    def read_out(self, phases: torch.Tensor) -> torch.Tensor:
        """W_out of the wrapped phases [B, H, L, N] -> [B, L, C]."""
        B, H, L, N = phases.shape
        return self.from_phase(kuramoto.wrap_phases(phases).transpose(1, 2).reshape(B, L, H * N))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.settings
        noise = s.noise_sigma if self.training else 0.0  # phase noise is a training-time control, like dropout
        phases = kuramoto.sequence_kuramoto(self.initial_phases(x), self.frequencies().unsqueeze(1),
                                            self.signed_coupling(), s.dt, s.steps, causal=self.causal,
                                            share_oscillators=False, noise_sigma=noise)
        return self.read_out(phases), phases

    def extend(self, x: torch.Tensor, running: RunningMeanField | None):
        """New positions x [B, L, C] after those ``running`` has summed (fixed mode only): the output [B, L, C],
        the final phases [B, H, L, N] and, per integration level, the running sums after each new position
        (cos, sin [steps + 1, B, H, L, N])."""
        if not self.causal:
            raise PlaygroundError("the public phase layer couples each position with the later ones, so it cannot "
                                  "decode one position at a time; use phase_mode 'fixed'")
        s = self.settings
        phases, cos, sin = kuramoto.causal_kuramoto_extend(
            self.initial_phases(x), self.natural_frequency.unsqueeze(1), self.signed_coupling(), s.dt, s.steps,
            running, share_oscillators=False)
        return self.read_out(phases), phases, cos, sin

    def step(self, x: torch.Tensor, running: RunningMeanField | None):
        """One new position x [B, 1, C] from the running sums of the earlier ones (fixed mode only)."""
        mixed, phases, cos, sin = self.extend(x, running)
        seen = running.count if running is not None else 0
        return mixed, RunningMeanField(cos[..., -1, :], sin[..., -1, :], seen + 1), phases

    def token_order_parameter(self, phases: torch.Tensor) -> torch.Tensor:
        """R per token [B, L]: the order parameter of all H N phases at that position (one circular mean)."""
        B, H, L, N = phases.shape
        return kuramoto.order_parameter(phases.transpose(1, 2).reshape(B, L, H * N), dim=-1)[0]

    def coupled_order_parameter(self, phases: torch.Tensor) -> torch.Tensor:
        """R of the field each oscillator is coupled to, |z|, averaged over the H N oscillators: [B, L]."""
        c, s = kuramoto.sequence_mean_field(phases, self.causal, share_oscillators=False)
        return torch.sqrt(c * c + s * s).clamp(0.0, 1.0).mean(dim=(1, 3))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, phase: bool) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.mix = PhaseCoupling(config) if phase else CausalSelfAttention(config)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mixed, phases = self.mix(self.ln_1(x))
        return self.feed_forward(x + mixed), phases

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's second half, after its mix was added to x."""
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, state):
        if isinstance(self.mix, PhaseCoupling):
            mixed, state, phases = self.mix.step(self.ln_1(x), state)
        else:
            (mixed, state), phases = self.mix.step(self.ln_1(x), state), None
        return self.feed_forward(x + mixed), state, phases


@dataclass
class DecodeState:
    """What step-by-step decoding keeps: per block its keys and values, or the phase layer's running sums."""

    layers: list[Any]
    position: int = 0


class CharGPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, config.phase_mode is not None and i == config.phase_layer)
                                    for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by 1/sqrt(2 n_layer)
            if name.endswith(("proj.weight", "from_phase.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def phase_layer(self) -> PhaseCoupling | None:
        mix = self.blocks[self.config.phase_layer].mix
        return mix if isinstance(mix, PhaseCoupling) else None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.ln_f(x), self.token_embedding.weight)

    def forward(self, ids: torch.Tensor) -> ModelOutput:
        """ids [B, L] (L <= block_size) -> logits for the next character at every position."""
        L = ids.shape[1]
        require(L <= self.config.block_size, f"at most {self.config.block_size} characters, got {L}")
        x = self.token_embedding(ids) + self.position_embedding(torch.arange(L, device=ids.device))
        phases = None
        for block in self.blocks:
            x, block_phases = block(x)
            phases = block_phases if block_phases is not None else phases
        return ModelOutput(self.logits(x), phases)

    def start(self) -> DecodeState:
        return DecodeState([None] * self.config.n_layer)

    def step(self, ids: torch.Tensor, state: DecodeState) -> tuple[ModelOutput, DecodeState]:
        """The next position's logits [B, 1, V] for ids [B] after the positions in ``state``; O(1) in their count
        for the phase layer (its running sums), O(position) for attention (its keys and values)."""
        require(state.position < self.config.block_size, f"at most {self.config.block_size} characters")
        x = self.token_embedding(ids[:, None]) + self.position_embedding.weight[state.position]
        layers, phases = [], None
        for block, cache in zip(self.blocks, state.layers):
            x, cache, block_phases = block.step(x, cache)
            layers.append(cache)
            phases = block_phases if block_phases is not None else phases
        return ModelOutput(self.logits(x), phases), DecodeState(layers, state.position + 1)
