"""hpsweep's Optuna sweeper for Hydra: `hydra/sweeper=hpsweep`.

What others may use: the names the sweeper's files and its study share, the study of a
sweep, `current_trial()` for the job, and `fusable` for a task that trains trials together.
Everything in a `_module` is the sweeper's own.

Hydra imports every module of a plugin at start-up, except those whose names begin with "_":
the Optuna-heavy code lives in those, and this face imports optuna only when called, so a plain
`hpsweep-train` run does not pay for it.
"""

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

    from hydra_plugins.hpsweep_sweeper._rebuild import Rebuilt

JOURNAL_FILE = "optuna.journal"  # the default storage, in the sweep dir
# user attributes the sweeper puts on trials
TRIAL_DIR = "trial_dir"  # the trial's dir, relative to the sweep dir
OVERRIDES = "overrides"  # the command-line overrides that reproduce the trial
RETRY_OF = "retry_of"  # number of the trial whose worker died, which this one continues
FAIL_REASON = "fail_reason"
WORKER = "worker"  # host:pid of the process that runs (or ran) the trial, and its GPUs if set


def open_sweep_storage(
    sweep_dir: Path | str, storage: str | None = None
) -> "optuna.storages.BaseStorage":
    """The Optuna storage of a sweep, opened as the sweeper opens it: `storage` is the
    sweeper's setting (null: the journal file in the sweep dir; a URL; a journal path)."""
    from hydra_plugins.hpsweep_sweeper._storage import open_storage
    from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf as Conf

    # Heartbeats matter only to the workers that send them; a reader keeps the defaults.
    return open_storage(storage, Path(sweep_dir), Conf.heartbeat_interval, Conf.grace_period)


def load_sweep_study(
    sweep_dir: Path | str, study_name: str, storage: str | None = None
) -> "optuna.Study":
    """The optuna.Study `study_name` of a sweep (see `open_sweep_storage` for `storage`)."""
    import optuna

    journal = Path(sweep_dir) / JOURNAL_FILE
    if storage is None and not journal.is_file():  # opening it would leave an empty journal
        raise FileNotFoundError(f"{journal} does not exist: no sweep with storage=null ran there")
    return optuna.load_study(study_name=study_name, storage=open_sweep_storage(sweep_dir, storage))


class RebuildError(ValueError):
    """A sweep whose study cannot be rebuilt, or a storage it cannot be written to; the message
    says what to do."""


def rebuild_study(sweep_dir: Path | str, storage: str | None = None) -> "Rebuilt":
    """Write the study of a sweep anew from its trial dirs alone: parameters, states, values,
    per-epoch values and the search space. Running the sweep command again continues it.

    `storage`: where to (default: the sweep's `storage` setting from its multirun.yaml). A
    journal file that is there is moved aside to <name>.bak-<time>, never overwritten; in a
    database, the study must not exist yet.
    """
    from hydra_plugins.hpsweep_sweeper._rebuild import rebuild

    return rebuild(sweep_dir, storage)


def search_space(params: dict[str, Any], arguments: list[str]) -> dict[str, "BaseDistribution"]:
    """Parameter name -> Optuna distribution, as the sweeper reads `hydra.sweeper.params` and
    the command line's sweeps (which win); a searched list is one parameter per element
    (`key.0`, `key.1`). ValueError for a space the sweeper would refuse."""
    from hydra_plugins.hpsweep_sweeper._search_space import parse_search_space

    return parse_search_space(params, arguments).distributions


def retries_left(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> int:
    """How many more times the sweeper runs this trial again if its worker dies."""
    from hydra_plugins.hpsweep_sweeper._study import retries_left as left

    return left(study, trial)


def abandoned_trial_dirs(sweep_dir: Path, trial_dirs: list[Path]) -> set[Path]:
    """Those of `trial_dirs` whose trial no live worker runs (the sweeper's own test)."""
    from hydra_plugins.hpsweep_sweeper._workers import abandoned_trial_dirs as abandoned

    return abandoned(sweep_dir, trial_dirs)


# A plain value, not a ContextVar: Hydra's plugin scan runs this module a second time, so the
# job's `current_trial` is no longer the module's, and submitit (cloudpickle) then pickles it by
# value, globals included; a ContextVar cannot be pickled.
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


# A task function marked by `fusable` carries (group_key, run_group) under this name.
FUSABLE = "hpsweep_fusable"
# done(i, outcome): trial i of a group ended; outcome is what the task function would have
# returned, or the exception that ended it (optuna.TrialPruned for a pruned trial).
Done = Callable[[int, Any], None]


def fusable(
    group_key: "Callable[[Any], Hashable | None]",
    run_group: "Callable[[Sequence[Any], Sequence[optuna.Trial], Done], None]",
    may_differ: Callable[[str], bool],
) -> Callable[[Any], Any]:
    """Mark a task function whose trials `hydra.sweeper.fuse=K` may train as one group.

    group_key(job config) -> trials with equal keys can share one job; None: this trial runs
    alone, as with fuse=1. run_group(job configs, their trials, done) runs such a group: each
    config is a whole job config (hydra node included, hydra.runtime.output_dir set); it
    reports each trial's end through `done` as soon as that trial leaves the group, and
    reports each trial once. A trial it does not report when it returns or raises fails with
    what it raised. It sets up its own logging; the sweeper restores its own afterwards.
    may_differ(parameter name): whether trials of one group may differ in that searched
    parameter (fuse_sampling=per_group samples the others once per group).
    Put it under @hydra.main (Hydra hands sweepers the undecorated function).
    """

    def mark(task_function: Any) -> Any:
        setattr(task_function, FUSABLE, (group_key, run_group, may_differ))
        return task_function

    return mark
