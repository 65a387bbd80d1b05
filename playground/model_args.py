"""The command line's model arguments: those of ``load_model``."""
from __future__ import annotations

from typing import Any

from .devices import DTYPE_ALIASES, DTYPES


def add_model_arguments(p: Any) -> None:
    """``--model``, ``--device`` and ``--dtype`` on an argparse parser: the arguments of ``load_model``."""
    p.add_argument("--model", default=None, help="hub id or folder, or phasegpt: the bundled character-level PhaseGPT "
                                               "(default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: $PLAYGROUND_DEVICE, "
                                                  "else cuda, mps or cpu, the first available)")
    p.add_argument("--dtype", default=None, choices=[*DTYPES, *DTYPE_ALIASES],
                   help="weights' dtype (default: $PLAYGROUND_DTYPE, else bfloat16 on CUDA, float32 elsewhere)")
