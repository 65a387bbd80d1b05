"""Seeded, resumable training of the character GPT, and its validation: teacher-forced and causal.

Training: AdamW, linear warm-up then cosine decay, gradient clipping; random windows of the training
text from a seeded generator. A checkpoint holds the model, the optimiser, both random states and the
history, so a run stopped at any checkpoint continues bit for bit.

Validation, on non-overlapping windows of the validation text:
    teacher-forced  one forward per window, position i scored from the logits at i (the usual figure);
    causal          position i scored from a forward over the window's prefix 0..i alone, so no position
                    sees a later one (what the model achieves when it generates).
For a causal model the two are equal by construction; for the public phase layer the gap is the leak.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import kuramoto
from ..errors import PlaygroundError, require
from .data import CharCorpus
from .model import CharGPT, ModelConfig

CHECKPOINT = "checkpoint.pt"
COLLAPSE_RATIO = 1.25  # final validation perplexity this far above the best seen in training: collapsed


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    min_learning_rate: float = 2e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 250
    eval_windows: int = 16  # validation windows scored for the curve during training
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        require(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        require(self.eval_every >= 1 and self.checkpoint_every >= 1, "eval_every and checkpoint_every must be >= 1")

    def learning_rate_at(self, step: int) -> float:
        """Linear warm-up to learning_rate, then cosine decay to min_learning_rate at ``steps``."""
        if step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - self.warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return self.min_learning_rate + cosine * (self.learning_rate - self.min_learning_rate)


@dataclass
class TrainState:
    """A run in progress: where it is, and what it has logged (loss per step, validation curve)."""

    model: CharGPT
    optimizer: torch.optim.Optimizer
    batches: torch.Generator
    step: int = 0
    losses: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock training time
    cpu_seconds: float = 0.0  # this process's CPU time in training (all its threads)


def batch(ids: torch.Tensor, block_size: int, batch_size: int,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``ids``: inputs [B, T] and their next characters [B, T]."""
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    x = torch.stack([ids[s:s + block_size] for s in starts.tolist()])
    y = torch.stack([ids[s + 1:s + 1 + block_size] for s in starts.tolist()])
    return x, y


