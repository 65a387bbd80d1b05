"""Model loading: the bundled SmolLM2-135M-Instruct GGUF (offline), the bundled PhaseGPT
(``"phasegpt"``, phasegpt/causal_lm.py), or any causal LM id or folder.

    where the weights come from   model_source.py (the GGUF converted once, the hub check)
    device and dtype              devices.py
    the changes made to it        model_changes.py (one list, one switch: PLAYGROUND_STOCK=1)
    the stock baseline            baseline.py
    command-line arguments        model_args.py

``load_model`` loads a model once per process, device, dtype and switch, and wraps it in a
``LoadedModel``: the model, its tokenizer and the shape facts the samplers need. Attention at
rest returns its weights (the adaptive sampler, entropix and the Kuramoto read-out need them;
sdpa returns none); a pass that needs none asks for sdpa (``LoadedModel.use_attention``).
The names other modules import from here stay importable from here.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from .baseline import load_stock_model
from .devices import DTYPE_ALIASES, DTYPES, pick_device, pick_dtype
from .errors import ModelLoadError, PlaygroundError
from .model_args import add_model_arguments
from .openmp import release_workers
from .model_changes import (GROUPED_MODEL_TYPES, Float32Head, SideRowJoin, apply_changes, joined_side_rows,
                            joins_side_rows, kv_cache, stock_requested)
from .model_source import (BUNDLED_FILE, BUNDLED_NAME, BUNDLED_PACKAGE, DEFAULT_MODEL, HUB_DEFAULT_ID, PHASEGPT_MODEL,
                           PHASEGPT_NAME, bundled_gguf, cache_dir, check_reachable, converted_bundled_model,
                           quiet_transformers, resolve_model_id)

PREFILL_CHUNK = 4096  # prompt tokens per prefill pass through sdpa: bounds the activations
EAGER_PREFILL_CHUNK = 256  # ... through an attention returning weights: heads x chunk x n scores per layer

__all__ = ["BUNDLED_FILE", "BUNDLED_NAME", "BUNDLED_PACKAGE", "DEFAULT_MODEL", "DTYPES", "DTYPE_ALIASES",
           "EAGER_PREFILL_CHUNK", "Float32Head", "GROUPED_MODEL_TYPES", "HUB_DEFAULT_ID", "LoadedModel",
           "ModelLoadError", "PHASEGPT_MODEL", "PREFILL_CHUNK", "add_model_arguments", "bundled_gguf", "cache_dir",
           "load_model", "load_stock_model", "loaded_model", "model_from_arguments", "pick_device", "pick_dtype",
           "resolve_model_id"]


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
    stock: bool = False  # loaded without model_changes.py's changes (PLAYGROUND_STOCK=1)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one pass at a time
    _pieces: dict[int, str] = field(default_factory=dict, repr=False)  # token id -> its text alone
    _weighted_attention: str | None = field(default=None, repr=False)  # set while sdpa stands in for it

    def __post_init__(self):
        cfg = self.model.config
        get = lambda *names, default=None: next(  # noqa: E731  (configs name these differently)
            (getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None), default)
        self.n_layers = int(get("num_hidden_layers", "n_layer"))
        self.n_heads = int(get("num_attention_heads", "n_head"))
        self.n_kv_heads = int(get("num_key_value_heads", default=self.n_heads))
        self.max_context = int(get("max_position_embeddings", "n_positions", "n_ctx", default=2048))
        self.oscillator_layers = list(get("oscillator_layers", default=()))  # layers whose R is their oscillators'
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        self.model.eval()
        # transformers renamed forward's `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_keyword = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
            else "past_key_values"
        # side rows may join a pass at the layer where they start to differ (model_changes.py)
        self.joins_side_rows = joins_side_rows(self.model, self.stock)

    def order_parameter_source(self, layer: int) -> str:
        """Which R a column's order parameter is at ``layer``: the oscillators' own, or read from attention."""
        if layer in self.oscillator_layers:
            return f"oscillator R (PhaseGPT's phase layer, layer {layer})"
        return f"attention R, layer {layer}"

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

    def forward(self, tokens: torch.Tensor, cache: Any, side_rows: SideRowJoin | None = None,
                **kwargs: Any) -> tuple[Any, Any]:
        """One pass that reads and extends ``cache``: (the model's output, the cache it returns).

        The cache goes in by the keyword this transformers version names it, so no deprecation
        warning is printed and the code keeps working once the old name is removed.
        ``side_rows``: ``tokens`` are the rows below the join layer, and the side rows join there
        (``joined_side_rows``); the logits and every layer's attention weights come out for every row.
        """
        with joined_side_rows(self.model, side_rows):
            out = self.model(tokens, **{self.cache_keyword: cache}, use_cache=True, **kwargs)
        if side_rows is not None and out.get("attentions") is not None:  # a side row's below the join: its clean row's
            out.attentions = tuple(side_rows.rows(a) if layer < side_rows.layer else a
                                   for layer, a in enumerate(out.attentions))
        returned = out.get("cache")
        return out, returned if returned is not None else out.get("past_key_values")

    def use_attention(self, weights: bool) -> bool:
        """Set the attention implementation the next passes need; returns whether sdpa runs.

        ``weights``: the model's own implementation, which returns them (grouped or eager); else
        sdpa, where the model has it, which is faster and never materialises scores. It switches
        only when the other one is set, so a run's passes switch once, and two interleaved runs
        each get theirs. Switching is per model object: callers hold ``lock``.
        """
        if weights:
            if self._weighted_attention is not None:
                self.model.set_attn_implementation(self._weighted_attention)
                self._weighted_attention = None
        elif self.model.config._attn_implementation != "sdpa" and getattr(self.model, "_supports_sdpa", False):
            self._weighted_attention = self.model.config._attn_implementation
            self.model.set_attn_implementation("sdpa")
        return self.model.config._attn_implementation == "sdpa"

    def rest_attention(self) -> None:
        """Back to the attention that returns weights, the model's implementation at rest."""
        self.use_attention(weights=True)

    @contextmanager
    def fast_attention(self):
        """sdpa for the passes inside, where the model has it; yields whether sdpa runs (see ``use_attention``)."""
        switched_here = self._weighted_attention is None
        try:
            yield self.use_attention(weights=False)
        finally:
            if switched_here:
                self.rest_attention()

    def prefill(self, ids: torch.Tensor, fast: bool = False,
                capacity: int | None = None) -> tuple[Any, torch.Tensor | None]:
        """A fresh cache holding ``ids`` [n], fed without attention weights in chunks: memory linear in n.
        Returns the cache and the logits [1, V] after the last of ``ids`` (None when there are none).

        ``fast``: through sdpa (``fast_attention``; the caller holds ``lock``). Attention that returns
        weights holds heads x chunk x n scores per layer, so it takes small chunks; sdpa holds none,
        so one pass is faster (17% at 3,000 tokens) and its chunks only bound the activations.
        ``capacity``: the positions the cache will reach (a growing cache appends in place; see
        ``model_changes.kv_cache``).
        """
        cache, logits = kv_cache(self.model.config, capacity, self.stock), None
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


def last_attention_rows(out: Any) -> torch.Tensor:
    """A pass's attention weights of its last position: [rows, layers, heads, kv positions]."""
    return torch.stack([a[:, :, -1, :] for a in out.attentions], 1)


def _from_pretrained(source: Any, name: str, device: torch.device, dtype: torch.dtype,
                     stock: bool) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_reachable(str(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, attn_implementation="eager", dtype=dtype, trust_remote_code=False)
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load model {name!r}: {reason[:300]} "
            "(is it a causal language model id or folder, and is the hub reachable?)") from None
    if stock:
        model.to(device)
        kernels: dict[str, dict[int, str]] = {}
    else:
        kernels = apply_changes(model, name, device, cache_dir() / "kernels")
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, kernels=kernels, stock=stock)


