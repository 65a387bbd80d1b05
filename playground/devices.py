"""Where a model runs and in which dtype: ``cuda`` if available, else ``mps``, else ``cpu``;
bfloat16 on CUDA, float32 elsewhere ($PLAYGROUND_DEVICE and $PLAYGROUND_DTYPE override both)."""
from __future__ import annotations

import os

import torch

from .errors import ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


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
