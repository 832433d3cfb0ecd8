"""The study in its storage, shared by every worker: budget, trial dirs, dead workers.

Every worker process runs the same loop against the same storage; nothing is coordinated in
memory. Two kinds of lock keep them apart, both `flock`s that the kernel releases when a
process dies, even by SIGKILL:
- `<sweep dir>/.ask.lock`, held while a worker picks its next trial, so the budget check, the
  ask and the claim of a trial dir happen as one step;
- `<trial dir>/.lock`, held while the trial runs. A RUNNING trial whose lock is free has lost
  its worker: it is marked FAIL and re-queued with the same parameters into the same dir,
  where the job resumes from its last checkpoint.

Every trial of the study is in one state a user can see, and each counts toward n_trials
unless a retry continues it (superseded) or it never started (`close_unstarted`).
"""

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._names import (
    FAIL_REASON,
    MAX_RETRIES,
    NEVER_STARTED,
    OVERRIDES,
    RETRY_OF,
    SEARCH_SPACE,
    TRIAL_DIR,
)
from hydra_plugins.hpsweep_sweeper._names import WARM_STARTED as WARM_STARTED  # rebuild's
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

log = logging.getLogger(__name__)


@contextlib.contextmanager
def file_lock(path: Path, blocking: bool = True) -> Iterator[IO[str] | None]:
    """An exclusive flock on `path`; yields None when `blocking` is False and it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim_trial_dir(path: Path) -> IO[str]:
    """Hold `<trial dir>/.lock` until the returned file is closed (or the process dies)."""
    path.mkdir(parents=True, exist_ok=True)
    f = open(path / ".lock", "a")  # noqa: SIM115  (closed by the caller when the trial ends)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"{path} is in use by another worker") from None
    return f


def requeue_abandoned(
    study: optuna.Study, sweep_dir: Path, running: Sequence[FrozenTrial] | None = None
) -> list[int]:
    """Fail each RUNNING trial whose worker is gone and queue a retry of it.

    Gone: nobody holds its trial dir's lock. A worker tells the study before it unlocks, so
    the state is read again while holding the lock: a trial that finished in between is left
    alone instead of being run twice. `running`: the RUNNING trials as a `Tally` has them
    (else they are read, going through every trial of the study).
    """
    requeued = []
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in running:
        if TRIAL_DIR not in trial.user_attrs:
            continue
        with file_lock(sweep_dir / trial.user_attrs[TRIAL_DIR] / ".lock", blocking=False) as free:
            if free is None:
                continue  # its worker holds the lock: alive
            storage, trial_id = _compat.storage_of(study), _compat.trial_id(trial)
            if storage.get_trial(trial_id).state != TrialState.RUNNING:
                continue
            why = "its worker died (its trial dir is no longer locked)"
            if retries_left(study, trial) == 0:
                why += f"; retried {len(retry_history(trial))} times, not again "
                why += f"(hydra.sweeper.max_retries={max_retries(study)})"
            # before the tell: a finished trial's attributes can no longer be set
            storage.set_trial_user_attr(trial_id, FAIL_REASON, why)
            tell_study(study, trial.number, state=TrialState.FAIL)
            if requeue(study, trial, why):
                requeued.append(trial.number)
    return requeued


UNSTARTED = (
    "never started: its worker stopped between the study's record of the trial and its trial "
    "dir (killed, disk full, or a storage reply lost); it takes no slot of n_trials"
)


def close_unstarted(study: optuna.Study, running: Sequence[FrozenTrial]) -> list[int]:
    """Fail each RUNNING trial that never got a trial dir, marked NEVER_STARTED so that it
    takes no slot of n_trials; one that was queued (warm start) is queued again.

    Call it holding the sweep's ask lock: a worker asks for a trial and records its dir under
    that lock, so a RUNNING trial without one is then no worker's, whatever left it (a kill
    between the two, an exception, a create whose reply a storage outage lost and which the
    retry made again). Such a trial has no heartbeat and no dir lock: nothing else would ever
    end it, and it would hold its slot forever.
    """
    closed = []
    storage = _compat.storage_of(study)
    for trial in running:
        if TRIAL_DIR in trial.user_attrs:
            continue
        current = storage.get_trial(_compat.trial_id(trial))
        if current.state != TrialState.RUNNING or TRIAL_DIR in current.user_attrs:
            continue
        trial_id = _compat.trial_id(current)
        storage.set_trial_user_attr(trial_id, FAIL_REASON, UNSTARTED)
        storage.set_trial_user_attr(trial_id, NEVER_STARTED, True)
        tell_study(study, current.number, state=TrialState.FAIL)
        queued = _compat.queued_params(current)
        again = ""
        if queued is not None:  # the warm start's values: they are owed a run
            study.enqueue_trial(queued, skip_if_exists=False)
            again = "; its queued parameters are queued again"
        log.warning("trial %d %s%s", current.number, UNSTARTED, again)
        closed.append(current.number)
    return closed


def tell_study(study: optuna.Study, trial: Any, **outcome: Any) -> None:
    """study.tell outside Study.optimize. GridSampler asks the study to stop once every grid
    point was asked, which only Study.optimize allows: the tell is stored by then, and the
    sweep ends on its own count (n_trials is capped at the grid's size)."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def retry_history(trial: FrozenTrial) -> list[int]:
    """The trials this one continues, oldest first: Optuna's own record of retries (the system
    attributes RetryHeartbeatStaleTrialCallback writes, so its helpers read ours)."""
    return _compat.retry_history(trial)


def max_retries(study: optuna.Study) -> int:
    return int(study.user_attrs.get(MAX_RETRIES, HpsweepSweeperConf.max_retries))


def retries_left(study: optuna.Study, trial: FrozenTrial) -> int:
    return max(0, max_retries(study) - len(retry_history(trial)))


def requeue(study: optuna.Study, trial: FrozenTrial, why: str) -> bool:
    """Queue a retry of a trial whose worker died: same parameters, same trial dir (where the
    job resumes from last.pt), linked to the trial it continues by `retry_of`. At most
    max_retries times: a trial that kills its worker every time (out of memory, say) then
    stays FAIL and counts toward max_failure_rate. Returns whether it was queued."""
    if TRIAL_DIR not in trial.user_attrs:  # died before it had a dir: nothing to resume
        return False
    if retries_left(study, trial) == 0:
        log.error("trial %d failed: %s", trial.number, why)
        return False
    history = [*retry_history(trial), trial.number]
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={
                TRIAL_DIR: trial.user_attrs[TRIAL_DIR],
                OVERRIDES: trial.user_attrs.get(OVERRIDES, []),
                RETRY_OF: history[0],
            },
            system_attrs=_compat.retry_system_attrs(history),
        )
    )
    log.warning(
        "trial %d: %s; queued again to resume in %s",
        trial.number,
        why,
        trial.user_attrs[TRIAL_DIR],
    )
    return True


