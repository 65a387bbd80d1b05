"""Library facades: Phase-Slip's public Python API (``PhaseSlipSampler``), as a front end of the playground's engine.

    from playground.facades import PhaseSlipSampler
    sampler = PhaseSlipSampler(model, tokenizer, noise_scale=0.03)
    text = sampler.generate("The ancient door creaked open", max_new_tokens=50)
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from .calibration import Head, calibrate_heads
from .engine import ColumnSpec, Engine, RunOptions
from .models import LoadedModel
from .samplers.base import build_settings
from .samplers.phase_slip import PhaseSlip, PhaseSlipSettings, check_against_model, format_heads


class PhaseSlipSampler:
    """``PhaseSlipSampler(model, tokenizer, noise_scale=..., ...)`` as in the public README.

    ``generate`` returns the continuation (prompt excluded); ``seed`` makes it reproducible.
    """

    def __init__(self, model: Any, tokenizer: Any = None, noise_scale: float = 0.03,
                 logit_fusion_alpha: float = 0.45, perturbation_window: int = 12, **settings: Any):
        if isinstance(model, LoadedModel):
            self.lm = model
        else:
            name = getattr(model.config, "name_or_path", "") or type(model).__name__
            self.lm = LoadedModel(model=model, tokenizer=tokenizer, name=name)
        self.settings: PhaseSlipSettings = build_settings(
            PhaseSlipSettings, {"noise_scale": noise_scale, "logit_fusion_alpha": logit_fusion_alpha,
                                "perturbation_window": perturbation_window, **settings}, prefix="phase_slip.")
        check_against_model(self.settings, self.lm)

    def calibrate_heads(self, prompt: str | None = None, search_layers: int = 6,
                        n_heads: int | None = None) -> list[Head]:
        """Calibrate on ``prompt`` (see playground.calibration) and use those heads from now on."""
        settings = replace(self.settings, search_layers=search_layers, n_heads=n_heads or self.settings.n_heads,
                           heads="")
        check_against_model(settings, self.lm)
        result = calibrate_heads(self.lm, prompt, search_layers=settings.search_layers,
                                 n_heads=settings.n_heads, window=settings.perturbation_window)
        self.settings = replace(settings, heads=format_heads(result.heads))
        return result.heads

    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.65, seed: int = 0) -> str:
        settings = asdict(replace(self.settings, temperature=temperature))
        spec = ColumnSpec(PhaseSlip.name, settings)
        options = RunOptions(seed=seed, max_new_tokens=max_new_tokens, record_order_parameter=False)
        return Engine(self.lm).run(prompt, [spec], options).columns[0].text
