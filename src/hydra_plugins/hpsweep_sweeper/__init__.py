"""hpsweep's Optuna sweeper for Hydra: `hydra/sweeper=hpsweep`.

Hydra imports every module of a plugin at start-up, except those whose names begin with "_":
the Optuna-heavy code lives in those, so a plain `hpsweep-train` run does not pay for it.
"""

from typing import Any

# Names the sweeper's files and the study share, read back by hpsweep.results.
JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep dir
TRIAL_DIR = "trial_dir"  # user attribute: the trial's dir, relative to the sweep dir

_running: list[Any] = [None]


def current_trial() -> Any:
    """The optuna.Trial of the job running in this process, or None outside a sweep.

    A job reports its objective to it every epoch and stops when the pruner says so.
    """
    return _running[0]
