"""Sampler playground: one prompt through several samplers side by side, with per-token telemetry.

    from playground import load_model, compare
    run = compare(load_model(), "The ancient door creaked open", ["greedy", "temperature"], seed=0)
    print(run.to_json()["columns"][0]["text"])
"""
from .engine import ColumnSpec, Engine, Parent, Run, RunOptions, branch, compare
from .models import ModelLoadError, load_model
from .samplers import SAMPLERS, PlaygroundError, SettingsError

__all__ = ["ColumnSpec", "Engine", "ModelLoadError", "Parent", "PlaygroundError", "Run", "RunOptions", "SAMPLERS",
           "SettingsError", "branch", "compare", "load_model"]
