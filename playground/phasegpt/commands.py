"""``python -m playground phasegpt train|eval|table|export``: the grid's runs, their evaluation, their table,
and the run that ships as the playground's ``phasegpt`` model."""
from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from ..errors import PlaygroundError
from ..tables import format_table
from . import grid
from .data import shakespeare
from .train import CHECKPOINT, evaluate, load_checkpoint, resume, write_result

DESCRIPTION = "PhaseGPT at CPU scale: train the grid's rows, evaluate them teacher-forced and causally, table them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (("train", "train (or resume) rows x seeds into the cache, then evaluate each"),
                       ("eval", "evaluate saved runs again, teacher-forced and causal"),
                       ("table", "print the grid's table from the saved results"),
                       ("export", "write a trained fixed-layer run as the shipped model (assets/phasegpt)")):
        q = sub.add_parser(name, help=text, description=text)
        if name == "export":
            q.add_argument("row", choices=[r for r, row in grid.ROWS.items() if row.phase_mode == "fixed"],
                           metavar="ROW", help="a fixed-layer row of the grid")
            q.add_argument("seed", type=int, metavar="SEED", help="its seed")
            continue
        if name != "table":
            q.add_argument("--rows", nargs="+", default=list(grid.ROWS), choices=list(grid.ROWS), metavar="ROW",
                           help=f"rows of the grid (default: all): {', '.join(grid.ROWS)}")
            q.add_argument("--seeds", nargs="+", type=int, default=list(grid.SEEDS), help="default: 0 1 2")
            q.add_argument("--causal-windows", type=int, default=grid.CAUSAL_WINDOWS,
                           help=f"validation windows scored both ways (default {grid.CAUSAL_WINDOWS})")
            q.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
        if name == "train":
            q.add_argument("--steps", type=int, default=None, help=f"training steps (default {grid.TRAINING.steps})")
            q.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each (default 1)")
        q.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    return {"train": _train, "eval": _eval, "table": _table, "export": _export}[args.action](args)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("row", "seed", "steps", "val_ppl", "subset_ppl_teacher_forced", "subset_ppl_causal", "R_token",
            "R_coupled", "collapsed", "train_seconds", "train_cpu_seconds")
    return {k: result[k] for k in keys}


def _print(results: list[dict[str, Any]], as_json: bool) -> None:
    rows = [_summary(r) for r in results]
    if as_json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no trained runs of these rows and seeds in {grid.runs_dir()}")
    else:
        print(format_table(rows, list(rows[0])))


def _train_one(row: str, seed: int, steps: int | None, threads: int, causal_windows: int,
               progress: bool) -> dict[str, Any]:
    torch.set_num_threads(threads)  # small models: one thread per run, runs side by side, uses cores best
    return grid.run_row(shakespeare(), grid.row_named(row), seed, steps, progress, causal_windows)


def _train(args: argparse.Namespace) -> int:
    work = [(row, seed) for row in args.rows for seed in args.seeds]
    shakespeare()  # fetch and check the corpus once, before any run starts
    if args.jobs <= 1:
        results = [_train_one(row, seed, args.steps, args.threads, args.causal_windows, True) for row, seed in work]
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_train_one, row, seed, args.steps, args.threads, args.causal_windows, False)
                       for row, seed in work]
            results = []
            for future in futures:
                results.append(future.result())
                print(f"done: {results[-1]['row']} seed {results[-1]['seed']}", flush=True)
    _print(results, args.json)
    return 0


def _eval(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    corpus, results = shakespeare(), []
    for row in args.rows:
        for seed in args.seeds:
            folder = grid.run_folder(row, seed)
            if not (folder / CHECKPOINT).is_file():
                continue  # never trained
            _, model_config, train_config = load_checkpoint(folder)
            state = resume(folder, model_config, train_config)
            result = {"row": row, "seed": seed, "steps": state.step, "model_config": model_config.to_dict(),
                      "parameters": sum(p.numel() for p in state.model.parameters()),
                      **evaluate(state, corpus, args.causal_windows)}
            write_result(folder, result)
            results.append(result)
    _print(results, args.json)
    return 0


def _table(args: argparse.Namespace) -> int:
    rows = grid.table_rows(grid.load_results())
    if args.json:
        print(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        print(f"no results yet in {grid.runs_dir()}: run `python -m playground phasegpt train`")
    else:
        print(format_table(rows, grid.TABLE_COLUMNS))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .causal_lm import export_checkpoint

    checkpoint = grid.run_folder(args.row, args.seed) / CHECKPOINT
    if not checkpoint.is_file():
        raise PlaygroundError(f"{args.row} seed {args.seed} is not trained: no {checkpoint}")
    print(f"wrote {export_checkpoint(checkpoint)} from {checkpoint}")
    return 0
