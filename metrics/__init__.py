"""Per-image, per-set, exact-posterior and cost metrics."""

import importlib

from tasks.errors import ConfigError


def import_callable(spec: str, key: str, example: str = "package.module:function"):
    """The function named 'module:function' by config key `key`, imported before any compute."""
    module, sep, name = str(spec).partition(":")
    if not sep:
        raise ConfigError(f"{key} must be 'module:function' (e.g. {example}), not {spec!r}.")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key}={spec} cannot be imported ({e}); name a module:function.") from None
