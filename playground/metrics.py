"""Run-level metrics: perplexity, diversity and speed (docs/reference.md#run-metrics).

* perplexity        exp(-mean_t ln p(x_t | prompt, x_<t)) over the continuation, prompt masked
* type_token_ratio  the public benchmark's diversity: unique/total words of prompt + text,
                    lower-cased, '.' and ',' removed, split on whitespace
* distinct_n        unique n-grams / all n-grams, pooled over one or more token sequences
* rep_n             1 - unique/total n-grams within one sequence (Welleck et al. 2019)
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch


def perplexity_from_logprobs(logprobs: Sequence[float]) -> float:
    """exp of the mean negative log-likelihood; nan for an empty continuation."""
    if not logprobs:
        return float("nan")
    return math.exp(-sum(logprobs) / len(logprobs))


@torch.inference_mode()
def perplexity(model: Any, prompt_ids: Sequence[int], continuation_ids: Sequence[int]) -> float:
    """Perplexity of the continuation under ``model``, the prompt masked out of the loss."""
    if not continuation_ids:
        return float("nan")
    ids = torch.tensor([list(prompt_ids) + list(continuation_ids)], device=model.device)
    labels = ids.clone()
    labels[:, : len(prompt_ids)] = -100
    return math.exp(float(model(ids, labels=labels).loss))


def type_token_ratio(text: str, prompt: str = "") -> float:
    """The public benchmark's diversity of one text (prompt included)."""
    words = f"{prompt}{text}".lower().replace(".", "").replace(",", "").split()
    return len(set(words)) / len(words) if words else 0.0


def ngrams(tokens: Sequence[Any], n: int) -> list[tuple]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(sequences: Iterable[Sequence[Any]], n: int) -> float:
    """Unique n-grams over all n-grams, pooled across the sequences."""
    grams = [g for seq in sequences for g in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def rep_n(tokens: Sequence[Any], n: int) -> float:
    """Share of the n-grams of one sequence that repeat an earlier one."""
    grams = ngrams(tokens, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def column_metrics(rows: Sequence[Any], text: str, elapsed_s: float, prompt: str = "") -> dict[str, float | None]:
    """The metrics shown under a column and in the CLI table (None where undefined)."""
    ids = [r.id for r in rows]
    n = len(ids)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    r_values = [r.order_parameter for r in rows if r.order_parameter is not None]
    return {
        "tokens": n,
        "tok_s": round(n / elapsed_s, 3) if elapsed_s > 0 else None,
        "mean_entropy": round(mean([r.entropy for r in rows]), 6) if rows else None,
        "perplexity": round(perplexity_from_logprobs([r.logprob for r in rows]), 6) if rows else None,
        "type_token_ratio": round(type_token_ratio(text, prompt), 6),
        "distinct_1": round(distinct_n([ids], 1), 6),
        "distinct_2": round(distinct_n([ids], 2), 6),
        "rep_2": round(rep_n(ids, 2), 6),
        "mean_order_parameter": round(mean(r_values), 6) if r_values else None,
    }
