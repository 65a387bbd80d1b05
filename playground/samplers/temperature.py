"""Temperature sampling and its chain of truncations (transformers' processors where they exist).

The chain, in this order (processors that are off are left out):

    repetition penalty -> DRY -> top-nσ -> temperature -> top-k -> top-p -> min-p
    -> typical-p -> epsilon -> eta -> XTC -> a draw from the renormalised distribution

The first part is ``model.generate``'s order, so the published baselines stay comparable; DRY sits
beside the repetition penalty, top-nσ before temperature (its kept set ignores temperature), XTC
last. T = 0 means greedy: the argmax of the clean logits, the chain left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from .base import (Decision, RunContext, Sampler, SettingsError, Stage, StepView, argmax_token, point_mass_stage,
                   require, setting)
from .chain import (DRY_BREAKERS, DRYLogitsProcessor, TopKTopPLogitsWarper, TopNSigmaLogitsWarper,
                    XTCLogitsWarper, breaker_ids, parse_breakers)


def check_sampling_params(temperature: float, top_k: int, top_p: float, min_p: float = 0.0,
                          repetition_penalty: float = 1.0, prefix: str = "") -> None:
    """Refuse out-of-range sampling parameters with a message that names the setting."""
    require(0.0 <= temperature <= 100.0, f"{prefix}temperature must be in [0, 100], got {temperature}")
    require(top_k >= 0, f"{prefix}top_k must be >= 0 (0 = off), got {top_k}")
    require(0.0 < top_p <= 1.0, f"{prefix}top_p must be in (0, 1], got {top_p}")
    require(0.0 <= min_p < 1.0, f"{prefix}min_p must be in [0, 1), got {min_p}")
    require(0.0 < repetition_penalty <= 10.0,
            f"{prefix}repetition_penalty must be in (0, 10], got {repetition_penalty}")


# the chain's links in their default order (``order`` reorders them; links that are off are left out)
LINKS = ("repetition_penalty", "dry", "top_n_sigma", "temperature", "top_k", "top_p", "min_p", "typical_p",
         "epsilon", "eta", "xtc")
DEFAULT_ORDER = ">".join(LINKS)
TEMPERATURE_LAST = ">".join((*(n for n in LINKS if n != "temperature"), "temperature"))


def chain_order(text: str, key: str = "order") -> tuple[str, ...]:
    """The full link order for ``order`` text such as ``min_p>temperature``.

    The links named trade places among their own default slots, in the order given; the links
    not named keep theirs. Empty text is the default order. An unknown or repeated link is refused.
    """
    names = [n.strip() for n in text.split(">")] if text.strip() else []
    for i, name in enumerate(names):
        if name not in LINKS:
            raise SettingsError(f"{key}: unknown link {name!r}; links: {', '.join(LINKS)} (joined by '>')")
        if name in names[:i]:
            raise SettingsError(f"{key}: link {name!r} is listed twice; a link may appear at most once")
    order = list(LINKS)
    for slot, name in zip(sorted(LINKS.index(n) for n in names), names):
        order[slot] = name
    return tuple(order)


def sampling_processors(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                        repetition_penalty: float = 1.0, extra: dict[str, LogitsProcessor] | None = None,
                        order: tuple[str, ...] = LINKS,
                        likely: torch.Tensor | None = None) -> list[tuple[str, LogitsProcessor]]:
    """(link name, processor) for these parameters in ``order``; off ones left out.

    ``extra``: the chain's other members that are on (``ChainSettings.processors``), by name. Top-k
    directly followed by top-p runs as one processor (top-p sorting the k survivors).
    """
    links: dict[str, LogitsProcessor] = dict(extra or {})
    if repetition_penalty != 1.0:
        links["repetition_penalty"] = RepetitionPenaltyLogitsProcessor(repetition_penalty)
    if temperature != 1.0:
        links["temperature"] = TemperatureLogitsWarper(temperature)
    if top_k > 0:
        links["top_k"] = TopKLogitsWarper(top_k)
    if top_p < 1.0:
        links["top_p"] = TopPLogitsWarper(top_p)
    if min_p > 0.0:
        links["min_p"] = MinPLogitsWarper(min_p)
    in_force = [name for name in order if name in links]
    chain: list[tuple[str, LogitsProcessor]] = []
    for name in in_force:
        if name == "top_p" and chain and chain[-1][0] == "top_k":
            chain[-1] = ("top_k+top_p", TopKTopPLogitsWarper(top_k, top_p, likely))
        else:
            chain.append((name, links[name]))
    return chain


# the attribute of each link's processor that holds its parameter, and the setting that names it
LINK_ATTRIBUTE = {"repetition_penalty": "penalty", "dry": "multiplier", "top_n_sigma": "n",
                  "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                  "typical_p": "mass", "epsilon": "epsilon", "eta": "epsilon"}
LINK_SETTING = {"dry": "dry_multiplier"}
# links that keep the order of the distribution they are given: a temperature, or a cut from the top
ORDER_KEEPING = {"top_n_sigma", "temperature", "top_k", "top_p", "min_p", "epsilon", "eta"}


def link_param(name: str, processor: LogitsProcessor) -> str:
    """The parameter a link ran with, as the trace shows it: ``top_p=0.9``."""
    if name == "xtc":
        done = "removed the top choices" if processor.last_applied else "no removal this step"
        return f"xtc_threshold={processor.threshold:g}, xtc_probability={processor.probability:g}: {done}"
    value = getattr(processor, LINK_ATTRIBUTE[name])
    value = value.item() if isinstance(value, torch.Tensor) else value  # eta keeps η as a tensor
    return f"{LINK_SETTING.get(name, name)}={value:.4g}"


def sampling_probs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float, top_k: int = 0,
                   top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                   penalty_ids: torch.Tensor | None = None,
                   extra: dict[str, LogitsProcessor] | None = None, order: tuple[str, ...] = LINKS,
                   stages: list[Stage] | None = None, likely: torch.Tensor | None = None) -> torch.Tensor:
    """softmax of the processed logits: the distribution a temperature draw samples from.

    ``penalty_ids`` (default: all of ``input_ids``) are the tokens the repetition penalty sees;
    every other processor (DRY) sees the whole context. ``stages``: a list that receives each
    link's scores, in order (the chain trace). ``likely``: where the top-k looks first (StepView.likely).
    """
    return sampling_distribution(logits, input_ids, temperature, top_k, top_p, min_p, repetition_penalty,
                                 penalty_ids, extra, order, stages, likely)[0]


def sampling_distribution(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float, top_k: int = 0,
                          top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                          penalty_ids: torch.Tensor | None = None,
                          extra: dict[str, LogitsProcessor] | None = None, order: tuple[str, ...] = LINKS,
                          stages: list[Stage] | None = None,
                          likely: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``sampling_probs``, and the ids outside which they are 0 where the chain's top-k (with top-p) names
    them (None: not known): no later link revives a token a cut removed."""
    support = None
    chain = sampling_processors(temperature, top_k, top_p, min_p, repetition_penalty, extra, order, likely)
    context = input_ids.view(1, -1)
    penalised = context if penalty_ids is None else penalty_ids.view(1, -1)
    scores = logits.view(1, -1).float()
    for name, processor in chain:
        if stages is not None and isinstance(processor, TopKTopPLogitsWarper):
            processor.keep_top_k = True  # the trace shows top-k and top-p apart
        scores = processor(penalised if name == "repetition_penalty" else context, scores)
        if isinstance(processor, TopKTopPLogitsWarper) and processor.kept is not None:
            support = processor.kept
        if stages is None:
            continue
        if isinstance(processor, TopKTopPLogitsWarper):
            stages.append(Stage("top_k", f"top_k={processor.top_k.top_k}", scores=processor.top_k_scores[0],
                                keeps_order=True, kept=processor.kept))
            stages.append(Stage("top_p", f"top_p={processor.top_p.top_p:g}", scores=scores[0], keeps_order=True,
                                kept=processor.kept))
        else:
            stages.append(Stage(name, link_param(name, processor), scores=scores[0],
                                keeps_order=name in ORDER_KEEPING))
    return torch.softmax(scores, dim=-1)[0], support


