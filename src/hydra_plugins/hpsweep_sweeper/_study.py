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
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import optuna
from hydra.errors import CompactHydraException
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper import FAIL_REASON, JOURNAL_FILE, OVERRIDES, RETRY_OF, TRIAL_DIR
from hydra_plugins.hpsweep_sweeper._experimental import our_optuna_calls
from hydra_plugins.hpsweep_sweeper._journal import open_journal
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

log = logging.getLogger(__name__)
T = TypeVar("T")

# study user attributes (the trials' are in the package's face)
SEARCH_SPACE = "search_space"
WARM_STARTED = "warm_started"  # the `enqueue` list has been queued
# The sweep's max_retries, kept with the study so that every worker's requeue (a heartbeat
# callback has no sweep settings at hand) applies the same limit.
MAX_RETRIES = "max_retries"


def mask_password(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db"""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_storage(
    storage: str | None, sweep_dir: Path, heartbeat_interval: int, grace_period: int
) -> BaseStorage:
    """An Optuna storage from the sweeper's `storage` setting.

    None: a journal file in the sweep dir, safe for many processes on one machine and with no
    server. A URL (sqlite:///, postgresql://, mysql://): Optuna's RDB storage, with heartbeats,
    so any worker can tell a trial whose worker (or machine) died after `grace_period` seconds,
    and every call retried through an outage (RetryingRDBStorage).
    Anything else is taken as the path of a journal file.
    """
    if storage is not None and "://" in storage:
        url = storage

        def connect() -> RetryingRDBStorage:
            with our_optuna_calls():  # heartbeats are experimental in Optuna
                return RetryingRDBStorage(
                    url,
                    engine_kwargs=engine_kwargs(url),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    heartbeat_stale_trial_callback=lambda study, trial: requeue(
                        study, trial, "sent no heartbeat"
                    ),
                )

        return with_retries(connect, "connecting", mask_password(url))
    path = sweep_dir / JOURNAL_FILE if storage is None else Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return journal_storage(path)


def journal_storage(path: Path) -> JournalStorage:
    # Absolute: Optuna's lock is a symlink to this path, and it takes over a lock left by a
    # killed writer (after 30 s) only if the link resolves; a relative one dangles in the
    # sweep dir, and every other worker then waits for it forever.
    return open_journal(path.absolute())


def engine_kwargs(url: str) -> dict[str, Any]:
    # Pre-ping: a pooled connection that the server or the network dropped (a restart, an
    # outage while the sweep process waited for its workers) is replaced when it is taken,
    # instead of failing the call that takes it. Costs one round trip per checkout.
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    libpq = url.split("://")[0] in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
    if libpq and "connect_timeout" not in url:
        # libpq waits on an unreachable host as long as the kernel does, minutes per try
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


# The one retry policy of the sweep's storage calls: seconds to wait before each new try.
# 127 s in all, so that a database restart or a network outage of a minute or two costs
# time, not trials.
RETRY_DELAYS = (1, 2, 4, 8, 16, 16, 16, 16, 16, 16, 16)
# SQLSTATE classes of errors that pass: connection lost or refused (08), transaction rolled
# back by a conflict (40), server out of resources such as connections (53), server shutting
# down or starting up (57P).
TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")


def with_retries(action: Callable[[], T], what: str, where: str) -> T:
    """`action()`, tried again after each of RETRY_DELAYS while the storage cannot be reached;
    any other error is raised at once (a missing study, a finished trial: answers, not outages).

    Every call of an RDB storage goes through here (RetryingRDBStorage), and so does the
    sweeper's tell. A call that gave up inside `action` is not retried again around it."""
    for tries, delay in enumerate((*RETRY_DELAYS, None), start=1):
        try:
            return action()
        except Exception as e:
            cause = outage_cause(e)
            if cause is None:
                raise
            error = mask_password(str(cause)).strip().split("\n")[0] or type(cause).__name__
            if delay is None:
                raise StorageUnavailable(
                    f"the study's storage {where} did not answer while {what} ({tries} tries "
                    f"over {sum(RETRY_DELAYS)} s): {error}; once it is reachable, run the same "
                    "command again to continue the study"
                ) from None
            log.warning("storage error while %s (%s); retrying in %d s", what, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def outage_cause(error: BaseException) -> BaseException | None:
    """The exception in `error`'s chain saying that the storage could not be reached, if any:
    a connection lost or refused, a server restarting, a timeout, a network filesystem's hiccup.
    Optuna wraps the driver's error (StorageInternalError from an SQLAlchemy error)."""
    import sqlalchemy.exc as sa

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageUnavailable):  # retried already, and given up on
            return None
        if isinstance(e, sa.DBAPIError):
            code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
            transient = code is None or str(code).startswith(TRANSIENT_SQLSTATES)
            lost = isinstance(e, sa.OperationalError | sa.InterfaceError) and transient
            return e if lost or e.connection_invalidated else None
        if isinstance(e, sa.DisconnectionError | sa.TimeoutError):
            return e
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            return None
        if isinstance(e, OSError):  # ConnectionError, TimeoutError, EIO on a network disk
            return e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    return None


class StorageUnavailable(CompactHydraException):
    """Shown by Hydra as its message alone: a machine's fault, not a bug."""


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDB storage with every call retried through an outage (`with_retries`).

    Wrapping the storage rather than the sweeper's call sites leaves none out: Optuna's calls
    inside ask(), the sampler's and pruner's reads, the job's reports, heartbeats, the final
    report. Optuna's cache (which create_study puts in front of an RDB storage) calls the
    private methods listed too. A write whose commit went through but whose answer the outage
    took is done again: harmless for values and attributes (set to the same value); finishing
    a trial is handled below; a trial created twice stays RUNNING with no heartbeat.
    """

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        self.where = mask_password(url)
        super().__init__(url, *args, **kwargs)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        tries = 0

        def attempt() -> bool:
            nonlocal tries
            tries += 1
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # An earlier try finished it, and only its answer was lost.
                if tries > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise

        return with_retries(attempt, "calling set_trial_state_values", self.where)


RETRIED_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
    "get_trial_params",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "record_heartbeat",
    "_get_stale_trial_ids",
    # what Optuna's cache calls instead of some of the above
    "_create_new_trial",
    "_set_trial_param",
    "_get_trials",
    "_get_best_trial_id",
)


def _retried(name: str) -> Callable[..., Any]:
    call = getattr(RDBStorage, name)

    @functools.wraps(call)
    def retried(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return with_retries(lambda: call(self, *args, **kwargs), f"calling {name}", self.where)

    return retried


for _name in RETRIED_CALLS:
    setattr(RetryingRDBStorage, _name, _retried(_name))


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
            if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
                continue
            why = "its worker died (its trial dir is no longer locked)"
            if retries_left(study, trial) == 0:
                why += f"; retried {len(retry_history(trial))} times, not again "
                why += f"(hydra.sweeper.max_retries={max_retries(study)})"
            # before the tell: a finished trial's attributes can no longer be set
            study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, why)
            tell_study(study, trial.number, state=TrialState.FAIL)
            if requeue(study, trial, why):
                requeued.append(trial.number)
    return requeued


def tell_study(study: optuna.Study, trial: Any, **outcome: Any) -> None:
    """study.tell outside Study.optimize. GridSampler asks the study to stop once every grid
    point was asked, which only Study.optimize allows: the tell is stored by then, and the
    sweep ends on its own count (n_trials is capped at the grid's size)."""
    try:
        study.tell(trial, **outcome)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def requeue_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """RDB storages call this for a trial they failed for its missing heartbeats."""
    requeue(study, trial, "its worker sent no heartbeat")


def retry_history(trial: FrozenTrial) -> list[int]:
    """The trials this one continues, oldest first: Optuna's own record of retries (the system
    attributes RetryHeartbeatStaleTrialCallback writes, so its helpers read ours)."""
    return list(trial.system_attrs.get("retry_history", []))


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
            system_attrs={"failed_trial": history[0], "retry_history": history},
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


def budget_used(trials: list[FrozenTrial]) -> int:
    """Trials that count toward n_trials: all but those a retry continues."""
    return len(trials) - len(superseded(trials))


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
