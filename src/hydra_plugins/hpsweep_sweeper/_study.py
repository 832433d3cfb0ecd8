"""The study in its storage, shared by every worker: budget, trial dirs, dead workers.

Every worker process runs the same loop against the same storage; nothing is coordinated in
memory. Two kinds of lock keep them apart, both `flock`s that the kernel releases when a
process dies, even by SIGKILL:
- `<sweep dir>/.ask.lock`, held while a worker picks its next trial, so the budget check, the
  ask and the claim of a trial dir happen as one step;
- `<trial dir>/.lock`, held while the trial runs. A RUNNING trial whose lock is free has lost
  its worker: it is marked FAIL and re-queued with the same parameters into the same dir,
  where the job resumes from its last checkpoint.
"""

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper import JOURNAL_FILE, OVERRIDES, RETRY_OF, TRIAL_DIR

log = logging.getLogger(__name__)
T = TypeVar("T")

# study user attributes (the trials' are in the package's face)
SEARCH_SPACE = "search_space"
WARM_STARTED = "warm_started"  # the `enqueue` list has been queued


def mask_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db"""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(
    storage: str | None, sweep_dir: Path, heartbeat_interval: int, grace_period: int
) -> BaseStorage:
    """An Optuna storage from the sweeper's `storage` setting.

    None: a journal file in the sweep dir, safe for many processes on one machine and with no
    server. A URL (sqlite:///, postgresql://, mysql://): Optuna's RDB storage, with heartbeats,
    so any worker can tell a trial whose worker (or machine) died after `grace_period` seconds.
    Anything else is taken as the path of a journal file.
    """
    if storage is not None and "://" in storage:
        return RDBStorage(
            storage,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=lambda study, trial: requeue(
                study, trial, "sent no heartbeat"
            ),
        )
    path = sweep_dir / JOURNAL_FILE if storage is None else Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return journal_storage(path)


def journal_storage(path: Path) -> JournalStorage:
    # Absolute: Optuna's lock is a symlink to this path, and it takes over a lock left by a
    # killed writer (after 30 s) only if the link resolves; a relative one dangles in the
    # sweep dir, and every other worker then waits for it forever.
    return JournalStorage(JournalFileBackend(str(path.absolute())))


def with_retries(action: Callable[[], T], what: str, where: str, attempts: int = 6) -> T:
    """`action()`, retried with back-off (1, 2, 4, 8, 16 s) when the storage fails: a database
    restart or a network blip must not fail a trial whose files are already written."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as e:  # drivers raise many types; a real bug fails again and surfaces
            if attempt == attempts - 1:
                raise StorageUnavailable(
                    f"the study's storage {where} did not answer while {what} "
                    f"({attempts} tries over {2 ** (attempts - 1) - 1} s): {mask_password(str(e))}"
                ) from None
            log.warning(
                "storage error while %s (%s); retrying in %d s",
                what,
                mask_password(str(e)).splitlines()[0],
                2**attempt,
            )
            time.sleep(2**attempt)
    raise AssertionError("unreachable")


class StorageUnavailable(RuntimeError):
    pass


def describe_storage(storage: str | None, sweep_dir: Path) -> str:
    if storage is None:
        return str(sweep_dir / JOURNAL_FILE)
    return mask_password(storage)


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


def requeue_abandoned(study: optuna.Study, sweep_dir: Path) -> list[int]:
    """Fail each RUNNING trial whose worker is gone and queue a retry of it.

    Gone: nobody holds its trial dir's lock. A worker tells the study before it unlocks, so
    the state is read again while holding the lock: a trial that finished in between is left
    alone instead of being run twice.
    """
    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if TRIAL_DIR not in trial.user_attrs:
            continue
        with file_lock(sweep_dir / trial.user_attrs[TRIAL_DIR] / ".lock", blocking=False) as free:
            if free is None:
                continue  # its worker holds the lock: alive
            if study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING:
                continue
            study.tell(trial.number, state=TrialState.FAIL)
            requeue(study, trial, "its trial dir is no longer locked")
            requeued.append(trial.number)
    return requeued


def requeue(study: optuna.Study, trial: FrozenTrial, why: str) -> None:
    """Queue a retry of a failed trial: same parameters, same trial dir (where the job resumes
    from last.pt), linked to the trial it continues by `retry_of`."""
    if TRIAL_DIR not in trial.user_attrs:  # died before it had a dir: nothing to resume
        return
    study.enqueue_trial(
        trial.params,
        user_attrs={
            TRIAL_DIR: trial.user_attrs[TRIAL_DIR],
            OVERRIDES: trial.user_attrs.get(OVERRIDES, []),
            RETRY_OF: trial.user_attrs.get(RETRY_OF, trial.number),
        },
    )
    log.warning(
        "trial %d lost its worker (%s); queued again to resume in %s",
        trial.number,
        why,
        trial.user_attrs[TRIAL_DIR],
    )


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


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward n_trials: all but those a retry continues."""
    return len(trials) - len(superseded(trials))


def epochs_spent(trials: list[FrozenTrial]) -> int:
    """Epochs the study's jobs have reported, running and superseded trials included."""
    return sum(len(t.intermediate_values) for t in trials)


def failures(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Failed trials that no retry continues."""
    gone = superseded(trials)
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


@contextlib.contextmanager
def heartbeat(client: BaseStorage, trial: optuna.Trial, interval: int) -> Iterator[None]:
    """RDB storages: record the trial's heartbeat every `interval` seconds while it runs."""
    if not isinstance(client, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                client.record_heartbeat(trial._trial_id)
            except Exception as e:  # a missed beat is fine; grace_period allows several
                log.warning(
                    "heartbeat of trial %d failed: %s",
                    trial.number,
                    mask_password(str(e)).splitlines()[0],
                )

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
