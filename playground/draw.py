"""The draw: where a distribution's cumulative probability crosses the column's uniform number u.

On the CPU in float64 whatever the device, in vocabulary order: the same distribution gives the
same token anywhere, and two distributions that agree up to u's token give the same token.
"""
from __future__ import annotations

import torch


def cumulative(probs: torch.Tensor) -> torch.Tensor:
    """The CDF of ``probs`` [V] in vocabulary order, float64 on the CPU (not normalised)."""
    return torch.cumsum(probs.detach().to("cpu", torch.float64), dim=0)


def draw_from_cdf(cdf: torch.Tensor, probs: torch.Tensor, u: float) -> int:
    """The first token whose cumulative probability exceeds u * total (a zero-probability token never)."""
    index = min(int(torch.searchsorted(cdf, u * cdf[-1], right=True)), cdf.shape[0] - 1)
    while probs[index] <= 0:  # u at the very top of the CDF: step back onto a real token
        index -= 1
    return index


def draw(probs: torch.Tensor, u: float, support: torch.Tensor | None = None) -> int:
    """Inverse-CDF draw: the first token whose cumulative probability exceeds u * total.

    ``support``: ids, ascending, outside which ``probs`` is 0; the CDF over them alone has the same
    floats at them (a zero adds nothing to a running sum), so the same token, without a pass over V.
    """
    kept = (probs if support is None else probs[support]).detach().to("cpu", torch.float64)
    index = draw_from_cdf(torch.cumsum(kept, dim=0), kept, u)
    return index if support is None else int(support[index])


def interval(cdf: torch.Tensor, token: int) -> tuple[float, float]:
    """[F(token - 1), F(token)) / total: the values of u that draw ``token``."""
    total = float(cdf[-1])
    low = float(cdf[token - 1]) / total if token > 0 else 0.0
    return low, float(cdf[token]) / total
