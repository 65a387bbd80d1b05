"""PhaseGPT's Phase A rows at CPU scale, each trained per seed into the cache, and their table.

The scale against PhaseGPT's (12 blocks x 768 wide, 12 heads, 512 characters of context, 20 epochs):
7 blocks x 64 wide, 4 heads, 64 characters of context, the phase layer in block index 4 of 7 (57% depth,
PhaseGPT's 7 of 12 is 58%), N oscillators per head as published, about 2 epochs of the 1.0 M training
characters. The oscillator settings (N, K, 10 steps of dt 0.1, the controls) are PhaseGPT's.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import PlaygroundError
from ..kuramoto import CouplingSettings
from .data import CharCorpus, phasegpt_dir
from .model import ModelConfig
from .train import TrainConfig, evaluate, train, write_result

SHAPE = {"n_layer": 7, "n_head": 4, "n_embd": 64, "block_size": 64}
TRAINING = TrainConfig(steps=1200, batch_size=32)
CAUSAL_WINDOWS = 256  # validation windows scored both ways (16 384 characters)
SEEDS = (0, 1, 2)
CONTROLS = {"noise_sigma": 0.03, "frequency_jitter": 0.02, "regulariser_weight": 0.1, "target_R": 0.45,
            "regulariser_mode": "ceiling"}


@dataclass(frozen=True)
class Row:
    """One configuration of the grid: its phase layer (None: the baseline) and oscillator settings."""

    name: str
    description: str
    phase_mode: str | None = None
    coupling: dict[str, Any] = field(default_factory=dict)

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, phase_mode=self.phase_mode,
                           coupling=CouplingSettings(**self.coupling), **SHAPE)


ROWS = {row.name: row for row in (
    Row("baseline", "attention in every block"),
    Row("fixed-k1", "fixed layer, N = 32, K = 1", "fixed", {"n_oscillators": 32, "coupling": 1.0}),
    Row("fixed-k2", "fixed layer, N = 32, K = 2", "fixed", {"n_oscillators": 32, "coupling": 2.0}),
    Row("fixed-n16", "fixed layer, N = 16, K = 1", "fixed", {"n_oscillators": 16, "coupling": 1.0}),
    Row("fixed-n64", "fixed layer, N = 64, K = 1", "fixed", {"n_oscillators": 64, "coupling": 1.0}),
    Row("public-k1", "public layer, N = 32, K = 1", "public", {"n_oscillators": 32, "coupling": 1.0}),
    Row("fixed-controls", "fixed layer, N = 32, K = 1, noise 0.03, jitter 0.02, R ceiling 0.45 (weight 0.1)",
        "fixed", {"n_oscillators": 32, "coupling": 1.0, **CONTROLS}),
)}


def row_named(name: str) -> Row:
    if name not in ROWS:
        raise PlaygroundError(f"unknown row {name!r}; rows: {', '.join(ROWS)}")
    return ROWS[name]


def runs_dir() -> Path:
    return phasegpt_dir() / "runs"


def run_folder(row: str, seed: int) -> Path:
    return runs_dir() / f"{row}-seed{seed}"


def training_config(seed: int, steps: int | None = None) -> TrainConfig:
    return replace(TRAINING, seed=seed, steps=steps or TRAINING.steps)


def run_row(corpus: CharCorpus, row: Row, seed: int, steps: int | None = None, progress: bool = True,
            causal_windows: int = CAUSAL_WINDOWS) -> dict[str, Any]:
    """Train (or resume) one row for one seed, evaluate it both ways, save and return its result."""
    folder = run_folder(row.name, seed)
    model_config = row.model_config(len(corpus.vocab))
    state = train(corpus, model_config, training_config(seed, steps), folder, progress=progress)
    result = {"row": row.name, "seed": seed, "steps": state.step, "model_config": model_config.to_dict(),
              "parameters": sum(p.numel() for p in state.model.parameters()),
              **evaluate(state, corpus, causal_windows)}
    write_result(folder, result)
    return result


def load_results(folder: Path | None = None) -> list[dict[str, Any]]:
    """Every saved result.json under the runs folder."""
    folder = folder or runs_dir()
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*/result.json"))]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per row (in grid order): seeds, perplexities mean ± sd over seeds, mean R per token, collapses."""
    rows = []
    for name, row in ROWS.items():
        mine = [r for r in results if r["row"] == name]
        if not mine:
            continue
        r_token = [r["R_token"] for r in mine if r["R_token"] is not None]
        r_coupled = [r["R_coupled"] for r in mine if r["R_coupled"] is not None]
        rows.append({"row": name, "seeds": len(mine), "steps": mine[0]["steps"],
                     "val ppl": _mean_sd([r["val_ppl"] for r in mine]),
                     "subset teacher-forced": _mean_sd([r["subset_ppl_teacher_forced"] for r in mine]),
                     "subset causal": _mean_sd([r["subset_ppl_causal"] for r in mine]),
                     "R token": _mean_sd(r_token), "R coupled": _mean_sd(r_coupled),
                     "collapsed": f"{sum(bool(r['collapsed']) for r in mine)}/{len(mine)}",
                     "train CPU s": _mean_sd([r["train_cpu_seconds"] for r in mine])})  # wall time counts neighbours
    return rows


TABLE_COLUMNS = ["row", "seeds", "steps", "val ppl", "subset teacher-forced", "subset causal", "R token",
                 "R coupled", "collapsed", "train CPU s"]
