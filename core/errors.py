"""The one error type for anything a user can get wrong; the harness prints its message alone."""


class ConfigError(ValueError):
    """A user-facing configuration error: one sentence that names the fix, raised before compute."""
