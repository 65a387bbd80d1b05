"""The page's column list: a table whose rows are ColumnSpecs, and the edits its buttons make.

    row      [#, sampler, settings, label]   settings in the text form "temperature=0.5, top_k=0"
             (empty: the sampler's defaults); label empty: made from what differs (columns.auto_label)
    edits    add (a sampler or a preset), duplicate, remove, sweep: each reads the table as the
             browser has it and returns the new table, so nothing typed is lost between two clicks
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from ..columns import (MAX_COLUMNS, PRESETS, ColumnSpec, check_columns, format_settings, parse_settings_text,
                       split_top_level, sweep)
from ..errors import PlaygroundError, SettingsError
from ..samplers import SAMPLERS

HEADERS = ["#", "sampler", "settings", "label"]


@dataclasses.dataclass(frozen=True)
class SettingField:
    """One setting of one registered sampler: its type, default and one-line help."""

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


# ---- table rows <-> ColumnSpecs -----------------------------------------------------------------


def table_rows(specs: list[ColumnSpec]) -> list[list[str]]:
    """The table for these columns; every cell a string (the table sends back what it was given)."""
    return [[str(i), s.sampler, format_settings(s.settings), s.label or ""] for i, s in enumerate(specs, 1)]


def _cells(table: Any) -> list[list[str]]:
    """[sampler, settings, label] per row of the table's value (a DataFrame, a list of lists, or None)."""
    if table is None:
        return []
    rows = table.values.tolist() if hasattr(table, "values") else (table.get("data", []) if isinstance(table, dict)
                                                                     else table)
    out = []
    for row in rows:
        cells = ["" if v is None else str(v).strip() for v in list(row)[1:4]]
        cells += [""] * (3 - len(cells))
        if any(cells):
            out.append(cells)
    return out


def table_specs(table: Any, check: bool = True) -> list[ColumnSpec]:
    """The table's columns as ColumnSpecs; a bad cell is a PlaygroundError naming its column."""
    specs = []
    for i, (sampler, settings, label) in enumerate(_cells(table), 1):
        if sampler not in SAMPLERS:
            raise SettingsError(f"column {i}: unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
        specs.append(ColumnSpec(sampler, parse_settings_text(settings, f"column {i}"), label or None))
    return check_columns(specs) if check else specs


DEFAULT_SAMPLERS = ("greedy", "temperature", "phase_slip", "adaptive_entropy")


def default_specs() -> list[ColumnSpec]:
    """The page opens with the four original samplers at their defaults, one column each (later ones: Add)."""
    return [ColumnSpec(name) for name in DEFAULT_SAMPLERS if name in SAMPLERS]


def add_choices() -> list[tuple[str, str]]:
    """The "add a column" menu: each sampler at its defaults, then each preset with its description."""
    return ([(f"{name} (defaults)", f"sampler:{name}") for name in SAMPLERS]
            + [(f"preset {p.name}: {p.description}", f"preset:{p.name}") for p in PRESETS.values()])


def _room(specs: list[ColumnSpec], more: int) -> None:
    if len(specs) + more > MAX_COLUMNS:
        raise PlaygroundError(f"at most {MAX_COLUMNS} columns per run; remove one first")


def _index(specs: list[ColumnSpec], number: Any) -> int:
    try:
        index = int(float(number)) - 1
    except (TypeError, ValueError):
        index = -1
    if not 0 <= index < len(specs):
        raise PlaygroundError(f"choose a column number in 1..{len(specs)}, got {number!r}")
    return index


def add_column(table: Any, choice: str) -> list[list[str]]:
    """Append a sampler at its defaults ("sampler:NAME") or a preset ("preset:NAME")."""
    specs = table_specs(table, check=False)
    kind, _, name = (choice or "").partition(":")
    if kind == "sampler" and name in SAMPLERS:
        new = ColumnSpec(name)
    elif kind == "preset" and name in PRESETS:
        new = PRESETS[name].spec()
    else:
        raise PlaygroundError("choose a sampler or a preset to add")
    _room(specs, 1)
    return table_rows(specs + [new])


def duplicate_column(table: Any, number: Any) -> list[list[str]]:
    """Insert a copy of column ``number`` right after it."""
    specs = table_specs(table, check=False)
    i = _index(specs, number)
    _room(specs, 1)
    return table_rows(specs[:i + 1] + [dataclasses.replace(specs[i], settings=dict(specs[i].settings))] + specs[i + 1:])


def remove_column(table: Any, number: Any) -> list[list[str]]:
    specs = table_specs(table, check=False)
    i = _index(specs, number)
    if len(specs) == 1:
        raise PlaygroundError("a run needs at least one column")
    return table_rows(specs[:i] + specs[i + 1:])


def sweep_column(table: Any, number: Any, text: str) -> list[list[str]]:
    """Replace column ``number`` by one column per value: ``temperature = 0.5, 0.8, 1.1``."""
    specs = table_specs(table, check=False)
    i = _index(specs, number)
    key, eq, values = (text or "").partition("=")
    if not eq or not key.strip() or not values.strip():
        raise PlaygroundError(f"sweep: write SETTING = V1, V2, ... (e.g. temperature = 0.5, 0.8, 1.1), got {text!r}")
    swept = sweep(specs[i], key.strip(), split_top_level(values))
    _room(specs, len(swept) - 1)
    return table_rows(specs[:i] + swept + specs[i + 1:])


def reference_markdown() -> str:
    """The presets and every sampler's settings (default, what it does), for the page's reference."""
    lines = ["**Presets** (add one from the menu above)", "", "| preset | column | what it is |", "|---|---|---|"]
    for p in PRESETS.values():
        lines.append(f"| `{p.name}` | `{p.sampler}: {format_settings(dict(p.settings))}` | {p.description} |")
    lines += ["", "**Settings** (write them in a column's settings cell, e.g. `temperature=0.5, top_k=0`; "
              "an empty cell is the sampler's defaults)", "", "| sampler | setting | default | what it does |",
              "|---|---|---|---|"]
    for f in setting_fields():
        lines.append(f"| {f.sampler} | `{f.name}` | `{f.default!r}` | {f.help or ''} |")
    return "\n".join(lines)


def integer_value(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PlaygroundError(f"{name} must be an integer, got {value!r}") from None
    if not number.is_integer():
        raise PlaygroundError(f"{name} must be an integer, got {value!r}")
    return int(number)
