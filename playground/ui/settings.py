"""The page's sampler settings, generically from each registered sampler's Settings dataclass.

A SettingField is one control of the page; ``column_specs`` turns the chosen samplers and the
controls' values into the engine's ColumnSpecs (an empty control means the default).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ..engine import ColumnSpec, parse_columns
from ..samplers import SAMPLERS, PlaygroundError, sampler_class


@dataclasses.dataclass(frozen=True)
class SettingField:
    sampler: str
    name: str
    kind: type  # bool, int, float or str
    default: Any
    help: str | None = None

    @property
    def key(self) -> str:
        return f"{self.sampler}.{self.name}"


def _kind(hint: Any) -> type:
    if typing.get_origin(hint) is not None:  # Optional[X] / X | None
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), str)
    return hint if hint in (bool, int, float) else str


def setting_fields() -> list[SettingField]:
    """Every setting of every registered sampler, in registry then field order."""
    out = []
    for name, cls in SAMPLERS.items():
        hints = typing.get_type_hints(cls.Settings)
        for f in dataclasses.fields(cls.Settings):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out.append(SettingField(name, f.name, _kind(hints[f.name]), default, f.metadata.get("help")))
    return out


def column_specs(samplers: list[str] | None, fields: list[SettingField], values: list[Any]) -> list[ColumnSpec]:
    """One ColumnSpec per chosen sampler, with the settings from the page (empty boxes: default)."""
    for name in samplers or []:
        sampler_class(name)  # an unknown name: an error naming it and the available ones
    chosen = [s for s in SAMPLERS if s in (samplers or [])]  # registry order, whatever the click order
    overrides: dict[str, dict[str, Any]] = {s: {} for s in chosen}
    for f, value in zip(fields, values):
        if f.sampler in overrides and value is not None and value != "":
            overrides[f.sampler][f.name] = value
    return parse_columns([ColumnSpec(s, overrides[s]) for s in chosen])  # none chosen: a clear error


def _integer(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaygroundError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise PlaygroundError(f"{name} must be an integer, got {value!r}")
    return int(number)
