"""The Optuna trial of the job running in this process (the face's `current_trial`).

Here, not in the face: Hydra's plugin scan runs the face's module again, which would reset a
value kept there; it skips modules whose names begin with "_", so this one holds the only copy.
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

# A plain value, not a ContextVar: submitit (cloudpickle) may pickle a job's function by value,
# globals included, and a ContextVar cannot be pickled.
_running: "optuna.Trial | None" = None


def current_trial() -> "optuna.Trial | None":
    """The optuna.Trial of the job running in this process, or None outside a sweep.

    A job reports its objective to it every epoch and stops when the pruner says so.
    """
    return _running


@contextlib.contextmanager
def running_trial(trial: "optuna.Trial") -> Iterator[None]:
    """`current_trial()` is `trial` inside this block (the sweeper runs each job in one)."""
    global _running
    _running = trial
    try:
        yield
    finally:
        _running = None
