"""A column is a sampler, its settings and a label; a preset is a named column; a sweep is one column per value.

    text form   temperature:temperature=1.3,min_p=0.1,label=hot   (CLI --column, the page's column list)
    dict form   {"sampler": "temperature", "settings": {"temperature": 1.3}, "label": "hot"}   (HTTP, links, JSON)
    label       the typed one, else what differs from the sampler's defaults:
                "temperature · temperature=1.3, min_p=0.1"; the sampler's bare name when nothing does
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import PlaygroundError, SettingsError
from .samplers import SAMPLERS, changed_settings, describe_settings, make_settings
from .samplers.temperature import TEMPERATURE_LAST

MAX_COLUMNS = 8


@dataclass
class ColumnSpec:
    """One column to run: a sampler name, its setting overrides and (optionally) a typed label."""

    sampler: str
    settings: dict[str, Any] = field(default_factory=dict)
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "settings": dict(self.settings), "label": self.label}


def auto_label(sampler: str, settings: Any) -> str:
    """``temperature · min_p=0.1, top_p=1``: the sampler and what differs from its defaults."""
    changes = changed_settings(sampler, settings)
    return f"{sampler} · {describe_settings(changes)}" if changes else sampler


def column_labels(specs: list[ColumnSpec]) -> list[str]:
    """Each column's label (typed, else ``auto_label``), made unique with " #2", " #3"... on repeats."""
    labels, seen = [], {}
    for spec in specs:
        label = (spec.label or "").strip() or auto_label(spec.sampler, make_settings(spec.sampler, spec.settings))
        seen[label] = seen.get(label, 0) + 1
        labels.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return labels


def check_columns(specs: list[ColumnSpec]) -> list[ColumnSpec]:
    """1..MAX_COLUMNS columns with known samplers and valid settings; errors name the column."""
    if not specs:
        raise PlaygroundError("choose at least one sampler or preset (one column each)")
    if len(specs) > MAX_COLUMNS:
        raise PlaygroundError(f"at most {MAX_COLUMNS} columns per run, got {len(specs)}")
    for i, spec in enumerate(specs, 1):
        try:
            make_settings(spec.sampler, spec.settings)
        except PlaygroundError as exc:
            raise type(exc)(f"column {i}: {exc}") from None
    return specs


# ---- the text form --------------------------------------------------------------------------


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and quotes, so JSON values (``["\\n", ":"]``) keep their commas."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_settings_text(text: str, where: str = "settings") -> dict[str, str]:
    """``temperature=0.5, top_k=0`` -> {"temperature": "0.5", "top_k": "0"} (values typed later)."""
    out: dict[str, str] = {}
    for item in split_top_level(text or ""):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SettingsError(f"{where}: {item!r} is not KEY=VALUE (e.g. temperature=0.5)")
        out[key.strip()] = value.strip()
    return out


