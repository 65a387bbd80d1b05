"""Phase-Slip: rotate the Value vectors of a copy of the KV cache, fuse its logits with the clean ones.

Per generated token:

    side row  = copy of the clean cache; for the eligible (layer, KV head) pairs only, the Value
                vectors of the last W generated positions are rotated by the angle phi
    one batched forward feeds the newest token to the clean row AND the side row
    H         = entropy (nats) of softmax(clean / T)
    alpha     = alpha0 + (1 - alpha0) * sigmoid(2.5 - H)
    fused     = alpha * clean + (1 - alpha) * perturbed
    token     ~ temperature T, top-k, top-p of fused

The engine owns the side row (copies it from the clean row before each step, discards its
outputs after); this module owns the rotation, the fusion and the choice of eligible heads.
The rotation noise comes from the sampler's own generator (seeded with the run seed), so the
column's draws are the temperature sampler's draws: with noise_scale = 0 the tokens are the same.

Angle. The public code blends each Value vector with Gaussian noise, ``(1-eps) v + eps |v| g``
with ``g ~ N(0, I_d)`` (so ``|g| ~ sqrt(d)``), renormalises, then mixes the result into ``v``
with the weight beta = 0.15. The first blend turns ``v`` by ``atan(eps sqrt(d) / (1 - eps))``;
the beta-mix keeps about beta of that angle. The playground rotates exactly by that effective
angle, ``phi = beta * atan2(eps * sqrt(d), 1 - eps)``, so noise_scale means what it meant there
(default eps 0.03 with d = 64: phi = 0.0364 rad = 2.08 degrees), but as a true rotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..calibration import Head, calibrate_heads, last_layers_heads
from ..rotation import kl_divergence, rotate_toward
from .base import Decision, RunContext, Sampler, SettingsError, Stage, StepView, require, setting
from .temperature import TOP_K_HELP, TOP_P_HELP, ChainSettings, check_sampling_params, sample_decision

BLEND_BETA = 0.15  # the public code's blend weight: the share of the noise angle that survives
ENTROPY_PIVOT = 2.5  # nats; alpha = alpha0 + (1 - alpha0) * sigmoid(ENTROPY_PIVOT - H)


# ---------------------------------------------------------------------------------------
# Pure functions


def rotation_angle(noise_scale: float, head_dim: int, beta: float = BLEND_BETA) -> float:
    """phi = beta * atan2(eps * sqrt(d), 1 - eps): the public code's effective angle, in radians.

    eps = 0 gives 0 (no rotation); eps = 1 gives beta * pi / 2; monotone in eps.
    """
    return beta * math.atan2(noise_scale * math.sqrt(head_dim), 1.0 - noise_scale)


def tempered_log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) in float32 (a hot path, once per step); T = 0 (greedy) reads as T = 1."""
    return torch.log_softmax(logits.float() / (temperature if temperature > 0 else 1.0), dim=-1)


def entropy_nats(log_p: torch.Tensor) -> float:
    """H = -sum p log p in nats, from the log-probabilities ``log_p`` [V]."""
    return float(-(log_p.exp() * log_p).sum())


def fusion_alpha(entropy: float, alpha0: float) -> float:
    """alpha = alpha0 + (1 - alpha0) * sigmoid(2.5 - H): near 1 when confident, toward alpha0 when not."""
    x = ENTROPY_PIVOT - entropy
    sigmoid = 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))  # no overflow
    return min(1.0, max(alpha0, alpha0 + (1.0 - alpha0) * sigmoid))  # clamp: rounding only


