"""Attention that returns its weights without copying the KV cache for every query head.

transformers' eager attention, the only stock implementation that returns weights, first
expands each key/value head to the query heads that share it (``repeat_kv``: 3 copies of the
whole cache per layer and step for SmolLM2's 9 query / 3 key-value heads), then multiplies.
sdpa copies nothing but returns no weights. ``grouped_attention`` multiplies each group of
query heads by its own key/value head instead, with g the key/value head and r the query head
within its group:

    scores[b, g, r, i, j] = q[b, g, r, i] . k[b, g, j] * scaling   (+ the additive causal mask)
    weights = softmax_j(scores)   (float32)        out[b, g, r, i] = sum_j weights * v[b, g, j]

the same numbers as eager up to float32 rounding; memory and time grow with the cache, not
with the cache times the group size. Registered with transformers' attention and mask
interfaces as ``"grouped"`` (eager's additive mask).
"""
from __future__ import annotations

from typing import Any

import torch

GROUPED = "grouped"


def grouped_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(output [b, q, heads, d], weights [b, heads, q, kv]) from query [b, heads, q, d] and
    key/value [b, kv_heads, kv, d]. For inference: ``dropout`` (training only) is not applied."""
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads * q_len, dim)  # query head h uses kv head h // group
    scores = torch.matmul(grouped, key.transpose(2, 3)).view(batch, heads, q_len, kv_len) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, :kv_len]
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights.view(batch, kv_heads, -1, kv_len), value)
    return out.view(batch, heads, q_len, dim).transpose(1, 2).contiguous(), weights


def register() -> str:
    """Make ``"grouped"`` an attention implementation transformers models can be set to; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(GROUPED, grouped_attention)
    AttentionMaskInterface.register(GROUPED, eager_mask)
    return GROUPED
