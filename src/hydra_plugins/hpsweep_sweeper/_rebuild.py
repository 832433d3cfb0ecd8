"""Rebuild a sweep's study from its trial dirs alone (`hpsweep rebuild`), when its storage is
lost or damaged: a deleted journal, a sweep dir copied without it, a database gone.

The files hold what the study held: a trial's parameters in .hydra/overrides.yaml (typed by the
search space in multirun.yaml); its state, value and the values it reported each step in the
task's own files, which the task reads (`read_trials`). The rebuilt study carries the search
space's signature, as one the sweeper made does, so running the sweep command again
continues it.

Trial numbers are kept, because the sweeper names a new trial's dir after its number: trial N
is the number in its dir's hydra.yaml (the newest, after retries). A number no dir holds gets a
FAIL trial in its place: a retry's predecessor (superseded, as the original was), or one no dir
holds, which never started or whose dir is gone (marked never started). Neither counts toward
n_trials or as a failure: the budget is of trials whose files are there to tell.
"""

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState, create_trial

from hydra_plugins.hpsweep_sweeper._compat import grid_system_attrs
from hydra_plugins.hpsweep_sweeper._journal import backup_path
from hydra_plugins.hpsweep_sweeper._names import (
    FAIL_REASON,
    JOURNAL_FILE,
    NEVER_STARTED,
    OVERRIDES,
    RETRY_OF,
    SEARCH_SPACE,
    TRIAL_DIR,
    WARM_STARTED,
    RebuildError,
)
from hydra_plugins.hpsweep_sweeper._rebuild_read import (
    Declared,
    Sweep,
    read_multirun,
    trial_params,
)
from hydra_plugins.hpsweep_sweeper._records import Rebuilt, TrialFound
from hydra_plugins.hpsweep_sweeper._storage import describe_storage, mask_password, open_storage
from hydra_plugins.hpsweep_sweeper._study import file_lock
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

# read_trials(the sweep's job config, notes) -> its trial dirs as the task's files tell them
ReadTrials = Callable[[DictConfig, list[str]], list[TrialFound]]


def rebuild(
    sweep_dir: Path | str,
    read_trials: ReadTrials,
    storage: str | None = None,
    declared: Declared | None = None,
) -> Rebuilt:
    """Write the study of `sweep_dir` from its trial dirs into `storage` (see the face's
    `rebuild_study`)."""
    sweep_path = Path(sweep_dir)
    sweep = read_multirun(sweep_path, declared)
    storage = storage if storage is not None else sweep.storage
    if storage is not None and "***" in storage:
        raise RebuildError(
            f"multirun.yaml: hydra.sweeper.storage={storage}: its password is not saved; "
            "pass --storage with the whole URL"
        )
    notes: list[str] = []
    if sweep.custom_search_space:
        notes.append(
            "hydra.sweeper.custom_search_space: the parameters it suggests are not in "
            "multirun.yaml's search space and are left out of the rebuilt trials"
        )
    found = read_trials(sweep.config, notes)
    for f in found:
        lock = sweep_path / f.dir / ".lock"
        if lock.exists():
            with file_lock(lock, blocking=False) as free:
                if free is None:
                    raise RebuildError(
                        f"{f.dir} is running (a worker holds {lock}): stop the sweep "
                        "before rebuilding its study"
                    )
    trials = number_trials(found, sweep, notes)

    where = describe_storage(storage, sweep_path)
    with file_lock(sweep_path / ".ask.lock", blocking=False) as free:
        if free is None:
            raise RebuildError(f"a sweep is picking trials in {sweep_path}: stop it first")
        backup = _make_room(sweep_path, storage, sweep.study_name)
        # Heartbeats matter only to the workers that send them: the defaults do
        conf = HpsweepSweeperConf
        client = open_storage(storage, sweep_path, conf.heartbeat_interval, conf.grace_period)
        study = optuna.create_study(
            study_name=sweep.study_name,
            storage=client,
            directions=[StudyDirection[d.upper()] for d in sweep.directions],
        )
        study.set_user_attr(SEARCH_SPACE, sweep.space.signature())
        if sweep.warm_started:  # its `enqueue` list was queued when the sweep first started
            study.set_user_attr(WARM_STARTED, True)
        study.add_trials(trials)
    states = Counter(t.state.name for t in trials)
    return Rebuilt(sweep.study_name, where, dict(states), backup, sweep.arguments, notes)


