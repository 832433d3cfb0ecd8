"""The errors a user may see: each message is one line that names the key or file."""

from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work. Raised before training starts or any trial file is
    written, with the key as the user types it on the command line."""

    def __init__(self, key: str, value: object, expected: str):
        super().__init__(f"{key}={value!r}: {expected}")
        self.key = key
        self.value = value


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used (truncated, corrupt, or from another config)."""


class TrialFileError(Exception):
    """A trial file that is missing where it must exist, or exists and cannot be used:
    unreadable, cut short, not JSON/CSV, wrong types. The message names the file within its
    trial dir and the fault ("result.json: not JSON (line 1)"); `path` is the whole path."""

    def __init__(self, path: Path, why: str, name: str | None = None) -> None:
        super().__init__(f"{name or path.name}: {why}")
        self.path = path
        self.why = why
        self.name = name

    def __reduce__(self) -> tuple[Any, ...]:  # kept in the read cache: pickled
        return (TrialFileError, (self.path, self.why, self.name))


def unreadable(error: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, in a few words."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (byte {error.start})"
    if isinstance(error, FileNotFoundError):
        return "missing"
    return f"unreadable ({error.strerror or type(error).__name__})"
