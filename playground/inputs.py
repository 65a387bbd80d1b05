"""What a user may send as a prompt: text that is text, and no longer than this deployment's cap.

Checked before any forward pass, in one place, for every front end (Python, CLI, page, HTTP):

* a lone UTF-16 surrogate (U+D800..U+DFFF, e.g. "\\ud800" sent in JSON) is not a character;
  tokenizers raise a TypeError on it. Refused, naming its position.
* control characters (C0 except tab, newline and carriage return; DEL; C1) are invisible and
  never meant as prompt text (a NUL byte from a pasted binary). Refused, naming the first ones.
  Nothing is cleaned silently: the user sees what to remove.
* the prompt's token count is capped by ``PLAYGROUND_MAX_PROMPT_TOKENS``: by default the model's
  context locally, and 4,096 on Hugging Face Spaces (``SPACE_ID`` set), where one long prompt
  shares the machine with every other visitor.
"""
from __future__ import annotations

import os
import unicodedata
from typing import Any

from .errors import PlaygroundError

SPACES_MAX_PROMPT_TOKENS = 4096
ALLOWED_CONTROLS = frozenset("\t\n\r")


def _describe(char: str, position: int) -> str:
    return f"U+{ord(char):04X} at position {position}"


def check_prompt_text(prompt: Any) -> str:
    """The prompt itself when it is non-empty text; a PlaygroundError naming what is wrong otherwise."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise PlaygroundError("the prompt is empty: type some text to continue")
    surrogates = [i for i, c in enumerate(prompt) if "\ud800" <= c <= "\udfff"]
    if surrogates:
        raise PlaygroundError(
            f"the prompt contains {len(surrogates)} invalid character(s) (a lone UTF-16 surrogate, "
            f"{_describe(prompt[surrogates[0]], surrogates[0])}), which is not text: remove it or send valid UTF-8")
    controls = [i for i, c in enumerate(prompt) if c not in ALLOWED_CONTROLS and unicodedata.category(c) == "Cc"]
    if controls:
        shown = ", ".join(_describe(prompt[i], i) for i in controls[:3]) + (", ..." if len(controls) > 3 else "")
        raise PlaygroundError(
            f"the prompt contains {len(controls)} control character(s) ({shown}); only tab and newline "
            "are allowed: remove them")
    return prompt


def max_prompt_tokens(lm: Any) -> int:
    """This deployment's prompt cap: $PLAYGROUND_MAX_PROMPT_TOKENS, else 4,096 on Spaces, else the
    model's context; never more than the model's context."""
    cap = positive_env_int("PLAYGROUND_MAX_PROMPT_TOKENS")
    if cap is None:
        cap = SPACES_MAX_PROMPT_TOKENS if os.environ.get("SPACE_ID") else lm.max_context
    return min(cap, lm.max_context)


def positive_env_int(name: str) -> int | None:
    """A deployment's integer setting ``name`` (at least 1), or None where it is unset."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise PlaygroundError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise PlaygroundError(f"{name} must be at least 1, got {value}")
    return value


def prompt_ids(lm: Any, prompt: Any, chat: bool = False) -> list[int]:
    """Token ids of a checked prompt, or a PlaygroundError naming the count and the cap."""
    ids = lm.encode(check_prompt_text(prompt), chat=chat)
    cap = max_prompt_tokens(lm)
    if len(ids) > cap == lm.max_context:
        raise PlaygroundError(f"the prompt is {len(ids):,} tokens, which exceeds the model's context of {cap:,} "
                              "tokens (this playground's cap): shorten it")
    if len(ids) > cap:
        raise PlaygroundError(f"the prompt is {len(ids):,} tokens; this playground accepts at most {cap:,} "
                              "(PLAYGROUND_MAX_PROMPT_TOKENS): shorten it")
    return ids