def sample_decision(logits: torch.Tensor, input_ids: torch.Tensor, params: dict[str, Any], temperature: float,
                    top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                    signals: dict[str, Any] | None = None,
                    extra: dict[str, LogitsProcessor] | None = None, order: tuple[str, ...] = LINKS,
                    stages: list[Stage] | None = None, likely: torch.Tensor | None = None) -> Decision:
    """T = 0: the argmax of ``logits``; otherwise ``sampling_probs`` for the engine to draw from.

    ``stages``: the stages so far (Phase-Slip's fusion), which the chain's links then extend.
    """
    signals = {} if signals is None else signals
    if temperature == 0.0:
        token = argmax_token(logits)
        if stages is not None:
            stages.append(point_mass_stage("argmax", "temperature=0", logits, token))
        return Decision(token=token, params=params, signals=signals, stages=stages or [])
    probs, support = sampling_distribution(logits, input_ids, temperature, top_k, top_p, min_p, repetition_penalty,
                                           extra=extra, order=order, stages=stages, likely=likely)
    if extra and "xtc" in extra:
        signals["xtc_applied"] = extra["xtc"].last_applied
    return Decision(probs=probs, support=support, params=params, signals=signals, stages=stages or [])


@dataclass
class ChainSettings:
    """The chain's other members; every default is off."""

    typical_p: float = setting(1.0, "typical-p: keep the tokens whose surprisal is nearest the entropy until "
                                    "their mass reaches typical_p (1 = off)")
    epsilon: float = setting(0.0, "ε-sampling: drop tokens with p < ε (0 = off)")
    eta: float = setting(0.0, "η-sampling: drop tokens with p < min(η, √η·exp(-H)) (0 = off)")
    top_n_sigma: float = setting(0.0, "top-nσ: keep tokens with logit >= max - n·σ of the logits; the same set at "
                                      "any temperature (0 = off; the paper uses 1)")
    xtc_threshold: float = setting(0.1, "XTC: tokens with p >= this are the top choices (above 0.5 = off)")
    xtc_probability: float = setting(0.0, "XTC: chance per step of removing every top choice but the least likely; "
                                          "never newline or EOS (0 = off)")
    dry_multiplier: float = setting(0.0, "DRY: penalty multiplier · base^(n - allowed_length) for a token that "
                                         "would extend a repeat of n tokens (0 = off)")
    dry_base: float = setting(1.75, "DRY: growth of the penalty per repeated token beyond allowed_length")
    dry_allowed_length: int = setting(2, "DRY: repeats up to this many tokens go unpenalised")
    dry_sequence_breakers: str = setting(DRY_BREAKERS, "DRY: JSON list of texts that end a repeat "
                                                       "(a token containing one breaks it)")
    order: str = setting("", "the chain's order: link names joined by '>' trade places among their own slots, "
                             "e.g. 'min_p>temperature' (empty = the default order)")

    def check_chain(self, prefix: str) -> None:
        p = prefix
        require(0.0 < self.typical_p <= 1.0, f"{p}typical_p must be in (0, 1] (1 = off), got {self.typical_p}")
        require(0.0 <= self.epsilon < 1.0, f"{p}epsilon must be in [0, 1) (0 = off), got {self.epsilon}")
        require(0.0 <= self.eta < 1.0, f"{p}eta must be in [0, 1) (0 = off), got {self.eta}")
        require(0.0 <= self.top_n_sigma <= 100.0,
                f"{p}top_n_sigma must be in [0, 100] (0 = off), got {self.top_n_sigma}")
        require(0.0 <= self.xtc_threshold <= 1.0, f"{p}xtc_threshold must be in [0, 1], got {self.xtc_threshold}")
        require(0.0 <= self.xtc_probability <= 1.0,
                f"{p}xtc_probability must be in [0, 1] (0 = off), got {self.xtc_probability}")
        require(0.0 <= self.dry_multiplier <= 100.0,
                f"{p}dry_multiplier must be in [0, 100] (0 = off), got {self.dry_multiplier}")
        require(1.0 <= self.dry_base <= 10.0, f"{p}dry_base must be in [1, 10], got {self.dry_base}")
        require(0 <= self.dry_allowed_length <= 1024,
                f"{p}dry_allowed_length must be an integer in [0, 1024], got {self.dry_allowed_length}")
        parse_breakers(self.dry_sequence_breakers, f"{p}dry_sequence_breakers")
        self.order = "" if chain_order(self.order, f"{p}order") == LINKS else ">".join(
            n.strip() for n in self.order.split(">"))  # the default order, however spelled, reads as ""

    @property
    def links(self) -> tuple[str, ...]:
        """The chain's full link order (``chain_order`` of ``order``)."""
        return chain_order(self.order)

    def processors(self, lm: Any, generator: torch.Generator) -> dict[str, LogitsProcessor]:
        """The members that are on, by name; XTC's coin from ``generator`` (the sampler's own)."""
        out: dict[str, LogitsProcessor] = {}
        if self.dry_multiplier > 0:
            breakers = breaker_ids(lm.tokenizer, parse_breakers(self.dry_sequence_breakers))
            out["dry"] = DRYLogitsProcessor(self.dry_multiplier, self.dry_base, self.dry_allowed_length, breakers)
        if self.top_n_sigma > 0:
            out["top_n_sigma"] = TopNSigmaLogitsWarper(self.top_n_sigma)
        if self.typical_p < 1.0:
            out["typical_p"] = TypicalLogitsWarper(self.typical_p)
        if self.epsilon > 0:
            out["epsilon"] = EpsilonLogitsWarper(self.epsilon)
        if self.eta > 0:
            device = str(lm.device) if lm is not None else "cpu"
            out["eta"] = EtaLogitsWarper(self.eta, device=device)  # it keeps η as a tensor there
        if self.xtc_probability > 0 and self.xtc_threshold <= 0.5:
            newline = lm.tokenizer.encode("\n", add_special_tokens=False)
            out["xtc"] = XTCLogitsWarper(self.xtc_threshold, self.xtc_probability, generator,
                                         set(lm.eos_ids) | set(newline))
        return out


