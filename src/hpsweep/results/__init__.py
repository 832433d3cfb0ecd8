"""A sweep's results: its trial dirs found and read, joined with its study, as pandas tables.

    from hpsweep.results import load_trials, load_curves, best_trial
    trials = load_trials("multirun/mlp")     # one row per trial, params_* columns

No torch: reading results never imports the training code.
"""

from hpsweep.results._rebuild import rebuild
from hpsweep.results._sweep_files import (
    HYDRA_KEYS,
    SweepDirError,
    find_trials,
    newest_sweep,
    sweep_signature,
)
from hpsweep.results._sweep_study import swept_distributions, swept_keys
from hpsweep.results._tables import (
    best_config,
    best_of,
    best_trial,
    load_curves,
    load_trials,
    trial_by_number,
)
from hpsweep.results._trial_rows import NEVER_STARTED, WORKER_GONE

__all__ = [
    "HYDRA_KEYS",
    "NEVER_STARTED",
    "WORKER_GONE",
    "SweepDirError",
    "best_config",
    "best_of",
    "best_trial",
    "find_trials",
    "load_curves",
    "load_trials",
    "newest_sweep",
    "rebuild",
    "sweep_signature",
    "swept_distributions",
    "swept_keys",
    "trial_by_number",
]
