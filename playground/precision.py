"""The widest float a tensor's device computes: float64, except on MPS (Apple GPUs), which has none.

Probabilities, rotations and draws are computed wide so that a run's tokens and statistics do not
depend on the model's dtype; on MPS they fall back to float32.
"""
from __future__ import annotations

import torch


def wide_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` as float64 (float32 on MPS), on its own device."""
    return t.to(wide_dtype(t.device))
