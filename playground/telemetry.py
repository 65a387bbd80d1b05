"""Per-token telemetry: one row per generated token per column, and the pure statistics behind it.

Most statistics are of the CLEAN next-token distribution p = softmax(logits) at T = 1:

* entropy            H = -sum p ln p                                  (nats)
* entropy_bits_norm  H / ln V  = H_bits / log2 V                       (in [0, 1])
* varentropy         sum p (log2 p + H_bits)^2                          (bits^2, the variance of surprisal)
* prob / logprob     p and ln p of the chosen token

and three of the distribution q the sampler actually drew from (after its warpers, fusion or
schedule; a point mass on the token for a deterministic choice: argmax, lookahead):

* sampler_prob       q of the chosen token
* sampler_entropy    -sum q ln q                                        (nats)
* support            how many tokens have q > 0
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .precision import wide


@dataclass
class TokenRow:
    """What happened at one generated token of one column."""

    step: int
    id: int
    text: str
    prob: float
    logprob: float
    entropy: float
    entropy_bits_norm: float
    varentropy: float
    top: list[dict[str, Any]]  # top-5 of the clean distribution: {"id", "text", "prob", "sampler_prob"}
    sampler_prob: float = 1.0  # the chosen token's probability under the sampler's own distribution
    sampler_entropy: float = 0.0  # that distribution's entropy, nats
    support: int = 1  # how many tokens it kept (q > 0)
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters in force
    fusion_alpha: float | None = None  # Phase-Slip
    adaptive_alpha: float | None = None  # adaptive sampler, raw alpha
    adaptive_alpha_smoothed: float | None = None
    state: str | None = None  # adaptive sampler: COLD / MIXED / HOT
    order_parameter: float | None = None  # Kuramoto R at the probe layer
    order_parameter_layers: list[float] | None = None  # R of every layer
    step_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # sampler-specific details

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SIGNAL_FIELDS = ("fusion_alpha", "adaptive_alpha", "adaptive_alpha_smoothed", "state")


@dataclass
class DistributionStats:
    """Batched statistics of softmax(logits) over rows."""

    log_probs: torch.Tensor  # [R, V] natural-log probabilities
    entropy: torch.Tensor  # [R] nats
    entropy_bits_norm: torch.Tensor  # [R]
    varentropy: torch.Tensor  # [R] bits^2
    probs: torch.Tensor  # [R, V] exp(log_probs)

    def row(self, i: int) -> "DistributionStats":
        """Row ``i`` alone, still batch-shaped ([1, V] and [1])."""
        return DistributionStats(*(t[i:i + 1] for t in (self.log_probs, self.entropy, self.entropy_bits_norm,
                                                         self.varentropy, self.probs)))


def distribution_stats(logits: torch.Tensor) -> DistributionStats:
    """Entropy (nats), normalised entropy and varentropy (bits^2) of softmax(logits), per row."""
    logits = logits.float()
    if logits.dim() == 1:
        logits = logits.unsqueeze(0)
    log_p = torch.log_softmax(logits, dim=-1)
    p = log_p.exp()
    # masked (-inf) logits have p = 0: a finite stand-in makes their terms 0 instead of 0 * -inf = nan
    # (float32's smallest positive p has log -103.3, so no real value is changed)
    finite_log_p = log_p.clamp_min(-1e4)
    entropy = -(p * finite_log_p).sum(-1)
    h_bits = entropy / math.log(2.0)
    spread = finite_log_p.div_(math.log(2.0)).add_(h_bits.unsqueeze(-1)).square_().mul_(p)  # in place: one buffer
    varentropy = spread.sum(-1)
    return DistributionStats(
        log_probs=log_p,
        entropy=entropy,
        entropy_bits_norm=entropy / math.log(logits.shape[-1]),
        varentropy=varentropy,
        probs=p,
    )


@dataclass
class SamplerView:
    """The distribution a sampler drew from, as one token row records it."""

    prob: float  # q of the chosen token
    entropy: float  # nats
    support: int  # tokens with q > 0
    top_probs: list[float]  # q of each of the clean top-k alternatives


def sampler_view(probs: torch.Tensor | None, token: int, top_ids: list[int],
                 support: torch.Tensor | None = None) -> SamplerView:
    """q = probs / sum(probs) at ``token``, its entropy and support; ``probs`` None: a point mass on ``token``.
    ``support``: ids outside which ``probs`` is 0 (Decision.support): read on them alone."""
    if probs is None:
        return SamplerView(1.0, 0.0, 1, [1.0 if i == token else 0.0 for i in top_ids])
    q = wide(probs if support is None else probs[support])
    total = q.sum()
    kept = q[q > 0] / total  # the kept tokens alone: the same floats as dividing the whole vocabulary
    entropy = float(-(kept * kept.log()).sum())
    ids = torch.tensor([token, *top_ids], device=probs.device)
    at = (wide(probs[ids]) / total).tolist()
    return SamplerView(at[0], max(0.0, entropy), int(kept.shape[0]), at[1:])


def rows_to_frame(columns: list[dict[str, Any]]):
    """Telemetry of a run as one pandas DataFrame: one row per (column, token)."""
    import pandas as pd

    records = []
    for col in columns:
        for row in col["tokens"]:
            rec = {"column": col["label"], "sampler": col["sampler"]}
            rec.update({k: v for k, v in row.items() if k not in ("top", "params", "extra", "order_parameter_layers")})
            rec["top"] = " | ".join(f"{t['text']!r}:{t['prob']:.3f}" for t in row["top"])
            rec["top_sampler"] = " | ".join(f"{t['text']!r}:{t.get('sampler_prob', 0.0):.3f}" for t in row["top"])
            for key, value in row.get("params", {}).items():
                rec[f"param_{key}"] = value
            records.append(rec)
    return pd.DataFrame.from_records(records)