# -- the study ---------------------------------------------------------------------------------


def number_trials(found: list[TrialFound], sweep: Sweep, notes: list[str]) -> list[FrozenTrial]:
    """The study's trials in number order, a FAIL one in place of each number no dir holds."""
    for f in found:
        f.number = f.number if f.number is not None else f.first
    found = sorted(found, key=lambda f: (f.number is None, f.number or 0, f.dir))
    trials: list[FrozenTrial] = []
    for f in found:
        while f.number is not None and len(trials) < f.number:
            trials.append(_in_place_of(len(trials), found, sweep, notes))
        retry = f.first is not None and f.number is not None and f.first < f.number
        retry_of = f.first if retry else None
        trials.append(_frozen(f, sweep, retry_of, notes))
    return trials


def _in_place_of(
    number: int, found: list[TrialFound], sweep: Sweep, notes: list[str]
) -> FrozenTrial:
    # A retry runs in the dir of the trial it continues: trial_0003 holding trial 6 means that
    # trial 3 lost its worker (and so did any retry between them, which nothing here names).
    for f in found:
        if f.first == number and f.number is not None and number < f.number:
            superseded = TrialFound(f.dir, number, f.first, overrides=f.overrides)
            superseded.fail_reason = f"rebuilt: its worker died; trial {f.number} continued it"
            return _frozen(superseded, sweep, None, [])  # its dir's notes are the retry's
    notes.append(f"trial {number}: no trial dir holds it; rebuilt as FAIL, taking no slot")
    why = "rebuilt: no trial dir holds this trial (it never started, or its dir is gone)"
    return create_trial(state=TrialState.FAIL, user_attrs={FAIL_REASON: why, NEVER_STARTED: True})


def _frozen(f: TrialFound, sweep: Sweep, retry_of: int | None, notes: list[str]) -> FrozenTrial:
    params = trial_params(f.overrides, sweep.space, f.dir, notes)
    user_attrs: dict[str, Any] = {TRIAL_DIR: f.dir, OVERRIDES: f.overrides}
    if retry_of is not None:
        user_attrs[RETRY_OF] = retry_of
    state = TrialState[f.state]
    if f.fail_reason is not None and state is TrialState.FAIL:
        user_attrs[FAIL_REASON] = f.fail_reason
    return create_trial(
        state=state,
        value=f.value,
        params=params,
        distributions={k: sweep.space.distributions[k] for k in params},
        user_attrs=user_attrs,
        system_attrs=_grid_attrs(params, sweep),
        intermediate_values=f.intermediate,
    )


def _grid_attrs(params: dict[str, Any], sweep: Sweep) -> dict[str, Any]:
    """What the grid sampler marks its trials with, so that it does not run a point again."""
    if sweep.grid is None or set(params) != set(sweep.grid):
        return {}
    point = tuple(params[k] for k in sweep.grid)
    if point not in sweep.grid_points:
        return {}
    return grid_system_attrs(sweep.grid, sweep.grid_points.index(point))


def _make_room(sweep_dir: Path, storage: str | None, study_name: str) -> Path | None:
    """A journal file that is there is moved aside (<name>.bak-<time>), never overwritten:
    returns where to. In a database, the study must not exist yet."""
    if storage is not None and "://" in storage:
        if study_name in optuna.get_all_study_names(storage):
            raise RebuildError(
                f"study {study_name} exists in {mask_password(storage)}: delete it "
                f"(optuna delete-study --study-name {study_name} --storage URL) or pass "
                "--storage for another database"
            )
        return None
    journal = sweep_dir / JOURNAL_FILE if storage is None else Path(storage)
    if not journal.exists():
        return None
    backup = backup_path(journal)  # named as a repaired journal's backup is
    journal.rename(backup)
    return backup