def superseded(trials: list[FrozenTrial]) -> set[int]:
    """Trials continued by a newer trial in the same trial dir (a retry after a lost worker)."""
    newest: dict[str, int] = {}
    for t in trials:
        if TRIAL_DIR in t.user_attrs:
            newest[t.user_attrs[TRIAL_DIR]] = max(newest.get(t.user_attrs[TRIAL_DIR], -1), t.number)
    return {
        t.number
        for t in trials
        if TRIAL_DIR in t.user_attrs and t.number < newest[t.user_attrs[TRIAL_DIR]]
    }


def uncounted(trials: list[FrozenTrial]) -> set[int]:
    """Trials that take no slot of n_trials: those a retry continues, and those that never
    started."""
    unstarted = {t.number for t in trials if t.user_attrs.get(NEVER_STARTED)}
    return superseded(trials) | unstarted


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward n_trials: all but the uncounted ones."""
    return len(trials) - len(uncounted(trials))


def failures(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Failed trials that count: neither continued by a retry nor never started."""
    gone = uncounted(trials)
    return [t for t in trials if t.state == TrialState.FAIL and t.number not in gone]


def check_search_space(
    study: optuna.Study, signature: dict[str, Any], allow_change: bool, where: str
) -> None:
    stored = study.user_attrs.get(SEARCH_SPACE)
    if stored is None:
        study.set_user_attr(SEARCH_SPACE, signature)
        return
    if stored == signature:
        return
    changed = sorted(
        k for k in stored.keys() | signature.keys() if stored.get(k) != signature.get(k)
    )
    if not allow_change:
        raise ValueError(
            f"study '{study.study_name}' in {where} was created with another search space "
            f"(changed: {', '.join(changed)}). Use a new hydra.sweeper.study_name for the new "
            "space, or set hydra.sweeper.allow_space_change=true to continue this study with it."
        )
    log.warning("search space changed (%s); continuing as allow_space_change=true", changed)
    study.set_user_attr(SEARCH_SPACE, signature)


def worker_threads(n_jobs: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // n_jobs)
