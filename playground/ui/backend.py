"""The page's calls into the backend: which models a deployment allows, the prompt counter, and
``/compare`` (the CLI's JSON over HTTP). The decoding functions carry ``@spaces.GPU`` on ZeroGPU."""
from __future__ import annotations

import html
import inspect
import json
import math
import os
from typing import Any, Callable

import gradio as gr
import torch

from ..columns import ColumnSpec, columns_from_json
from ..engine import MAX_NEW_TOKENS, Engine, RunOptions
from ..inputs import check_prompt_text, max_prompt_tokens
from ..kuramoto import default_probe_layer
from ..models import DEFAULT_MODEL, HUB_DEFAULT_ID, PHASEGPT_MODEL, load_model, loaded_model
from ..samplers import SAMPLERS, PlaygroundError
from .columns import integer_value, table_specs
from .render import STOPPED_BEFORE_START
from .sessions import SessionRuns, session_of


try:  # Hugging Face ZeroGPU: the decorator asks for a GPU per call; elsewhere nothing
    import spaces
except ImportError:
    spaces = None

DEFAULT_MAX_NEW_TOKENS = 48
SPACES_ALLOWED_MODELS = (HUB_DEFAULT_ID, "HuggingFaceTB/SmolLM2-360M-Instruct")
GPU_SPACES_ALLOWED_MODELS = ("HuggingFaceTB/SmolLM2-1.7B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct")
SHIPPED_MODELS = (DEFAULT_MODEL, PHASEGPT_MODEL)  # shipped with the project: allowed everywhere
GPU_SECONDS_MIN, GPU_SECONDS_MAX = 20, 120  # what one ZeroGPU call may ask for


def on_zero_gpu() -> bool:
    """``spaces`` is importable and CUDA is (or, at ZeroGPU's start-up, is emulated as) available."""
    return spaces is not None and torch.cuda.is_available()


if on_zero_gpu():  # ZeroGPU's documented start-up: the model goes to cuda at module level, calls get the GPU
    os.environ.setdefault("PLAYGROUND_DEVICE", "cuda")
    load_model(DEFAULT_MODEL)


def shared_decoding() -> bool:
    """Whether the page's runs decode in the model's shared loop: everywhere but ZeroGPU, where each
    call runs in a forked process of its own and so decodes alone."""
    return not on_zero_gpu()


def gpu_seconds(max_new_tokens: Any, n_columns: int) -> int:
    """The GPU time a run asks ZeroGPU for: start-up (load, calibration) plus a step per token, each
    column adding to the step; within what one call may ask."""
    try:
        tokens = min(MAX_NEW_TOKENS, max(1, int(max_new_tokens)))
    except (TypeError, ValueError):
        tokens = MAX_NEW_TOKENS
    seconds = 15 + tokens * (0.02 + 0.01 * max(1, n_columns))
    return int(min(GPU_SECONDS_MAX, max(GPU_SECONDS_MIN, math.ceil(seconds))))


def gpu(duration: Callable[[dict[str, Any]], int]) -> Callable[[Callable], Callable]:
    """``@spaces.GPU(duration=...)`` where ``spaces`` is importable (a no-op off ZeroGPU), nothing elsewhere.

    ``duration`` takes the call's arguments by name (defaults filled in) and returns seconds.
    """
    def wrap(fn: Callable) -> Callable:
        if spaces is None:
            return fn
        signature = inspect.signature(fn)

        def seconds(*args: Any, **kwargs: Any) -> int:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return duration(bound.arguments)
        return spaces.GPU(duration=seconds)(fn)
    return wrap


def allowed_models() -> list[str] | None:
    """Model ids besides the default a user may pick; None means any id.

    $PLAYGROUND_ALLOWED_MODELS: comma-separated ids, or "*" for any. Unset: none locally,
    a short list on Hugging Face Spaces (detected by $SPACE_ID), longer where the Space has a GPU.
    """
    raw = os.environ.get("PLAYGROUND_ALLOWED_MODELS")
    if raw is None:
        if not os.environ.get("SPACE_ID"):
            return []
        return [*SPACES_ALLOWED_MODELS, *(GPU_SPACES_ALLOWED_MODELS if torch.cuda.is_available() else ())]
    ids = [m.strip() for m in raw.split(",") if m.strip()]
    return None if "*" in ids else ids


