"""The shipped PhaseGPT as a playground model: a character tokenizer and a causal LM on a transformers cache.

    assets/phasegpt/config.json        the GPT's shape, oscillator settings and its characters (transformers' format)
    assets/phasegpt/model.safetensors  the weights (float32, no pickle)

``PhaseGPTForCausalLM.forward`` takes what the engine gives a transformers model (tokens [rows, n], a
``DynamicCache``, ``output_attentions``, ``logits_to_keep``) and returns logits, attention weights and
the cache, plus ``oscillator_order_parameter``: the phase layer's own R per row and position.

Its cache has one layer per block, so re-indexing rows, side-row re-syncs and crops work on it as on
any KV cache:
    attention block  keys and values [rows, heads, n, head_dim]
    phase layer      keys: the running sums of e^{i theta^(k)} after each position, for every integration
                     level k (cos and sin [rows, heads, n, 2 (steps + 1) N]); a new position reads only the
                     newest, so a step costs O(steps H N) whatever the context. Values: zeros of an attention
                     head's shape, since the layer reads no Value vectors (Phase-Slip's norm-preserving
                     rotation leaves a zero vector at zero, so its perturbation there is nothing).
The phase layer's attention weights are what its mean field is: each visible position weighted equally.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, GenerationConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..errors import PlaygroundError, require
from ..kuramoto import RunningMeanField
from ..model_source import quiet_transformers
from .model import CharGPT, ModelConfig, PhaseCoupling, attend

SHIPPED_FOLDER = Path(__file__).resolve().parents[2] / "assets" / "phasegpt"


class CharTokenizer:
    """One id per character of the model's vocabulary; no special tokens, no end-of-text token.

    What the engine and the page call: ``tokenizer(text).input_ids``, ``encode``, ``decode``,
    ``batch_decode``, ``len``. A character outside the vocabulary is refused, naming it.
    """

    eos_token_id = None
    chat_template = None

    def __init__(self, chars: str):
        self.chars = chars
        self.ids = {c: i for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        unknown = sorted({c for c in text if c not in self.ids})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise PlaygroundError(f"PhaseGPT knows {len(self.chars)} characters (those of its Shakespeare plays); "
                                  f"the text has others: {shown}; remove or replace them")
        return [self.ids[c] for c in text]

    def __call__(self, text: str, add_special_tokens: bool = True) -> Any:
        return _Encoding(self.encode(text))

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.chars[i] for i in ids)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids) for ids in sequences]


@dataclass
class _Encoding:
    input_ids: list[int]


class PhaseGPTConfig(PretrainedConfig):
    """``ModelConfig`` in transformers' form, with the characters of the vocabulary."""

    model_type = "phasegpt"
    attribute_map = {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                     "max_position_embeddings": "block_size", "hidden_size": "n_embd"}

    def __init__(self, chars: str = "", block_size: int = 64, n_layer: int = 7, n_head: int = 4, n_embd: int = 64,
                 phase_mode: str | None = "fixed", phase_layer: int | None = None,
                 coupling: dict[str, Any] | None = None, **kwargs: Any):
        self.chars, self.block_size, self.n_layer, self.n_head, self.n_embd = chars, block_size, n_layer, n_head, n_embd
        self.phase_mode, self.phase_layer, self.coupling = phase_mode, phase_layer, coupling or {}
        super().__init__(**kwargs)
        self.vocab_size = len(chars)
        self.phase_layer = self.model_config().phase_layer
        self.oscillator_layers = [self.phase_layer] if phase_mode else []  # layers whose R is the oscillators'

    def model_config(self) -> ModelConfig:
        return ModelConfig(vocab_size=len(self.chars), block_size=self.block_size, n_layer=self.n_layer,
                           n_head=self.n_head, n_embd=self.n_embd, phase_mode=self.phase_mode,
                           phase_layer=self.phase_layer, coupling=dict(self.coupling))


@dataclass
class PhaseGPTOutput(CausalLMOutputWithPast):
    """transformers' causal-LM output, and R of the phase layer's oscillators [rows, n, oscillator layers]."""

    oscillator_order_parameter: torch.Tensor | None = None


