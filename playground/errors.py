"""The package's errors: bad input from a user, with a message that says what to change."""
from __future__ import annotations


class PlaygroundError(ValueError):
    """Bad input from a user: the message says what and how to fix it."""


class ModelLoadError(PlaygroundError):
    """A model could not be loaded (an unknown id, device or dtype); the message names it."""


class SettingsError(PlaygroundError):
    """A sampler setting is unknown or out of range."""


def require(ok: bool, message: str) -> None:
    """Raise a SettingsError with ``message`` unless ``ok``."""
    if not ok:
        raise SettingsError(message)
