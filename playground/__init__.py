"""Sampler playground: one prompt through several samplers side by side, with per-token telemetry.

    from playground import load_model, compare
    run = compare(load_model(), "The ancient door creaked open", ["greedy", "temperature"], seed=0)
    print(run.to_json()["columns"][0]["text"])
    print(run.divergences()[0].sentence)        # where the two columns part, and why
    print(trace(None, run, column=1, step=0))   # every stage of column 2's first decision
"""
from .engine import ColumnSpec, Engine, Parent, Run, RunOptions, branch, compare
from .explain import trace
from .models import ModelLoadError, load_model
from .samplers import SAMPLERS, PlaygroundError, SettingsError

__all__ = ["ColumnSpec", "Engine", "ModelLoadError", "Parent", "PlaygroundError", "Run", "RunOptions", "SAMPLERS",
           "SettingsError", "branch", "compare", "load_model", "trace"]
