"""Kuramoto order parameter and the per-token read-out from attention.

Order parameter:  R e^{i psi} = sum_j w_j e^{i theta_j} / sum_j w_j   (w = 1: the plain mean).
R = 1 when all phases agree, ~1/sqrt(N) for random phases, 0 for phases spread evenly.
"""
from __future__ import annotations

import math

import torch


def order_parameter(phases: torch.Tensor, dim: int = -1,
                    weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, psi) of the phases along ``dim``: R = |mean e^{i theta}|, psi = its angle."""
    cos, sin = torch.cos(phases), torch.sin(phases)
    if weights is None:
        c, s = cos.mean(dim), sin.mean(dim)
    else:
        total = weights.sum(dim)
        c, s = (weights * cos).sum(dim) / total, (weights * sin).sum(dim) / total
    return torch.sqrt(c * c + s * s).clamp(0.0, 1.0), torch.atan2(s, c)


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
