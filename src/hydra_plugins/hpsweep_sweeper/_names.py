"""The names the sweeper's modules and its public face share: files, attributes, markers.

Nothing here imports the rest of the sweeper, so every module can import it without a circle;
the package's face re-exports each name.
"""

import os
from collections.abc import Callable
from typing import Any

JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep dir
# user attributes the sweeper puts on trials
TRIAL_DIR = "trial_dir"  # the trial's dir, relative to the sweep dir
OVERRIDES = "overrides"  # the command-line overrides that reproduce the trial
RETRY_OF = "retry_of"  # number of the trial whose worker died, which this one continues
FAIL_REASON = "fail_reason"
WORKER = "worker"  # host:pid of the process that runs (or ran) the trial, and its GPUs if set
# True on a FAIL trial that never started: its worker stopped between the study's record of it
# and its trial dir (killed, disk full, a storage reply lost). It takes no slot of n_trials.
NEVER_STARTED = "never_started"

# user attributes the sweeper puts on the study
SEARCH_SPACE = "search_space"  # the space's signature, to refuse another one on resume
WARM_STARTED = "warm_started"  # the `enqueue` list has been queued
# The sweep's max_retries, kept with the study so that every worker's requeue (a heartbeat
# callback has no sweep settings at hand) applies the same limit.
MAX_RETRIES = "max_retries"

# A task function marked by `fusable` carries (group_key, run_group, may_differ) under this
# name, one marked by `declares_direction` (key, direction_of) under the next, and one marked by
# `checks_config` its check under the last.
FUSABLE = "hpsweep_fusable"
DIRECTION = "hpsweep_direction"
CHECKS = "hpsweep_checks_config"  # `checks_config`: check(job config), raising if refused
# done(i, outcome): trial i of a group ended; outcome is what the task function would have
# returned, or the exception that ended it (optuna.TrialPruned for a pruned trial).
Done = Callable[[int, Any], None]


class RebuildError(ValueError):
    """A sweep whose study cannot be rebuilt, or a storage it cannot be written to; the message
    says what to do."""


class SearchSpaceError(ValueError):
    """A search space the sweeper would refuse; the message names the expression."""


# HPSWEEP_WAIT_SCALE=0.1 makes the storage's waits a tenth as long: the retries through an
# outage and the grace before a dead writer's journal lock is taken over. An outage ten times
# shorter then takes the same tries, so a test drives the 30 s case's code paths in 3 s.
WAIT_SCALE = "HPSWEEP_WAIT_SCALE"


def wait_scale() -> float:
    return float(os.environ.get(WAIT_SCALE, "1"))
