"""The `hpsweep` command: compare, best, reproduce, plot, rebuild."""

from hpsweep.cli._commands import main

__all__ = ["main"]
