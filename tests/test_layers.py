"""The package's import rule: layers bottom up, no upward import, no circle.

    pure functions   errors, telemetry, metrics, kuramoto, rotation, plots, prompts, tables, timing, inputs,
                     precision, progress, draw, samples
    models           attention, cache, kernels, openmp, norms, model_changes, model_source, devices, baseline,
                     model_args, models, phasegpt.model and phasegpt.causal_lm (the shipped PhaseGPT)
    samplers         samplers/*, calibration, columns, traces, divergence   (a sampler knows only its
                     StepView/Decision contract; a trace reads the stages a Decision lists)
    engine           rows, runs, shared_loop, engine
    front ends       facades, cli, explain, bench, bench_quality, kuramoto_report, phasegpt/*, ui/*, the package itself

A module may import its own layer and the layers below it. Every import counts, those inside
functions too (a lazy import is how a circle hides).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "playground"

LAYERS = [
    ("pure functions", {"errors", "telemetry", "metrics", "kuramoto", "rotation", "plots", "prompts", "tables",
                        "timing", "inputs", "precision", "progress", "draw", "samples"}),
    ("models", {"attention", "cache", "kernels", "openmp", "norms", "model_changes", "model_source", "devices",
                "baseline", "model_args", "models", "phasegpt.model", "phasegpt.causal_lm"}),
    ("samplers", {"samplers", "calibration", "columns", "traces", "divergence"}),
    ("engine", {"rows", "runs", "shared_loop", "engine"}),
    ("front ends", {"facades", "cli", "explain", "bench", "bench_quality", "kuramoto_report", "phasegpt", "ui",
                    "__init__", "__main__"}),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(name: str) -> int:
    """The layer of the longest of ``name``'s dotted prefixes that LAYERS names (a module, else its package)."""
    parts = name.split(".")
    for prefix in (".".join(parts[:n]) for n in range(len(parts), 0, -1)):
        for i, (_, members) in enumerate(LAYERS):
            if prefix in members:
                return i
    raise AssertionError(f"playground/{name}: no layer; add it to LAYERS in tests/test_layers.py")


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.startswith("playground"):
                target = node.module.removeprefix("playground").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import kuramoto` imports a module
                sub = f"{target}.{alias.name}" if target else alias.name
                found.add(sub if sub in known else target or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("playground."):
                    found.add(alias.name.removeprefix("playground."))
    return {m for m in found if m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: {t for t in imports(name, path, known) if t in known} for name, path in mods.items()}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in graph().items() for b in targets
              if layer_of(b) > layer_of(a) and not b.startswith(a + ".")]
    assert upward == []


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt.startswith(node + ".") and node in ("samplers", "ui"):
                continue  # a package's __init__ gathering its own modules is not a circle
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_the_rule_sees_an_upward_import(tmp_path, monkeypatch):
    """The walker is not blind: a sampler that imports the engine is caught."""
    edges = graph()
    assert "engine" in edges and any(t.startswith("samplers") for t in edges["engine"])
    fake = {"samplers.toy": {"engine"}}
    bad = [(a, b) for a, ts in fake.items() for b in ts if layer_of(b) > layer_of(a)]
    assert bad == [("samplers.toy", "engine")]


@pytest.mark.parametrize("module", ["kuramoto", "telemetry", "metrics"])
def test_pure_modules_import_no_model_or_sampler(module):
    assert all(layer_of(t) == 0 for t in graph()[module])


def test_the_help_lists_every_command_with_a_line_of_description(capsys):
    from playground import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for name, (description, _, _) in cli.commands().items():
        assert name in text and description.split()[0] in text
        assert len(description) > 20 and "\n" not in description
    assert set(cli.commands()) == {"compare", "presets", "calibrate", "explain", "bench", "kuramoto-report",
                                   "phasegpt"}


def test_only_model_changes_reassigns_a_class():
    """Every change made to a stock model is in model_changes.py: no other module swaps an object's class."""
    swapping = sorted(name for name, path in modules().items()
                      if "__class__ =" in path.read_text(encoding="utf-8"))
    assert swapping == ["model_changes"]
