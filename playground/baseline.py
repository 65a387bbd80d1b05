"""The stock baseline: the project's weights loaded as a user would without this project."""
from __future__ import annotations

from typing import Any

import torch

from .devices import pick_device, pick_dtype
from .model_source import DEFAULT_MODEL, converted_bundled_model, resolve_model_id


def load_stock_model(model_id: str | None = None, device: str | torch.device | None = None,
                     dtype: str | torch.dtype | None = None) -> Any:
    """The same weights as ``load_model(model_id, device, dtype)``, loaded as a user would without this
    project: ``AutoModelForCausalLM.from_pretrained`` with its defaults (sdpa attention, stock kernels).
    The baseline of every speed benchmark."""
    from transformers import AutoModelForCausalLM

    key = resolve_model_id(model_id)
    where = pick_device(device)
    source = converted_bundled_model() if key == DEFAULT_MODEL else key
    return AutoModelForCausalLM.from_pretrained(source, dtype=pick_dtype(dtype, where)).to(where).eval()
