"""hpsweep's Optuna sweeper for Hydra: `hydra/sweeper=hpsweep`.

What others may use: the names the sweeper's files and its study share, the study of a
sweep and what reads or writes it as the sweeper does (its storage, search space, locks),
`current_trial()` for the job, `stop_on_signals()` for an entry point's own runs (SIGTERM
and SIGUSR1 raised as Ctrl-C is, as `Stopped`; `exit_code` and `stopped_how` say it), and the
marks a task function may carry: `fusable` (it trains trials together), `declares_direction`
(its config says which way its objective improves) and `checks_config` (its configs can be
checked before any trial runs).
Everything in a `_module` is the sweeper's own.

Hydra imports every module of a plugin at start-up, except those whose names begin with "_":
the Optuna-heavy code lives in those, and this face imports optuna only when called, so a plain
`hpsweep-train` run does not pay for it.
"""

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra_plugins.hpsweep_sweeper._names import (
    CHECKS,
    DIRECTION,
    FAIL_REASON,
    FUSABLE,
    JOURNAL_FILE,
    MAX_RETRIES,
    NEVER_STARTED,
    OVERRIDES,
    RETRY_OF,
    SEARCH_SPACE,
    TRIAL_DIR,
    WORKER,
    Done,
    RebuildError,
    SearchSpaceError,
)
from hydra_plugins.hpsweep_sweeper._records import Rebuilt, TrialFound
from hydra_plugins.hpsweep_sweeper._running import current_trial, running_trial
from hydra_plugins.hpsweep_sweeper._signals import (
    Stopped,
    exit_code,
    stop_on_signals,
    stopped_how,
)

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

    from hydra_plugins.hpsweep_sweeper._search_space import SearchSpace as SearchSpace

__all__ = [
    "CHECKS",
    "DIRECTION",
    "FAIL_REASON",
    "FUSABLE",
    "JOURNAL_FILE",
    "MAX_RETRIES",
    "NEVER_STARTED",
    "OVERRIDES",
    "RETRY_OF",
    "SEARCH_SPACE",
    "TRIAL_DIR",
    "WORKER",
    "Done",
    "RebuildError",
    "Rebuilt",
    "SearchSpaceError",
    "Stopped",
    "TrialFound",
    "abandoned_trial_dirs",
    "checks_config",
    "current_trial",
    "declares_direction",
    "exit_code",
    "fusable",
    "load_sweep_study",
    "open_sweep_storage",
    "parse_search_space",
    "rebuild_study",
    "retries_left",
    "running_trial",
    "search_space",
    "stop_on_signals",
    "stopped_how",
]


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


def rebuild_study(
    sweep_dir: Path | str,
    read_trials: "Callable[[Any, list[str]], list[TrialFound]]",
    storage: str | None = None,
    direction: tuple[str, Callable[[Any], str | None]] | None = None,
) -> Rebuilt:
    """Write the study of a sweep anew from its trial dirs alone: parameters, states, values,
    per-step values and the search space. Running the sweep command again continues it.

    read_trials(the sweep's job config from multirun.yaml, notes) -> each trial dir as the
    task's files tell it (TrialFound), appending to `notes` what it could not use. `direction`:
    the task's declares_direction arguments, for a sweep whose direction followed them.
    `storage`: where to (default: the sweep's `storage` setting from its multirun.yaml). A
    journal file that is there is moved aside to <name>.bak-<time>, never overwritten; in a
    database, the study must not exist yet. RebuildError says what stops it.
    """
    from hydra_plugins.hpsweep_sweeper._rebuild import rebuild

    return rebuild(sweep_dir, read_trials, storage, direction)


def search_space(params: dict[str, Any], arguments: list[str]) -> dict[str, "BaseDistribution"]:
    """Parameter name -> Optuna distribution, as the sweeper reads `hydra.sweeper.params` and
    the command line's sweeps (which win); a searched list is one parameter per element
    (`key.0`, `key.1`). ValueError for a space the sweeper would refuse."""
    return parse_search_space(params, arguments).distributions


def retries_left(study: "optuna.Study", trial: "optuna.trial.FrozenTrial") -> int:
    """How many more times the sweeper runs this trial again if its worker dies."""
    from hydra_plugins.hpsweep_sweeper._study import retries_left as left

    return left(study, trial)


def abandoned_trial_dirs(sweep_dir: Path, trial_dirs: list[Path]) -> set[Path]:
    """Those of `trial_dirs` whose trial no live worker runs (the sweeper's own test)."""
    from hydra_plugins.hpsweep_sweeper._workers import abandoned_trial_dirs as abandoned

    return abandoned(sweep_dir, trial_dirs)


def parse_search_space(params: dict[str, Any], arguments: list[str]) -> "SearchSpace":
    """The whole search space as the sweeper reads it (see `search_space`): distributions,
    fixed values, a grid sampler's values, the lists searched element by element, and the
    signature the study keeps. SearchSpaceError for a space the sweeper would refuse."""
    from hydra_plugins.hpsweep_sweeper._search_space import parse_search_space as parse

    return parse(params, arguments)


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


def declares_direction(key: str, direction_of: Callable[[Any], str | None]) -> Callable[[Any], Any]:
    """Mark a task function whose job config says which way its objective improves.

    The value at `key` (a dotted key of the job config, such as "objective") decides:
    direction_of(value) -> "maximize", "minimize", or None for no say; it is asked only when
    that value is a scalar. The study then goes that way when hydra.sweeper.direction is null,
    and a direction setting that disagrees is refused before any trial runs: a sweep steering
    the other way would call the worst trial the best.
    Put it under @hydra.main (Hydra hands sweepers the undecorated function).
    """

    def mark(task_function: Any) -> Any:
        setattr(task_function, DIRECTION, (key, direction_of))
        return task_function

    return mark


def checks_config(check: Callable[[Any], None]) -> Callable[[Any], Any]:
    """Mark a task function whose job configs can be checked before any trial runs.

    check(job config) raises an exception whose message names the key and what it allows (it
    must not do the job's work: no data, no model). Before the study is touched, the sweeper
    composes a job config for the sweep's fixed values, each choice and each end of a range or
    interval, and each queued trial, and refuses the sweep in one line at the first config that
    cannot be composed or that `check` refuses: no trial is spent finding it.
    Put it under @hydra.main (Hydra hands sweepers the undecorated function).
    """

    def mark(task_function: Any) -> Any:
        setattr(task_function, CHECKS, check)
        return task_function

    return mark