_loaded: dict[tuple[str, str, torch.dtype, bool], LoadedModel] = {}
_load_lock = threading.Lock()


def _load_key(model_id: str | None, device: Any, dtype: Any, stock: bool | None) -> tuple[str, str, torch.dtype, bool]:
    where = pick_device(device)
    return resolve_model_id(model_id), str(where), pick_dtype(dtype, where), stock_requested(stock)


def loaded_model(model_id: str | None = None, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, stock: bool | None = None) -> LoadedModel | None:
    """The model already loaded under this id, device, dtype and switch, if any (never loads)."""
    return _loaded.get(_load_key(model_id, device, dtype, stock))


def load_model(model_id: str | None = None, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, stock: bool | None = None) -> LoadedModel:
    """Load (once per process, device, dtype and switch) the default model, ``"phasegpt"``, a hub id or a folder.

    ``device``: cpu, cuda, cuda:N or mps; None: $PLAYGROUND_DEVICE, else cuda, mps or cpu, the first here.
    ``dtype``: float32, bfloat16 or float16; None: $PLAYGROUND_DTYPE, else bfloat16 on CUDA, float32 elsewhere.
    ``stock``: True loads stock transformers' model with none of model_changes.py's changes;
    None: $PLAYGROUND_STOCK, else False.
    """
    key = _load_key(model_id, device, dtype, stock)
    name, where, precision, as_stock = key
    quiet_transformers()
    with _load_lock:
        if key not in _loaded:
            if name == PHASEGPT_MODEL:
                from .phasegpt.causal_lm import load_shipped

                model, tokenizer = load_shipped(torch.device(where))
                _loaded[key] = LoadedModel(model=model, tokenizer=tokenizer, name=PHASEGPT_NAME, stock=as_stock)
            elif name == DEFAULT_MODEL:
                _loaded[key] = _from_pretrained(converted_bundled_model(), BUNDLED_NAME, torch.device(where),
                                                precision, as_stock)
            else:
                _loaded[key] = _from_pretrained(name, name, torch.device(where), precision, as_stock)
            release_workers()  # a server decodes in other threads: the loader's OpenMP pool would idle
        return _loaded[key]


def model_from_arguments(args: Any) -> LoadedModel:
    """``load_model`` with the parsed ``add_model_arguments``."""
    return load_model(args.model, args.device, args.dtype)
