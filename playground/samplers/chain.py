"""The processors of the temperature chain that transformers does not have: top-nσ, XTC and DRY,
and top-k then top-p in one pass (transformers' two warpers, top-p's sort over k scores).

Each is a ``LogitsProcessor`` (``__call__(input_ids, scores) -> scores``, scores [1, V]) in the
style of transformers' ``generation/logits_process.py``: one small class per rule, its formula in
the docstring. Removed tokens get -inf, so a softmax gives them exactly 0.
"""
from __future__ import annotations

import json
import math

import torch
from transformers import LogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from .base import SettingsError

DRY_BREAKERS = json.dumps(["\n", ":", "\"", "*"])
DRY_MAX_EXPONENT = 64  # base^(n - allowed) capped: 1.75^64 ~ 3.6e15 already removes the token


class TopKTopPLogitsWarper(LogitsProcessor):
    """``TopKLogitsWarper(k)`` then ``TopPLogitsWarper(p)``, the same kept set, with top-p run on the
    k survivors instead of the vocabulary: softmax over the k scores equals softmax over the
    vocabulary with the others at -inf, and top-p's sort shrinks from V (49,152 for SmolLM2,
    ~1.8 ms on a 2-core CPU) to k. A tie at the k-th score (top-k keeps every tied token) takes
    the two warpers' own path.

    ``likely``: token ids where the k highest scores probably are (the clean distribution's most likely):
    their top k stands for the vocabulary's when no other score reaches the k-th (the same count that
    finds a tie), so the k-th is found in a few dozen scores instead of the vocabulary.
    """

    def __init__(self, top_k: int, top_p: float, likely: torch.Tensor | None = None):
        self.top_k, self.top_p = TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)
        self.likely = likely
        self.keep_top_k = False  # the chain trace: keep the scores between the two (top_k_scores)
        self.top_k_scores: torch.Tensor | None = None
        self.kept: torch.Tensor | None = None  # the k survivors' ids, ascending (None: the tie path)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k.top_k, scores.shape[-1])

        def reach_kth(values: torch.Tensor) -> int:  # k: no tie at the k-th score, and no higher score missed
            return int(torch.count_nonzero(scores >= values[:, -1:]))

        self.kept, values = None, None
        if self.likely is not None and scores.shape[0] == 1 and k <= self.likely.shape[0]:
            values, order = torch.topk(scores[:, self.likely], k)
            ids = self.likely[order]
            if reach_kth(values) != k:  # a higher score elsewhere, or a tie: look everywhere
                values = None
        if values is None:
            values, ids = torch.topk(scores, k)
            if scores.shape[0] != 1 or reach_kth(values) != k:  # a tie at the k-th score
                self.top_k_scores = self.top_k(input_ids, scores)
                return self.top_p(input_ids, self.top_k_scores)
        self.kept = torch.sort(ids[0]).values  # the draw and the trace read the survivors alone
        if self.keep_top_k:
            self.top_k_scores = torch.full_like(scores, self.top_k.filter_value).scatter_(-1, ids, values)
        return torch.full_like(scores, self.top_k.filter_value).scatter_(-1, ids, self.top_p(input_ids, values))


class TopNSigmaLogitsWarper(LogitsProcessor):
    """Top-nσ (Tang et al. 2024): keep the tokens with logit >= max(logit) - n · σ.

    σ is the population standard deviation of the finite logits. Scaling the logits by 1/T scales
    max and σ alike, so the kept set is the same at every temperature. n <= 0 keeps everything.
    """

    def __init__(self, n: float):
        self.n = n

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.n <= 0:
            return scores
        finite = torch.isfinite(scores)
        values = torch.where(finite, scores, torch.zeros_like(scores))
        count = finite.sum(-1, keepdim=True).clamp_min(1)
        mean = values.sum(-1, keepdim=True) / count
        var = (torch.where(finite, scores - mean, torch.zeros_like(scores)) ** 2).sum(-1, keepdim=True) / count
        top = torch.where(finite, scores, torch.full_like(scores, -math.inf)).max(-1, keepdim=True).values
        return scores.masked_fill(scores < top - self.n * var.sqrt(), -math.inf)