def training_loss(model: CharGPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy, plus the coherence regulariser on the mean per-token R when its weight is > 0."""
    out = model(x)
    loss = F.cross_entropy(out.logits.flatten(0, 1), y.flatten())
    layer, s = model.phase_layer, model.config.coupling
    if layer is not None and s.regulariser_weight > 0:
        R = layer.token_order_parameter(out.phases).mean()
        loss = loss + s.regulariser_weight * kuramoto.coherence_regulariser(R, s.target_R, s.regulariser_mode, s.band)
    return loss


def new_state(model_config: ModelConfig, train_config: TrainConfig) -> TrainState:
    torch.manual_seed(train_config.seed)
    model = CharGPT(model_config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": train_config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=train_config.learning_rate, betas=(0.9, 0.99))
    return TrainState(model, optimizer, torch.Generator().manual_seed(train_config.seed + 1))


def save_checkpoint(state: TrainState, folder: Path, model_config: ModelConfig, train_config: TrainConfig,
                    vocab: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(), "step": state.step,
               "rng": torch.get_rng_state(), "batches": state.batches.get_state(), "losses": state.losses,
               "curve": state.curve, "seconds": state.seconds, "cpu_seconds": state.cpu_seconds,
               "model_config": model_config.to_dict(),
               "train_config": asdict(train_config), "vocab": vocab}
    tmp = folder / (CHECKPOINT + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(folder / CHECKPOINT)


def load_checkpoint(folder: Path) -> tuple[dict[str, Any], ModelConfig, TrainConfig]:
    path = folder / CHECKPOINT
    if not path.is_file():
        raise PlaygroundError(f"no checkpoint in {folder}: train it first")
    payload = torch.load(path, weights_only=False)
    return payload, ModelConfig(**payload["model_config"]), TrainConfig(**payload["train_config"])


def resume(folder: Path, model_config: ModelConfig, train_config: TrainConfig) -> TrainState:
    """The run saved in ``folder`` (it must have the same settings), else a new one."""
    if not (folder / CHECKPOINT).is_file():
        return new_state(model_config, train_config)
    payload, saved_model, saved_train = load_checkpoint(folder)
    if saved_model != model_config or saved_train != train_config:
        raise PlaygroundError(f"{folder} holds a run with other settings; delete it or use another folder")
    state = new_state(model_config, train_config)
    state.model.load_state_dict(payload["model"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.batches.set_state(payload["batches"])
    torch.set_rng_state(payload["rng"])
    state.step, state.losses, state.curve = payload["step"], payload["losses"], payload["curve"]
    state.seconds, state.cpu_seconds = payload["seconds"], payload["cpu_seconds"]
    return state


def train(corpus: CharCorpus, model_config: ModelConfig, train_config: TrainConfig, folder: Path,
          until: int | None = None, progress: bool = True) -> TrainState:
    """Train to step ``until`` (default: all steps), resuming from ``folder``'s checkpoint when there is one."""
    require(model_config.vocab_size == len(corpus.vocab), "the model's vocab_size must be the corpus's")
    state = resume(folder, model_config, train_config)
    until = train_config.steps if until is None else min(until, train_config.steps)
    val_windows = windows(corpus.val, model_config.block_size, train_config.eval_windows)
    bar = tqdm(total=until, initial=state.step, disable=not progress, desc=folder.name, unit="step")
    model = state.model
    while state.step < until:
        started, cpu_started = time.perf_counter(), time.process_time()
        model.train()
        for group in state.optimizer.param_groups:
            group["lr"] = train_config.learning_rate_at(state.step)
        x, y = batch(corpus.train, model_config.block_size, train_config.batch_size, state.batches)
        loss = training_loss(model, x, y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
        state.optimizer.step()
        state.step += 1
        state.losses.append(float(loss.detach()))
        if state.step % train_config.eval_every == 0 or state.step == train_config.steps:
            state.curve.append({"step": state.step, "val_ppl": teacher_forced(model, val_windows).perplexity})
        state.seconds += time.perf_counter() - started
        state.cpu_seconds += time.process_time() - cpu_started
        bar.update(1)
        bar.set_postfix(loss=f"{state.losses[-1]:.3f}")
        if state.step % train_config.checkpoint_every == 0 or state.step == until:
            save_checkpoint(state, folder, model_config, train_config, corpus.vocab.chars)
    bar.close()
    return state


# ---- validation -------------------------------------------------------------------------------------
def windows(ids: torch.Tensor, block_size: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping windows of block_size + 1 ids (inputs and their next characters), the first ``limit``."""
    count = (len(ids) - 1) // block_size
    if limit is not None:
        count = min(count, limit)
    require(count >= 1, f"the validation text is shorter than one window of {block_size + 1} characters")
    return torch.stack([ids[i * block_size:i * block_size + block_size + 1] for i in range(count)])


@dataclass
class Validation:
    """Mean negative log-likelihood per character, and the phase layer's mean R per token (None: baseline)."""

    nll: float
    R_token: float | None = None
    R_coupled: float | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


@torch.no_grad()
def teacher_forced(model: CharGPT, wins: torch.Tensor, batch_size: int = 64) -> Validation:
    """One forward per window; every position scored from the logits at that position."""
    model.eval()
    nll, r_token, r_coupled, count = 0.0, 0.0, 0.0, 0
    layer = model.phase_layer
    for chunk in wins.split(batch_size):
        out = model(chunk[:, :-1])
        nll += float(F.cross_entropy(out.logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum"))
        count += chunk[:, 1:].numel()
        if layer is not None:
            r_token += float(layer.token_order_parameter(out.phases).sum())
            r_coupled += float(layer.coupled_order_parameter(out.phases).sum())
    if layer is None:
        return Validation(nll / count)
    return Validation(nll / count, r_token / count, r_coupled / count)


@torch.no_grad()
def causal(model: CharGPT, wins: torch.Tensor, batch_size: int = 64) -> Validation:
    """Position i scored from a forward over positions 0..i alone: no position sees a later one."""
    model.eval()
    nll, count = 0.0, 0
    for chunk in wins.split(batch_size):
        x, y = chunk[:, :-1], chunk[:, 1:]
        for i in range(x.shape[1]):
            last = model(x[:, :i + 1]).logits[:, -1]
            nll += float(F.cross_entropy(last, y[:, i], reduction="sum"))
            count += y.shape[0]
    return Validation(nll / count)


def collapsed(curve: list[dict[str, float]], losses: list[float]) -> bool:
    """A non-finite loss, or a final validation perplexity COLLAPSE_RATIO above the best one seen."""
    if not all(math.isfinite(x) for x in losses):
        return True
    ppls = [point["val_ppl"] for point in curve]
    return bool(ppls) and (not math.isfinite(ppls[-1]) or ppls[-1] > COLLAPSE_RATIO * min(ppls))


def evaluate(state: TrainState, corpus: CharCorpus, causal_windows: int) -> dict[str, Any]:
    """The run's figures: validation perplexity on the whole validation text (teacher-forced), both
    evaluations on its first ``causal_windows`` windows, mean R per token, whether training collapsed."""
    model, T = state.model, state.model.config.block_size
    everything = teacher_forced(model, windows(corpus.val, T))
    subset = windows(corpus.val, T, causal_windows)
    forced, prefix = teacher_forced(model, subset), causal(model, subset)
    return {"step": state.step, "train_seconds": round(state.seconds, 1),
            "train_cpu_seconds": round(state.cpu_seconds, 1),
            "val_ppl": everything.perplexity, "R_token": everything.R_token, "R_coupled": everything.R_coupled,
            "subset_characters": int(subset[:, 1:].numel()),
            "subset_ppl_teacher_forced": forced.perplexity, "subset_ppl_causal": prefix.perplexity,
            "collapsed": collapsed(state.curve, state.losses), "curve": state.curve}


def write_result(folder: Path, result: dict[str, Any]) -> Path:
    path = folder / "result.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return path
