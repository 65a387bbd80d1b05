"""Pure tensor functions shared by Phase-Slip and its head calibration: an exact, norm-preserving
rotation of vectors, and the KL divergence between two distributions given as log-probabilities."""
from __future__ import annotations

import math

import torch

from .precision import wide


def rotate_toward(v: torch.Tensor, phi: float, noise: torch.Tensor) -> torch.Tensor:
    """v' = cos(phi) v + sin(phi) |v| u, with u the unit part of ``noise`` orthogonal to v.

    ``v`` and ``noise`` are [..., d]; each vector turns by exactly ``phi`` and keeps its norm
    (u is one Gram-Schmidt step on the Gaussian draw). Computed in float64 (float32 on MPS) on v's
    device, returned in v's dtype; ``noise`` may come from elsewhere (the CPU generators).
    """
    x = wide(v)
    norm = x.norm(dim=-1, keepdim=True)
    unit = x / norm.clamp_min(1e-30)
    g = noise.to(x.device, x.dtype)
    u = g - (g * unit).sum(-1, keepdim=True) * unit
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return (math.cos(phi) * x + math.sin(phi) * norm * u).to(v.dtype)


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats from log-probabilities, summed over the last dim (broadcasting the rest)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)