class XTCLogitsWarper(LogitsProcessor):
    """XTC, exclude top choices: with probability ``probability``, when at least two tokens have
    p >= ``threshold`` (p = softmax of the scores at this point of the chain), remove all of them
    but the least likely. ``protected`` ids (newline, EOS) are never removed.

    The coin comes from ``generator`` (the sampler's own), one draw per step, never the column's draw.
    """

    def __init__(self, threshold: float, probability: float, generator: torch.Generator,
                 protected: set[int] | frozenset[int] = frozenset()):
        self.threshold, self.probability, self.generator = threshold, probability, generator
        self.protected = sorted(protected)
        self.last_applied = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        coin = float(torch.rand((), generator=self.generator, dtype=torch.float64, device="cpu"))
        self.last_applied = False
        if coin >= self.probability:
            return scores
        p = torch.softmax(scores.float(), dim=-1)[0]
        above = torch.nonzero(p >= self.threshold).flatten()
        if above.numel() < 2:
            return scores
        keep = above[p[above].argmin()]  # the least likely of the top choices stays
        remove = torch.zeros_like(p, dtype=torch.bool)
        remove[above] = True
        remove[keep] = False
        if self.protected:
            remove[torch.tensor(self.protected, device=remove.device)] = False
        self.last_applied = bool(remove.any())
        return scores.masked_fill(remove.unsqueeze(0), -math.inf)


def z_function(seq: list[int]) -> list[int]:
    """z[i] = length of the longest common prefix of seq and seq[i:] (z[0] = len(seq)); O(len)."""
    n = len(seq)
    z = [0] * n
    if n:
        z[0] = n
    left = right = 0
    for i in range(1, n):
        if i < right:
            z[i] = min(right - i, z[i - left])
        while i + z[i] < n and seq[z[i]] == seq[i + z[i]]:
            z[i] += 1
        if i + z[i] > right:
            left, right = i, i + z[i]
    return z


def dry_match_lengths(context: list[int], breakers: set[int]) -> dict[int, int]:
    """For each token t: the longest n such that the context's last n tokens also occur earlier,
    immediately followed by t, with no sequence breaker inside the matched tokens. O(len(context)).

    On the reversed context, z[j] is how far the suffix ending at position L-1-j agrees with the
    context's own suffix, read backwards: one Z-function pass gives every earlier match at once.
    """
    length = len(context)
    tail = 0  # the context's suffix stops at the last breaker
    while tail < length and context[length - 1 - tail] not in breakers:
        tail += 1
    if tail == 0:
        return {}
    z = z_function(context[::-1])
    best: dict[int, int] = {}
    for end in range(length - 1):  # an earlier occurrence ending at `end`, followed by context[end + 1]
        n = min(z[length - 1 - end], tail)
        if n > 0:
            token = context[end + 1]
            if n > best.get(token, 0):
                best[token] = n
    return best


class DRYLogitsProcessor(LogitsProcessor):
    """DRY, don't repeat yourself: for each token t with match length n (``dry_match_lengths``)
    >= ``allowed_length``, subtract ``multiplier · base^(n - allowed_length)`` from t's logit.

    Matches never cross a sequence breaker. The exponent is capped at DRY_MAX_EXPONENT (a
    removal in effect), so a long repetition cannot overflow.
    """

    def __init__(self, multiplier: float, base: float, allowed_length: int, breakers: set[int] | frozenset[int]):
        self.multiplier, self.base, self.allowed_length = multiplier, base, allowed_length
        self.breakers = set(breakers)

    def penalties(self, context: list[int]) -> dict[int, float]:
        """token -> the amount subtracted from its logit (tokens with none left out)."""
        return {t: self.multiplier * self.base ** min(n - self.allowed_length, DRY_MAX_EXPONENT)
                for t, n in dry_match_lengths(context, self.breakers).items() if n >= self.allowed_length}

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        penalty = self.penalties(input_ids[0].tolist())
        if not penalty:
            return scores
        ids = torch.tensor(list(penalty), dtype=torch.long, device=scores.device)
        scores = scores.clone()
        scores[0, ids] -= torch.tensor(list(penalty.values()), dtype=scores.dtype, device=scores.device)
        return scores


def parse_breakers(text: str, key: str = "dry_sequence_breakers") -> list[str]:
    """A JSON list of strings, e.g. ``["\\n", ":", "\\"", "*"]``; a SettingsError otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise SettingsError(f'{key} must be a JSON list of non-empty strings like ["\\n", ":"], got {text!r}')
    return value


_BREAKER_IDS: dict[tuple[int, str], frozenset[int]] = {}


def breaker_ids(tokenizer, breakers: list[str]) -> frozenset[int]:
    """The token ids whose text contains any of ``breakers`` (cached per tokenizer and list)."""
    key = (id(tokenizer), json.dumps(breakers))
    if key not in _BREAKER_IDS:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        _BREAKER_IDS[key] = frozenset(i for i, text in enumerate(texts) if any(b in text for b in breakers))
    return _BREAKER_IDS[key]
