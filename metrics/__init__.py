"""Per-image, per-set, exact-posterior and cost metrics."""

import importlib
import os
import tempfile
from contextlib import contextmanager

from core.errors import ConfigError

WEIGHTS_ENV = "DIFFINV_WEIGHTS_DIR"


def weights_dir(explicit=None) -> str | None:
    """Where metric networks' weight files are read: `metrics.weights_dir`, else $DIFFINV_WEIGHTS_DIR, else
    None (each library's own cache: clean-fid's /tmp, torch hub's checkpoints folder). A path, not part
    of any cell's identity (the same files give the same numbers wherever they sit)."""
    d = explicit or os.environ.get(WEIGHTS_ENV) or None
    return os.path.abspath(os.path.expanduser(str(d))) if d else None


@contextmanager
def hub_checkpoints(folder: str | None):
    """torch hub's checkpoints folder (where torchvision's backbones and pytorch-fid's Inception are read)
    pointed at `folder` for the duration; nothing changes when folder is None."""
    if folder is None:
        yield
        return
    import torch

    old = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as hub:
        os.symlink(folder, os.path.join(hub, "checkpoints"))
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(old)


def import_callable(spec: str, key: str, example: str = "package.module:function"):
    """The function named 'module:function' by config key `key`, imported before any compute."""
    module, sep, name = str(spec).partition(":")
    if not sep:
        raise ConfigError(f"{key} must be 'module:function' (e.g. {example}), not {spec!r}.")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key}={spec} cannot be imported ({e}); name a module:function.") from None
