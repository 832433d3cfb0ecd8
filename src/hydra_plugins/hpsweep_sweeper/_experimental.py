"""Optuna's warnings about the sweeper's own choices, silenced where the sweeper makes them.

The sweeper uses APIs Optuna marks experimental (RDB heartbeats and fail_stale_trials, the QMC
sampler...) and asks for trials outside Study.optimize on purpose (it sends heartbeats itself).
Optuna warns about each; under `python -W error` (Hydra's test helpers, many pytest setups)
those warnings would become the user's errors. They are the sweeper's business, so they are
ignored around its calls only: the same warning from the user's own code still shows.
"""

import contextlib
import warnings
from collections.abc import Iterator

from optuna.exceptions import ExperimentalWarning


@contextlib.contextmanager
def our_optuna_calls() -> Iterator[None]:
    # catch_warnings swaps the process's filter list: another thread warning meanwhile would
    # be filtered too. Only Optuna's experimental notices are, and the sweeper's threads (one
    # per launcher slot) all make the same calls.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield
