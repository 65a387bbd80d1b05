"""The sampler registry: name -> class. Each sampler owns only its decision."""
from __future__ import annotations

import dataclasses
from typing import Any

from .adaptive import AdaptiveEntropySampler
from .base import Decision, PlaygroundError, RunContext, Sampler, SettingsError, StepView, build_settings
from .entropix import EntropixSampler
from .greedy import GreedySampler
from .mirostat import MirostatSampler
from .phase_slip import PhaseSlip
from .temperature import TemperatureSampler

SAMPLERS: dict[str, type[Sampler]] = {
    GreedySampler.name: GreedySampler,
    TemperatureSampler.name: TemperatureSampler,
    PhaseSlip.name: PhaseSlip,
    AdaptiveEntropySampler.name: AdaptiveEntropySampler,
    MirostatSampler.name: MirostatSampler,
    EntropixSampler.name: EntropixSampler,
}


def sampler_class(name: str) -> type[Sampler]:
    """The class registered under ``name``, or a SettingsError listing the known ones."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise SettingsError(f"unknown sampler {name!r}; available: {', '.join(SAMPLERS)}") from None


def make_settings(name: str, overrides: dict[str, Any] | None = None) -> Any:
    """Validated settings of sampler ``name`` with ``overrides`` applied."""
    return build_settings(sampler_class(name).Settings, overrides, prefix=f"{name}.")


def changed_settings(name: str, settings: Any) -> dict[str, Any]:
    """The settings of sampler ``name`` that differ from its defaults, in field order."""
    defaults = sampler_class(name).Settings()
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)
            if getattr(settings, f.name) != getattr(defaults, f.name)}


def describe_settings(changes: dict[str, Any]) -> str:
    """``temperature=0.55, top_k=0``; "defaults" when nothing differs."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in changes.items()) or "defaults"


__all__ = ["SAMPLERS", "Decision", "PlaygroundError", "RunContext", "Sampler", "SettingsError",
           "StepView", "changed_settings", "describe_settings", "make_settings", "sampler_class"]