def parse_column(text: str) -> ColumnSpec:
    """``SAMPLER[:KEY=VALUE,...]`` with the reserved key ``label``; a bad part is named in a SettingsError."""
    sampler, _, rest = text.strip().partition(":")
    sampler = sampler.strip()
    if sampler not in SAMPLERS:
        raise SettingsError(f"column {text!r}: unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
    settings: dict[str, Any] = parse_settings_text(rest, f"column {text!r}")
    label = settings.pop("label", None)
    spec = ColumnSpec(sampler, settings, label)
    try:
        make_settings(sampler, settings)
    except PlaygroundError as exc:
        raise SettingsError(f"column {text!r}: {exc}") from None
    return spec


def format_settings(settings: dict[str, Any]) -> str:
    """The inverse of ``parse_settings_text``: ``temperature=0.5, top_k=0``."""
    def text(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:g}"
        return json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return ", ".join(f"{k}={text(v)}" for k, v in settings.items())


def column_from_dict(data: Any, where: str = "column") -> ColumnSpec:
    """A ColumnSpec from ``{"sampler", "settings", "label"}`` (HTTP, share links, run JSON)."""
    if not isinstance(data, dict) or not isinstance(data.get("sampler"), str):
        raise SettingsError(f'{where} must be an object like {{"sampler": "temperature", "settings": {{}}}}, '
                            f"got {data!r}")
    unknown = sorted(set(data) - {"sampler", "settings", "label"})
    if unknown:
        raise SettingsError(f"{where}: unknown key {unknown[0]!r} (known: sampler, settings, label)")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise SettingsError(f"{where}: settings must be an object, got {settings!r}")
    label = data.get("label")
    if label is not None and not isinstance(label, str):
        raise SettingsError(f"{where}: label must be a string, got {label!r}")
    spec = ColumnSpec(data["sampler"].strip(), dict(settings), label or None)
    try:
        make_settings(spec.sampler, spec.settings)
    except PlaygroundError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    return spec


def columns_from_json(text: str) -> list[ColumnSpec]:
    """A JSON list of column objects (``/compare``'s ``columns``, share links' ``columns``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f'columns must be a JSON list like [{{"sampler": "temperature", "settings": '
                            f'{{"temperature": 0.5}}}}]: {exc}') from None
    if not isinstance(data, list):
        raise SettingsError(f"columns must be a JSON list of objects, got {type(data).__name__}")
    return check_columns([column_from_dict(d, f"column {i}") for i, d in enumerate(data, 1)])


# ---- sweeps ---------------------------------------------------------------------------------


def sweep(spec: ColumnSpec, key: str, values: list[Any]) -> list[ColumnSpec]:
    """One copy of ``spec`` per value of setting ``key``, each labelled with its value (even a default one)."""
    if not values:
        raise SettingsError(f"sweep of {spec.sampler}.{key}: give at least one value")
    out = []
    for value in values:
        settings = {**spec.settings, key: value}
        typed = make_settings(spec.sampler, settings)  # a bad key or value: a SettingsError naming it
        if spec.label:
            label = f"{spec.label} · {describe_settings({key: getattr(typed, key)})}"
        else:
            changes = changed_settings(spec.sampler, typed) | {key: getattr(typed, key)}
            order = list(dataclasses.asdict(typed))
            ordered = dict(sorted(changes.items(), key=lambda kv: order.index(kv[0])))
            label = f"{spec.sampler} · {describe_settings(ordered)}"
        out.append(ColumnSpec(spec.sampler, settings, label))
    return out


def parse_sweep(text: str) -> tuple[str, str, list[str]]:
    """``temperature.temperature=0.5,0.8,1.1`` -> ("temperature", "temperature", ["0.5", "0.8", "1.1"])."""
    target, eq, values = text.partition("=")
    sampler, dot, key = target.strip().partition(".")
    if not eq or not dot or not key.strip() or sampler not in SAMPLERS:
        raise SettingsError(f"--sweep {text!r}: expected SAMPLER.KEY=V1,V2,... with a known sampler "
                            f"({', '.join(SAMPLERS)}), e.g. temperature.temperature=0.5,0.8,1.1")
    return sampler, key.strip(), split_top_level(values)


# ---- presets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A named column, with what it is in one line."""

    name: str
    description: str
    sampler: str
    settings: tuple[tuple[str, Any], ...] = ()

    def spec(self) -> ColumnSpec:
        return ColumnSpec(self.sampler, dict(self.settings), self.name)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("greedy", "the argmax at every step: the control", "greedy"),
    Preset("phase-slip-benchmark-baseline", "the public Phase-Slip benchmark's baseline: T 0.8, top-k 40, top-p 0.92",
           "temperature", (("temperature", 0.8), ("top_k", 40), ("top_p", 0.92))),
    Preset("phase-slip-benchmark", "the public Phase-Slip benchmark's Phase-Slip: ε 0.03, T 0.65, top-k 40, "
           "top-p 0.92, calibrated heads", "phase_slip", (("temperature", 0.65),)),
    Preset("min-p-0.1", "min-p 0.1 at T = 1, nothing else truncating (top-k 0, top-p 1)", "temperature",
           (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("min_p", 0.1))),
    Preset("top-p-0.9", "nucleus sampling: top-p 0.9 at T = 1 (top-k 0)", "temperature",
           (("temperature", 1.0), ("top_k", 0), ("top_p", 0.9))),
    Preset("alphasampler", "the public AlphaSampler's defaults: raw α per token (no smoothing), COLD lookahead on",
           "adaptive_entropy", (("smoothing_window", 1),)),
    Preset("min-p-0.05-dry-0.8", "min-p 0.05 at T = 1 with DRY 0.8 (base 1.75, allowed length 2)", "temperature",
           (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("min_p", 0.05), ("dry_multiplier", 0.8))),
    Preset("xtc-0.1-0.5-min-p-0.02", "XTC threshold 0.1, probability 0.5, at min-p 0.02 and T = 1", "temperature",
           (("temperature", 1.0), ("top_k", 0), ("top_p", 1.0), ("min_p", 0.02), ("xtc_threshold", 0.1),
            ("xtc_probability", 0.5))),
    Preset("top-n-sigma-1-t-1.5", "top-nσ 1.0 at T = 1.5: a hot temperature the σ cut keeps coherent", "temperature",
           (("temperature", 1.5), ("top_k", 0), ("top_p", 1.0), ("top_n_sigma", 1.0))),
    Preset("temperature-last", "min-p 0.1 and T 1.5 with temperature after the truncations, as "
           "text-generation-webui's temperature_last (top-k 0, top-p 1)", "temperature",
           (("temperature", 1.5), ("top_k", 0), ("top_p", 1.0), ("min_p", 0.1), ("order", TEMPERATURE_LAST))),
    Preset("mirostat-5", "mirostat v2 at τ = 5 bits, η 0.1", "mirostat", (("tau", 5.0),)),
    Preset("entropix", "entropix's quadrant sampler with the public torch port's defaults (T 0.666, top-k 27, "
           "top-p 0.9), its defects fixed", "entropix"),
)}


def preset(name: str) -> ColumnSpec:
    """The column of preset ``name``, or a SettingsError listing the presets."""
    try:
        return PRESETS[name.strip()].spec()
    except KeyError:
        raise SettingsError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None