def fuse_logits(clean: torch.Tensor, perturbed: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * clean + (1 - alpha) * perturbed, written as clean + (1 - alpha)(perturbed - clean).

    The two forms are equal; this one returns ``clean`` bit for bit when perturbed == clean.
    """
    return clean + (1.0 - alpha) * (perturbed - clean)


def format_heads(heads: list[Head]) -> str:
    """[(27, 1), (28, 0)] -> '27.1,28.0' (the ``heads`` setting and telemetry format)."""
    return ",".join(f"{layer}.{head}" for layer, head in heads)


def parse_heads(text: str, key: str = "phase_slip.heads") -> list[Head]:
    """'27.1,28.0' -> [(27, 1), (28, 0)]; a clear SettingsError on anything else."""
    heads: list[Head] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        layer, dot, head = item.partition(".")
        if not dot or not layer.strip().isdigit() or not head.strip().isdigit():
            raise SettingsError(f"{key} must list LAYER.KV_HEAD pairs like '27.1,28.0', got {text!r}")
        pair = (int(layer), int(head))
        if pair not in heads:
            heads.append(pair)
    return sorted(heads)


# ---------------------------------------------------------------------------------------
# Settings and the engine's sampler


@dataclass
class PhaseSlipCore:
    """Defaults are the public version's; ``heads`` (e.g. '27.1,28.0') overrides calibration."""

    noise_scale: float = setting(0.03, "ε, the weight of the noise in the public blend; sets the rotation angle "
                                       "of the Value vectors (0 = no perturbation)")
    logit_fusion_alpha: float = setting(0.45, "α0, the least weight of the clean logits in the fusion "
                                              "(1 = clean logits only)")
    perturbation_window: int = setting(12, "how many of the newest generated positions are rotated (0 = none)")
    temperature: float = setting(0.65, "divide the fused logits by T before top-k and top-p (0 = greedy)")
    top_k: int = setting(40, TOP_K_HELP)
    top_p: float = setting(0.92, TOP_P_HELP)
    calibrate: bool = setting(True, "choose the perturbed heads by calibration (off: every KV head of the last "
                                    "search_layers layers)")
    search_layers: int = setting(6, "calibration searches the KV heads of this many last layers")
    n_heads: int = setting(3, "how many heads calibration keeps")
    heads: str = setting("", "explicit LAYER.KV_HEAD list, e.g. '27.1,28.0', instead of calibration (empty = off)")


@dataclass
class PhaseSlipSettings(ChainSettings, PhaseSlipCore):
    """Phase-Slip's settings, then the temperature chain's other members (all off by default)."""

    def __post_init__(self):
        p = "phase_slip."
        require(0.0 <= self.noise_scale <= 1.0,
                f"{p}noise_scale must be in [0, 1] (the weight of the noise in the blend), got {self.noise_scale}")
        require(0.0 <= self.logit_fusion_alpha <= 1.0,
                f"{p}logit_fusion_alpha must be in [0, 1], got {self.logit_fusion_alpha}")
        require(0 <= self.perturbation_window <= 4096,
                f"{p}perturbation_window must be an integer in [0, 4096] (0 = perturb nothing), "
                f"got {self.perturbation_window}")
        check_sampling_params(self.temperature, self.top_k, self.top_p, prefix=p)
        require(self.search_layers >= 1, f"{p}search_layers must be >= 1, got {self.search_layers}")
        require(self.n_heads >= 1, f"{p}n_heads must be >= 1, got {self.n_heads}")
        parse_heads(self.heads, f"{p}heads")
        self.check_chain(p)


def check_against_model(settings: PhaseSlipSettings, lm: Any) -> None:
    """Refuse settings the model cannot satisfy (too many layers or heads, unknown explicit heads).

    Explicit ``heads`` replace the search, so search_layers and n_heads are then not checked.
    """
    p = "phase_slip."
    for layer, head in parse_heads(settings.heads):
        require(layer < lm.n_layers and head < lm.n_kv_heads,
                f"{p}heads: {layer}.{head} does not exist (layers 0..{lm.n_layers - 1}, "
                f"KV heads 0..{lm.n_kv_heads - 1})")
    if settings.heads.strip():
        return
    require(settings.search_layers <= lm.n_layers,
            f"{p}search_layers={settings.search_layers} but the model has only {lm.n_layers} layers")
    available = settings.search_layers * lm.n_kv_heads
    require(settings.n_heads <= available,
            f"{p}n_heads={settings.n_heads} but the last {settings.search_layers} layers have only "
            f"{available} KV heads ({lm.n_kv_heads} per layer)")


class PhaseSlip(Sampler):
    """The engine's ``phase_slip`` column: one side row, rotated, fused by entropy-gated alpha."""

    name = "phase_slip"
    Settings = PhaseSlipSettings
    extra_rows = 1

    def __init__(self, settings: PhaseSlipSettings | None = None, lm: Any = None):
        super().__init__(settings, lm)
        if lm is not None:
            check_against_model(self.settings, lm)
        self.heads: list[Head] = []
        self._by_layer: dict[int, torch.Tensor] = {}  # perturbed layer -> its KV heads
        self.generator = torch.Generator()
        self.extra: dict[str, Any] = {}
        self._perturbed_positions = 0

    def eligible_heads(self) -> list[Head]:
        """Explicit ``heads``, else the calibrated ones, else all KV heads of the last search_layers layers."""
        s = self.settings
        if s.heads.strip():
            return parse_heads(s.heads)
        if s.calibrate:
            return calibrate_heads(self.lm, search_layers=s.search_layers, n_heads=s.n_heads,
                                   window=s.perturbation_window).heads
        return last_layers_heads(self.lm.n_layers, self.lm.n_kv_heads, s.search_layers)

    def start(self, ctx: RunContext) -> None:
        if self.lm is None:
            raise SettingsError("phase_slip needs the model (construct it with lm=...)")
        self.heads = self.eligible_heads()
        self.head_labels = [f"{layer}.{head}" for layer, head in self.heads]
        by_layer: dict[int, list[int]] = {}
        for layer, head in self.heads:
            by_layer.setdefault(layer, []).append(head)
        self._by_layer = {layer: torch.tensor(hs, device=self.lm.device) for layer, hs in sorted(by_layer.items())}
        self.generator = torch.Generator().manual_seed(ctx.seed)  # its own: the column's draws stay untouched
        self._perturbed_positions = 0
        self.extra = self.settings.processors(self.lm, torch.Generator().manual_seed(ctx.seed))  # XTC's own coin

    def side_layer(self) -> int:
        """The lowest layer with a perturbed head: below it the side row is the clean row."""
        return min(self._by_layer, default=0)

    def perturb(self, values: list[torch.Tensor], n_prompt: int, step: int) -> int:
        """Rotate the eligible heads' Values of the last min(W, generated) positions; return that count."""
        generated = values[0].shape[1] - n_prompt  # generated positions already in the cache
        width = min(self.settings.perturbation_window, generated)
        self._perturbed_positions = 0
        if width <= 0 or not self._by_layer or self.settings.noise_scale == 0.0:
            return 0
        phi = rotation_angle(self.settings.noise_scale, values[0].shape[-1])
        windows = [values[layer][heads, -width:] for layer, heads in self._by_layer.items()]  # [h, width, d] copies
        noise = [torch.randn(w.shape, generator=self.generator, dtype=torch.float64, device="cpu") for w in windows]
        turned = rotate_toward(torch.cat(windows), phi, torch.cat(noise))  # one call: each vector turns on its own
        for (layer, heads), window in zip(self._by_layer.items(), turned.split([len(w) for w in windows])):
            values[layer][heads, -width:] = window
        self._perturbed_positions = width
        return width

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        clean = view.logits
        perturbed = view.extra_logits[0] if view.extra_logits is not None else clean  # step 0: prefill only
        log_p, log_q = tempered_log_probs(clean, s.temperature), tempered_log_probs(perturbed, s.temperature)
        entropy = entropy_nats(log_p) if s.temperature > 0 else 0.0  # T = 0 (greedy): H = 0
        alpha = fusion_alpha(entropy, s.logit_fusion_alpha)
        fused = fuse_logits(clean, perturbed, alpha)
        params = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                  "noise_scale": s.noise_scale, "perturbation_window": s.perturbation_window}
        signals = {"fusion_alpha": alpha, "perturbed_positions": self._perturbed_positions,
                   "perturbed_kl": float(kl_divergence(log_p, log_q)), "eligible_heads": self.head_labels}
        if s.order:
            params["order"] = s.order
        stages = [Stage("perturbed", f"noise_scale={s.noise_scale:g}, {self._perturbed_positions} positions rotated",
                        scores=perturbed, side=True),
                  Stage("fusion", f"α={alpha:.3f}", scores=fused)] if view.record_stages else None
        return sample_decision(fused, view.input_ids, params, s.temperature, s.top_k, s.top_p, signals=signals,
                               extra=self.extra, order=s.links, stages=stages, likely=view.likely)
