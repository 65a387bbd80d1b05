"""Shared fixtures: the real default model (integration) and tiny random models (fast units)."""
from __future__ import annotations

import pytest
import torch

from playground.models import LoadedModel, load_model


@pytest.fixture(scope="session")
def real_lm() -> LoadedModel:
    """The bundled SmolLM2-135M-Instruct (converted once, then cached)."""
    return load_model()


def _tiny(kind: str, tokenizer) -> LoadedModel:
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(1234)
    vocab = len(tokenizer)
    if kind == "llama":  # grouped-query attention: 4 query heads share 2 KV heads
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             bos_token_id=1, eos_token_id=2, pad_token_id=2)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=4, n_head=4, n_positions=512,
                            bos_token_id=1, eos_token_id=2, pad_token_id=2)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"tiny-random-{kind}")


@pytest.fixture(scope="session")
def tiny_llama(real_lm) -> LoadedModel:
    """A 4-layer random Llama with grouped-query attention and the default model's tokenizer."""
    return _tiny("llama", real_lm.tokenizer)


@pytest.fixture(scope="session")
def tiny_gpt2(real_lm) -> LoadedModel:
    """A 4-layer random GPT-2 with the default model's tokenizer."""
    return _tiny("gpt2", real_lm.tokenizer)


def pytest_report_header(config) -> str:
    """Which instruction sets the run's kernels use (PLAYGROUND_TEST_CPU in scripts/test.sh limits them)."""
    import os

    limits = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
              if k in os.environ}
    return f"cpu capability: {torch.backends.cpu.get_cpu_capability()}" + (f" (limited: {limits})" if limits else "")