def check_model(model_id: str | None) -> str:
    """The model id to load, or a PlaygroundError when this deployment does not allow it."""
    model_id = (model_id or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    allowed = allowed_models()
    if model_id not in SHIPPED_MODELS and allowed is not None and model_id not in allowed:
        choices = ", ".join([*SHIPPED_MODELS, *allowed])
        raise PlaygroundError(f"model {model_id!r} is not allowed here; choose one of: {choices} "
                              "(the allow-list is set by PLAYGROUND_ALLOWED_MODELS)")
    return model_id


def order_parameter_note(model_id: str | None) -> str:
    """Which Kuramoto R the page's plots show for this model: its oscillators' own, or read from attention."""
    model_id = (model_id or DEFAULT_MODEL).strip() or DEFAULT_MODEL
    lm = loaded_model(model_id)
    if lm is not None:
        source = lm.order_parameter_source(default_probe_layer(lm.n_layers))
    elif model_id == PHASEGPT_MODEL:
        source = "oscillator R (PhaseGPT's phase layer)"
    else:
        source = "attention R, read from the attention rows of the layer at about 58% depth"
    return f"Kuramoto R of this model: **{source}**."


def prompt_count_html(prompt: str, model: str, chat: bool) -> str:
    """The prompt's token count against this deployment's cap (or what is wrong with the text)."""
    lm = loaded_model(model)
    try:
        text = check_prompt_text(prompt) if prompt and prompt.strip() else ""
        if lm is None:
            return f'<div class="pg-count" data-tokens="">{len(text):,} characters (tokens once the model loads)</div>'
        n, cap = (len(lm.encode(text, chat=bool(chat))) if text else 0), max_prompt_tokens(lm)
    except PlaygroundError as exc:
        return f'<div class="pg-count pg-over" data-tokens="">{html.escape(str(exc))}</div>'
    over = " pg-over" if n > cap else ""
    note = f": over this playground's cap of {cap:,}, shorten it" if n > cap else f" of at most {cap:,}"
    return f'<div class="pg-count{over}" data-tokens="{n}">prompt: {n:,} tokens{note}</div>'


def _options_and_model(seed, max_new_tokens, chat, model, samples=1):
    options = RunOptions(seed=integer_value(seed, "seed"), chat=bool(chat),
                         max_new_tokens=integer_value(max_new_tokens, "max_new_tokens"),
                         samples=integer_value(samples if samples not in (None, "") else 1, "samples"))
    return options, load_model(check_model(model))


def prepare_run(prompt, model, chat, table, max_new_tokens, seed, samples=1):
    """The page's inputs -> the model, the columns and the run options (bad input: a PlaygroundError)."""
    specs = table_specs(table)
    options, lm = _options_and_model(seed, max_new_tokens, chat, model, samples)
    return lm, specs, options


def sampler_columns(samplers: str, settings: str) -> list[ColumnSpec]:
    """The old form of /compare: sampler names (one column each) and their settings as JSON."""
    names = [s.strip() for s in samplers.split(",") if s.strip()] if samplers else list(SAMPLERS)
    try:
        overrides = json.loads(settings) if settings and settings.strip() else {}
    except json.JSONDecodeError as exc:
        raise PlaygroundError(f"settings must be JSON like {{\"temperature\": {{\"top_k\": 0}}}}: {exc}") from None
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise PlaygroundError('settings must map sampler names to objects, e.g. {"temperature": {"top_k": 0}}')
    for name in overrides:
        if name not in names:
            raise PlaygroundError(f"settings for {name!r}, which is not in this run ({', '.join(names)})")
    return [ColumnSpec(n, overrides.get(n, {})) for n in names]


def _compare_seconds(args: dict[str, Any]) -> int:
    try:
        n = len(json.loads(args["columns"])) if (args["columns"] or "").strip() else \
            len([s for s in args["samplers"].split(",") if s.strip()]) or len(SAMPLERS)
    except (AttributeError, TypeError, ValueError):
        n = len(SAMPLERS)
    return gpu_seconds(args["max_new_tokens"], n)


@gpu(_compare_seconds)
def compare(prompt: str, samplers: str = "", seed: int = 0, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
            chat: bool = False, settings: str = "", model: str = DEFAULT_MODEL, columns: str = "",
            request: gr.Request = None) -> dict:
    """Run columns side by side and return the CLI's JSON (`python -m playground compare --json`).

    Args:
        prompt: text to continue.
        samplers: comma-separated sampler names, one column each; empty: all available (or give columns).
        seed: the one seed of every column.
        max_new_tokens: 1..1024.
        chat: wrap the prompt in the model's chat template.
        settings: JSON {"sampler": {"setting": value}} for the samplers, e.g. {"temperature": {"top_k": 0}}.
        model: "default", or an id this deployment allows.
        columns: JSON list of {"sampler", "settings", "label"}: the columns in order (replaces samplers + settings).

    The session's Stop ends it: a running one returns what it decoded (``"stopped": true``), a waiting one
    is refused ("stopped before it started").
    """
    runs = SessionRuns(session_of(request))
    try:
        if runs.stopped():
            raise PlaygroundError(f"{STOPPED_BEFORE_START}: a Stop from the same session came while it waited")
        if columns and columns.strip():
            if (samplers and samplers.strip()) or (settings and settings.strip()):
                raise PlaygroundError("give either columns, or samplers and settings, not both")
            specs = columns_from_json(columns)
        else:
            specs = sampler_columns(samplers, settings)
        options, lm = _options_and_model(seed, max_new_tokens, chat, model)
        return Engine(lm).run(prompt, specs, options, runs.stop, shared=shared_decoding()).to_json()
    except PlaygroundError as exc:
        raise gr.Error(str(exc)) from None
    finally:
        runs.leave()