TOP_K_HELP = "keep the k most likely tokens (0 = off)"
TOP_P_HELP = "nucleus: keep the most likely tokens up to this mass (1 = off)"


@dataclass
class TemperatureCore:
    """Defaults are the public benchmark's standard sampling: T 0.8, top-k 40, top-p 0.92."""

    temperature: float = setting(0.8, "divide the logits by T before the truncations (0 = greedy)")
    top_k: int = setting(40, TOP_K_HELP)
    top_p: float = setting(0.92, TOP_P_HELP)
    min_p: float = setting(0.0, "drop tokens with p < min_p · p(top token) (0 = off)")
    repetition_penalty: float = setting(1.0, "divide positive (multiply negative) logits of tokens already in the "
                                             "text by this (1 = off)")


@dataclass
class TemperatureSettings(ChainSettings, TemperatureCore):
    """The standard sampler's five settings, then the chain's other members (all off by default)."""

    def __post_init__(self):
        check_sampling_params(self.temperature, self.top_k, self.top_p, self.min_p,
                              self.repetition_penalty, prefix="temperature.")
        self.check_chain("temperature.")


class TemperatureSampler(Sampler):
    name = "temperature"
    Settings = TemperatureSettings

    def __init__(self, settings: TemperatureSettings | None = None, lm: Any = None):
        super().__init__(settings, lm)
        self.extra: dict[str, LogitsProcessor] = {}  # the chain's other members that are on (set by start)

    def start(self, ctx: RunContext) -> None:
        self.generator = torch.Generator().manual_seed(ctx.seed)  # XTC's coin: never the column's draw
        self.extra = self.settings.processors(self.lm, self.generator) if self.lm is not None else {}

    def decide(self, view: StepView) -> Decision:
        s = self.settings
        params = {"temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
                  "min_p": s.min_p, "repetition_penalty": s.repetition_penalty}
        params.update({name: getattr(s, name) for name in ("typical_p", "epsilon", "eta", "top_n_sigma")
                       if name in self.extra})
        if s.order:
            params["order"] = s.order
        return sample_decision(view.logits, view.input_ids, params, s.temperature, s.top_k, s.top_p,
                               s.min_p, s.repetition_penalty, extra=self.extra, order=s.links,
                               stages=[] if view.record_stages else None, likely=view.likely)