class PhaseGPTForCausalLM(PreTrainedModel):
    """``CharGPT`` decoding onto a transformers ``DynamicCache`` (see the module docstring for its layers)."""

    config_class = PhaseGPTConfig
    base_model_prefix = "gpt"
    main_input_name = "input_ids"

    def __init__(self, config: PhaseGPTConfig):
        super().__init__(config)
        self.gpt = CharGPT(config.model_config())
        self.post_init()

    def _init_weights(self, module: Any) -> None:
        CharGPT._init_weights(module)

    def forward(self, input_ids: torch.Tensor, cache: DynamicCache | None = None, use_cache: bool = True,
                output_attentions: bool = False, logits_to_keep: int = 0, **kwargs: Any) -> PhaseGPTOutput:
        """Logits of ``input_ids`` [rows, n] after the positions already in ``cache`` (which it extends).

        On one CPU thread: its matrices are too small for a second one to help, and on a busy machine each
        product would wait for the other thread's core (tens of times slower, measured on 2 loaded cores).
        """
        with one_cpu_thread():
            return self._forward(input_ids, cache, output_attentions, logits_to_keep)

    def _forward(self, input_ids: torch.Tensor, cache: DynamicCache | None, output_attentions: bool,
                 logits_to_keep: int) -> PhaseGPTOutput:
        gpt, (rows, n) = self.gpt, input_ids.shape
        cache = cache if cache is not None else DynamicCache(config=self.config)
        past = cache.get_seq_length()
        require(past + n <= gpt.config.block_size,
                f"PhaseGPT's context is {gpt.config.block_size} characters; {past} + {n} do not fit")
        positions = torch.arange(past, past + n, device=input_ids.device)
        x = gpt.token_embedding(input_ids) + gpt.position_embedding(positions)
        attentions, order = [], None
        for index, block in enumerate(gpt.blocks):
            h = block.ln_1(x)
            if isinstance(block.mix, PhaseCoupling):
                mixed, weights, phases = self._phase_layer(block.mix, h, cache, index, past, output_attentions)
                order = block.mix.token_order_parameter(phases).unsqueeze(-1)
            else:
                q, k, v = block.mix.heads(h)
                k, v = cache.update(k, v, index)
                y, weights = attend(q, k, v, output_attentions)
                mixed = block.mix.merge(y)
            x = block.feed_forward(x + mixed)
            attentions.append(weights)
        kept = x[:, -logits_to_keep:] if logits_to_keep else x
        return PhaseGPTOutput(logits=gpt.logits(kept), cache=cache,
                              attentions=tuple(attentions) if output_attentions else None,
                              oscillator_order_parameter=order[:, -kept.shape[1]:] if order is not None else None)

    def _phase_layer(self, mix: PhaseCoupling, h: torch.Tensor, cache: DynamicCache, index: int, past: int,
                     with_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The phase layer on the new positions h [rows, n, C] after ``past`` ones, from its cache layer's sums."""
        rows, n, _ = h.shape
        levels, heads = mix.settings.steps + 1, mix.n_head
        running = None
        if past:  # the newest position's sums: [rows, H, 2 levels N] -> cos, sin [levels, rows, H, N]
            newest = cache.layers[index].keys[:, :, -1].reshape(rows, heads, 2, levels, mix.n_osc)
            cos, sin = newest.permute(2, 3, 0, 1, 4)
            running = RunningMeanField(cos, sin, past)
        mixed, phases, cos, sin = mix.extend(h, running)  # sums [levels, rows, H, n, N]
        sums = torch.stack([cos, sin]).permute(2, 3, 4, 0, 1, 5).reshape(rows, heads, n, -1)
        head_dim = self.config.n_embd // heads
        cache.update(sums, sums.new_zeros(rows, heads, n, head_dim), index)
        weights = None
        if with_weights:  # the mean field: every visible position weighted alike
            visible = torch.ones(n, past + n, dtype=h.dtype, device=h.device).tril(past)
            weights = (visible / visible.sum(-1, keepdim=True)).expand(rows, heads, n, past + n)
        return mixed, weights, phases


@contextmanager
def one_cpu_thread() -> Iterator[None]:
    """torch's intra-op threads set to one inside, and back after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def load_shipped(device: torch.device,
                 folder: Path = SHIPPED_FOLDER) -> tuple[PhaseGPTForCausalLM, CharTokenizer]:
    """The shipped model and its tokenizer, from ``folder`` (a missing folder is a clear error).

    In float32 whatever dtype a run asks for: 0.37 M parameters gain nothing from half precision, and
    half-precision running sums of 64 unit vectors would drift from the full forward.
    """
    if not (folder / "config.json").is_file():
        raise PlaygroundError(f"the PhaseGPT model is not in {folder} (config.json and model.safetensors)")
    quiet_transformers()
    model = PhaseGPTForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    model.generation_config = GenerationConfig()  # no end-of-text token: a column ends at its length
    return model, CharTokenizer(model.config.chars)


def export_checkpoint(checkpoint: Path, folder: Path = SHIPPED_FOLDER) -> Path:
    """Write a training checkpoint's model (``phasegpt train``) as the shipped folder; returns it."""
    payload = torch.load(checkpoint, weights_only=False, map_location="cpu")
    settings = ModelConfig(**payload["model_config"])
    if payload["step"] < payload["train_config"]["steps"]:
        raise PlaygroundError(f"{checkpoint} is still training (step {payload['step']} of "
                              f"{payload['train_config']['steps']})")
    if settings.phase_mode != "fixed":
        raise PlaygroundError(f"{checkpoint} is not a fixed-layer model: only the fixed layer decodes step by step")
    config = PhaseGPTConfig(chars=payload["vocab"], block_size=settings.block_size, n_layer=settings.n_layer,
                            n_head=settings.n_head, n_embd=settings.n_embd, phase_mode=settings.phase_mode,
                            phase_layer=settings.phase_layer, coupling=settings.to_dict()["coupling"])
    model = PhaseGPTForCausalLM(config)
    model.gpt.load_state_dict(payload["model"])
    quiet_transformers()
    model.save_pretrained(folder)
    return folder
