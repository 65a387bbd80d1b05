"""The sampler interface: what the engine shows a sampler each step, and what it gets back.

A sampler owns only its decision. The engine owns the loop, the KV cache, the random draws
and the telemetry. Per step the engine runs ONE batched forward pass; a sampler may ask for

* side rows (``extra_rows``): copies of its column's clean cache that it perturbs in place
  (``perturb``), fed the same token, and discarded after the step (Phase-Slip);
* candidate rows (``Decision.candidates``): each candidate token is fed as its own row of the
  next forward pass, and the sampler picks one from their outputs (``choose``; the adaptive
  sampler's lookahead). The chosen row simply becomes the column's row, so a lookahead costs
  extra rows, never an extra pass;
* attention weights (``needs_attentions``).

Stages. When the view asks for them (``StepView.record_stages``), a sampler lists in its Decision
the stages it really applied after the clean logits, in order (``Stage``): the tensors it computed
anyway, kept by reference, so the chain trace (traces.py) reads the very floats it drew from.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..errors import PlaygroundError, SettingsError, require  # noqa: F401  (the samplers' errors)


@dataclass
class StepView:
    """One column's evidence at one step, as its sampler sees it."""

    step: int  # index of the token being chosen (0 = first new token)
    logits: torch.Tensor  # [V] clean next-token logits, float32
    input_ids: torch.Tensor  # [n] prompt + generated tokens so far, int64
    n_prompt: int
    attentions: torch.Tensor | None = None  # [layers, heads, n] newest query's attention row
    extra_logits: torch.Tensor | None = None  # [n_extra, V] logits of the side rows
    record_stages: bool = False  # list the decision's stages in Decision.stages (the chain trace)
    likely: torch.Tensor | None = None  # the clean distribution's most likely token ids: where a top-k looks first


@dataclass
class Stage:
    """One stage of a sampler's decision: its name, its parameter, and the distribution after it.

    ``scores``: logits-like [V] whose softmax is that distribution; ``probs``: the distribution itself;
    both None: a stage that sets parameters and leaves the distribution as it was (α, a quadrant).
    ``side``: a distribution beside the chain, not a step of it (Phase-Slip's perturbed row).
    ``keeps_order``: a temperature, or a cut that keeps the most likely tokens: the order is as before.
    ``kept``: the ids, ascending, outside which the distribution is exactly 0, where the stage knows them
    (top-k's survivors, an argmax's token): the trace then reads the stage on them alone.
    """

    name: str
    param: str = ""
    scores: torch.Tensor | None = None
    probs: torch.Tensor | None = None
    side: bool = False
    keeps_order: bool = False
    kept: torch.Tensor | None = None


def argmax_token(logits: torch.Tensor) -> int:
    """The most likely token of ``logits`` [V], the first of tied ones: ``torch.max``'s index, which is
    ``argmax``'s, in about a third of its time on a CPU (22 against 63 µs over 49,152 floats)."""
    return int(torch.max(logits.view(-1), dim=0).indices)


def point_mass(like: torch.Tensor, token: int) -> torch.Tensor:
    """The distribution of a deterministic choice: 1 at ``token``, 0 elsewhere, shaped as ``like`` [V]."""
    probs = torch.zeros(like.shape[-1], dtype=torch.float32, device=like.device)
    probs[token] = 1.0
    return probs


def point_mass_stage(name: str, param: str, like: torch.Tensor, token: int) -> Stage:
    """The stage of a deterministic choice of ``token``: its point mass, kept on that token alone."""
    return Stage(name, param, probs=point_mass(like, token), kept=torch.tensor([token], device=like.device))


@dataclass
class Decision:
    """A sampler's answer for one step: probs, token or candidates (a token may bring its probs).

    A token with probs: the sampler chose it with draws of its own, and probs is the law it was
    chosen by (entropix's best of five); the row's sampler view is read from that law.
    """

    probs: torch.Tensor | None = None  # the engine draws from these with the column's generator
    support: torch.Tensor | None = None  # ids, ascending, outside which probs is 0, where the chain knows them
    token: int | None = None  # the sampler's own choice
    candidates: list[int] | None = None  # feed these as rows next step, then call choose()
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters in force
    signals: dict[str, Any] = field(default_factory=dict)  # telemetry: fusion_alpha, state, ...
    stages: list[Stage] = field(default_factory=list)  # after the clean logits, in order (record_stages)


@dataclass
class RunContext:
    """What a sampler may know about the run before its first step."""

    seed: int
    prompt_ids: torch.Tensor  # [n_prompt]


class Sampler:
    """Base class: subclasses set ``name``, ``Settings`` and implement ``decide``."""

    name: ClassVar[str]
    Settings: ClassVar[type]
    needs_attentions: ClassVar[bool] = False
    extra_rows: ClassVar[int] = 0

    def __init__(self, settings: Any = None, lm: Any = None):
        self.settings = settings if settings is not None else self.Settings()
        self.lm = lm

    def start(self, ctx: RunContext) -> None:
        """Reset per-run state (histories, generators of the sampler's own)."""

    def decide(self, view: StepView) -> Decision:
        raise NotImplementedError

    def perturb(self, values: list[torch.Tensor], n_prompt: int, step: int) -> int:
        """Change the side row's Value vectors in place; values[l] is [kv_heads, seq, head_dim].

        Returns how many trailing positions may now differ from the clean row.
        """
        return 0

    def side_layer(self) -> int:
        """The lowest decoder layer where the side rows may differ from the clean row (0: any).

        Below it a side row computes its clean row's states, so the engine may leave it out of the
        pass there; its cache at those layers is then its clean row's, and ``perturb`` leaves it alone.
        """
        return 0

    def choose(self, views: list[StepView]) -> tuple[int, dict[str, Any]]:
        """Pick one of the candidates asked for last step, from their rows' outputs."""
        raise NotImplementedError

    def update(self, token: int, sampler_prob: float) -> dict[str, Any]:
        """After the draw: the token the column took and its probability under the sampler's distribution.

        Returns telemetry for that token's row (``extra``); a sampler with feedback (mirostat) moves here.
        """
        return {}


# ---------------------------------------------------------------------------------------
# Settings: dataclasses whose fields are typed; overrides arrive as strings from the CLI/UI.


def setting(default: Any, help: str) -> Any:
    """A Settings field with its one-line help: what it does, and the value that turns it off."""
    return field(default=default, metadata={"help": help})


def _coerce(value: Any, kind: Any, key: str) -> Any:
    if isinstance(kind, str):  # postponed annotations
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind.split("|")[0].strip(), str)
    origin = typing.get_origin(kind)
    if origin is not None:  # Optional[...] / X | None: take the first concrete type
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if not isinstance(value, str):
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, bool):
            raise SettingsError(f"{key} must be an integer, got {value!r}")
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, kind):
            return value
        raise SettingsError(f"{key} must be {kind.__name__}, got {value!r}")
    text = value.strip()
    try:
        if kind is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float:
            return float(text)
    except ValueError:
        raise SettingsError(f"{key} must be {kind.__name__}, got {value!r}") from None
    return text


def build_settings(cls: type, overrides: dict[str, Any] | None = None, prefix: str = "") -> Any:
    """Make a settings dataclass from string or typed overrides, naming any bad key or value."""
    overrides = dict(overrides or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        known = f"known: {', '.join(prefix + n for n in names)}" if names else "this sampler has no settings"
        raise SettingsError(f"unknown setting {prefix}{unknown[0]}; {known}")
    values = {k: _coerce(v, hints[k], prefix + k) for k, v in overrides.items()}
    return cls(**values)

