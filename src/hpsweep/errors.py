class ConfigError(ValueError):
    """A config value that cannot work. Raised before training starts or any trial file is
    written, with the key as the user types it on the command line."""

    def __init__(self, key: str, value: object, expected: str):
        super().__init__(f"{key}={value!r}: {expected}")
        self.key = key
        self.value = value


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used (truncated, corrupt, or from another config)."""
