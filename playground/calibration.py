"""Head calibration for Phase-Slip: which (layer, KV head) pairs are "creative", which "structural".

Deterministic probe, one batched forward:

    text     = a fixed calibration text (or the caller's, extended by it when short)
    context  = all but the last k = min(16, n // 2) tokens; probe = those last k tokens
    for each candidate (layer, KV head) of the last ``search_layers`` layers, one batch row:
        a copy of the context's clean cache whose Values of that head, over the last
        W = perturbation_window context positions, are rotated by the probe angle pi/4
        toward seeded random directions
    feed the probe tokens to the clean row and to every candidate row (one forward)
    per probe position i:  KL_i = KL(clean_i || perturbed_i)  (T = 1),  kept_i = [argmax equal]
    flip_rate = 1 - mean_i kept_i        structural  <=>  flip_rate > 0.25
    score     = mean_i KL_i * kept_i     (it moves the distribution, but not its top choice)
    eligible  = the n_heads non-structural candidates with the largest score (ties: lower layer, head)

A KV head is the unit, so on grouped-query models (the default model: 9 query heads sharing
3 KV heads per layer) a candidate perturbs what all its query heads read. Fewer than n_heads
heads come back when fewer are non-structural. The probe's scores are cached per model object,
keyed by the text, search_layers and window, so a model is probed once per process.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from .precision import wide
from .progress import say
from .rotation import kl_divergence, rotate_toward

CALIBRATION_TEXT = (
    "The lighthouse stood at the edge of the bay, and every evening the keeper climbed its narrow "
    "stairs to light the lamp. Ships passing in the fog trusted its beam to guide them home. One "
    "winter night the lamp failed, and the keeper had to decide whether to row out into the storm "
    "or to wait for the dawn."
)
PROBE_ANGLE = math.pi / 4  # large enough that structural heads flip the argmax, small enough to stay on-manifold
PROBE_TOKENS = 16
MIN_TOKENS = 32  # shorter texts are followed by CALIBRATION_TEXT
STRUCTURAL_FLIP_RATE = 0.25
CALIBRATION_SEED = 0
ROWS_PER_FORWARD = 32  # candidate rows per batched forward (memory bound for wide models)


Head = tuple[int, int]  # (layer, KV head): the unit that is perturbed; GQA query heads share it


def last_layers_heads(n_layers: int, n_kv_heads: int, search_layers: int) -> list[Head]:
    """Every KV head of the last ``search_layers`` layers: the eligible set without calibration."""
    return [(layer, head) for layer in range(n_layers - search_layers, n_layers) for head in range(n_kv_heads)]


@dataclass
class HeadScore:
    """One candidate's probe result."""

    layer: int
    kv_head: int
    score: float  # mean over probe positions of KL(clean || perturbed) where the argmax survives
    kl: float  # mean KL(clean || perturbed) over all probe positions
    flip_rate: float  # share of probe positions whose argmax changed
    structural: bool

    @property
    def head(self) -> Head:
        return (self.layer, self.kv_head)


@dataclass
class Calibration:
    heads: list[Head]  # the eligible heads, best first
    scores: list[HeadScore] = field(default_factory=list)  # every candidate, in (layer, head) order
    n_context: int = 0
    n_probe: int = 0

    def rows(self) -> list[dict[str, Any]]:
        """The score table, one dict per candidate (for the CLI and the UI)."""
        chosen = set(self.heads)
        return [{"layer": s.layer, "kv_head": s.kv_head, "score": s.score, "kl": s.kl,
                 "flip_rate": s.flip_rate, "structural": s.structural, "eligible": s.head in chosen}
                for s in self.scores]


def select_heads(scores: list[HeadScore], n_heads: int) -> list[Head]:
    """The n_heads non-structural candidates with the largest score; ties go to lower (layer, head)."""
    creative = [s for s in scores if not s.structural]
    creative.sort(key=lambda s: (-s.score, s.layer, s.kv_head))
    return [s.head for s in creative[:n_heads]]


def calibration_ids(lm: Any, text: str | None) -> list[int]:
    """Token ids of the calibration text; a short text is followed by CALIBRATION_TEXT."""
    text = CALIBRATION_TEXT if text is None or not text.strip() else text
    ids = lm.encode(text)
    if len(ids) < MIN_TOKENS and text != CALIBRATION_TEXT:
        ids = lm.encode(text.rstrip() + " " + CALIBRATION_TEXT)
    return ids[:lm.max_context]  # a short-context model (PhaseGPT: 64 characters) reads what fits


def _rows_cache(snapshot: list[tuple[torch.Tensor, torch.Tensor]], rows: int, config: Any) -> DynamicCache:
    """A fresh cache holding ``rows`` copies of the one-row snapshot."""
    return DynamicCache(ddp_cache_data=[(k.repeat(rows, 1, 1, 1), v.repeat(rows, 1, 1, 1)) for k, v in snapshot],
                        config=config)


def score_heads(lm: Any, ids: list[int], candidates: list[Head], window: int,
                angle: float = PROBE_ANGLE, seed: int = CALIBRATION_SEED) -> tuple[list[HeadScore], int, int]:
    """Probe every candidate as described in the module docstring; returns (scores, n_context, n_probe)."""
    n_probe = min(PROBE_TOKENS, len(ids) // 2)
    context, probe = ids[:len(ids) - n_probe], ids[len(ids) - n_probe:]
    if n_probe < 1 or not context:
        raise ValueError(f"the calibration text needs at least 2 tokens, got {len(ids)}")
    width = max(1, min(window, len(context)))
    model = lm.model
    generator = torch.Generator().manual_seed(seed)
    scores: list[HeadScore] = []
    with torch.inference_mode():
        # eager, in chunks: a long text stays linear in memory
        prefill, _ = lm.prefill(torch.tensor(context, device=lm.device))
        snapshot = [(layer.keys, layer.values) for layer in prefill.layers]  # never fed again; rows are copies
        head_dim = snapshot[0][1].shape[-1]
        noise = torch.randn((len(candidates), width, head_dim), generator=generator, dtype=torch.float64,
                            device="cpu")  # CPU draws, as every random draw of a run
        for start in range(0, len(candidates), ROWS_PER_FORWARD):
            chunk = candidates[start:start + ROWS_PER_FORWARD]
            cache = _rows_cache(snapshot, len(chunk) + 1, model.config)  # row 0 stays clean
            for row, (layer, head) in enumerate(chunk, start=1):
                values = cache.layers[layer].values
                values[row, head, -width:] = rotate_toward(values[row, head, -width:], angle, noise[start + row - 1])
            tokens = torch.tensor([probe] * (len(chunk) + 1), device=lm.device)
            logits = wide(lm.forward(tokens, cache)[0].logits)
            log_p = torch.log_softmax(logits, dim=-1)  # [rows, k, V]
            clean, perturbed = log_p[:1], log_p[1:]
            kl = kl_divergence(clean, perturbed)  # [candidates, k]
            kept = (perturbed.argmax(-1) == clean.argmax(-1)).to(logits.dtype)
            for (layer, head), kl_row, kept_row in zip(chunk, kl, kept):
                flip_rate = 1.0 - float(kept_row.mean())
                scores.append(HeadScore(layer=layer, kv_head=head, score=float((kl_row * kept_row).mean()),
                                        kl=float(kl_row.mean()), flip_rate=flip_rate,
                                        structural=flip_rate > STRUCTURAL_FLIP_RATE))
    return scores, len(context), n_probe


# per model: (ids, search_layers, window) -> (the probe's scores, n_context, n_probe), {n_heads: Calibration}
_cache: "weakref.WeakKeyDictionary[Any, dict[tuple, tuple]]" = weakref.WeakKeyDictionary()


def calibrate_heads(lm: Any, text: str | None = None, search_layers: int = 6, n_heads: int = 3,
                    window: int = 12, use_cache: bool = True) -> Calibration:
    """Score the KV heads of the last ``search_layers`` layers and keep the best ``n_heads`` (cached)."""
    ids = calibration_ids(lm, text)
    key = (tuple(ids), search_layers, window)  # what the scores depend on; n_heads only selects among them
    per_model = _cache.setdefault(lm.model, {})
    if not use_cache or key not in per_model:
        candidates = last_layers_heads(lm.n_layers, lm.n_kv_heads, search_layers)
        say(f"calibrating Phase-Slip's heads: {len(candidates)} candidate KV heads probed in batched passes, "
            "once per model and process (~10 s on 2 cores)…")
        per_model[key] = (score_heads(lm, ids, candidates, window), {})
    (scores, n_context, n_probe), results = per_model[key]
    if n_heads not in results:
        results[n_heads] = Calibration(heads=select_heads(scores, n_heads), scores=scores,
                                       n_context=n_context, n_probe=n_probe)
    return results[n_heads]
