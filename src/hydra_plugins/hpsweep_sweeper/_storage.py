"""The sweep's Optuna storage: a journal file in the sweep dir, or a database (sqlite,
PostgreSQL, MySQL) with heartbeats, whose every call is retried through an outage of up to two
minutes (a restart, a network cut) so that it costs time, not trials.
"""

import contextlib
import errno
import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from hydra.errors import CompactHydraException
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._experimental import our_optuna_calls
from hydra_plugins.hpsweep_sweeper._journal import open_journal
from hydra_plugins.hpsweep_sweeper._names import JOURNAL_FILE, wait_scale
from hydra_plugins.hpsweep_sweeper._study import requeue

log = logging.getLogger(__name__)
T = TypeVar("T")


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

        check_sqlite_folder(url)
        return with_retries(connect, "connecting", mask_password(url))
    path = sweep_dir / JOURNAL_FILE if storage is None else Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return journal_storage(path)


def check_sqlite_folder(url: str) -> None:
    """SQLite creates its file but not the folders: a missing one is said, not retried."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    if path.name not in ("", ":memory:") and not path.parent.is_dir():
        raise FileNotFoundError(f"the folder {path.parent} of the SQLite file does not exist")


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


def retry_delays() -> tuple[float, ...]:
    return tuple(delay * wait_scale() for delay in RETRY_DELAYS)  # HPSWEEP_WAIT_SCALE


# SQLSTATE classes of errors that pass: connection lost or refused (08), transaction rolled
# back by a conflict (40), server out of resources such as connections (53), server shutting
# down or starting up (57P).
TRANSIENT_SQLSTATES = ("08", "40", "53", "57P")


def with_retries(action: Callable[[], T], what: str, where: str) -> T:
    """`action()`, tried again after each of RETRY_DELAYS while the storage cannot be reached;
    any other error is raised at once (a missing study, a finished trial: answers, not outages).

    Every call of an RDB storage goes through here (RetryingRDBStorage), and so does the
    sweeper's tell. A call that gave up inside `action` is not retried again around it."""
    delays = retry_delays()
    for tries, delay in enumerate((*delays, None), start=1):
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
                    f"over {sum(delays):g} s): {error}; once it is reachable, run the same "
                    "command again to continue the study"
                ) from None
            log.warning("storage error while %s (%s); retrying in %g s", what, error, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def outage_cause(error: BaseException) -> BaseException | None:
    """The exception in `error`'s chain saying that the storage could not be reached, if any:
    a connection lost or refused, a server restarting, a timeout, a network filesystem's hiccup.
    Optuna wraps the driver's error (StorageInternalError from an SQLAlchemy error)."""
    import sqlalchemy.exc as sa

    for e in chain(error):
        if isinstance(e, StorageUnavailable):  # retried already, and given up on
            return None
        if isinstance(e, sa.DBAPIError):
            code = getattr(e.orig, "sqlstate", None) or getattr(e.orig, "pgcode", None)
            transient = code is None or str(code).startswith(TRANSIENT_SQLSTATES)
            transient = transient and not permanent_refusal(e.orig)
            lost = isinstance(e, sa.OperationalError | sa.InterfaceError) and transient
            return e if lost or e.connection_invalidated else None
        if isinstance(e, sa.DisconnectionError | sa.TimeoutError):
            return e
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            return None
        if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS:  # a disk full: no waiting
            return None
        if isinstance(e, OSError):  # ConnectionError, TimeoutError, EIO on a network disk
            return e
    return None


def chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and the exceptions it was raised from or while handling, as a traceback shows
    them (a `raise ... from None` ends the chain)."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


# A server's refusal that no wait changes (a connection error carries no SQLSTATE): a database
# or role that does not exist, wrong credentials, a host the server does not let in.
PERMANENT_REFUSALS = (
    "does not exist",
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "permission denied",
    "access denied",
    "unknown database",
)
# SQLite: only a lock held by another writer passes; a file it cannot open or write does not.
SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED")


def permanent_refusal(error: BaseException | None) -> bool:
    """Whether a driver's error is an answer that no retry changes."""
    if error is None:
        return False
    name = getattr(error, "sqlite_errorname", None)
    if name is not None:
        return not str(name).startswith(SQLITE_TRANSIENT)
    text = str(error).lower()
    return any(reason in text for reason in PERMANENT_REFUSALS)


# Errors of the machine the sweep runs on, which every trial would meet in turn: a full disk
# or quota, a read-only or unwritable folder. They stop the sweep instead of failing trials.
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def environment_cause(error: BaseException) -> OSError | None:
    """The OSError in `error`'s chain that is the machine's fault (ENVIRONMENT_ERRNOS)."""
    return next(
        (e for e in chain(error) if isinstance(e, OSError) and e.errno in ENVIRONMENT_ERRNOS),
        None,
    )


def describe_os_error(error: OSError) -> str:
    """'no space left on device (ENOSPC) writing /path'"""
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    what = (error.strerror or str(error)).lower()
    where = f" writing {error.filename}" if error.filename else ""
    return f"{what} ({name}){where}"


class EnvironmentStop(CompactHydraException):
    """The sweep stopped for its machine (a full disk, an unwritable folder); nothing was
    charged to any trial."""


class StorageUnavailable(CompactHydraException):
    """Shown by Hydra as its message alone: a machine's fault, not a bug."""


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDB storage with every call retried through an outage (`with_retries`).

    Wrapping the storage rather than the sweeper's call sites leaves none out: Optuna's calls
    inside ask(), the sampler's and pruner's reads, the job's reports, heartbeats, the final
    report. Optuna's cache (which create_study puts in front of an RDB storage) calls the
    private methods listed too. A write whose commit went through but whose answer the outage
    took is done again: harmless for values and attributes (set to the same value). Three are
    not, and are handled below: finishing a trial, taking a queued trial (the second try would
    find it taken and leave it, so it would never run), and queueing one (it would run twice).
    A new trial created twice leaves one RUNNING with no dir, which the sweep fails as never
    started (_study.close_unstarted).
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
                done = RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except UpdateFinishedTrialError:
                # An earlier try finished it, and only its answer was lost.
                if tries > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True
                raise
            if not done and tries > 1 and state == TrialState.RUNNING:
                # Taken off the queue by an earlier try whose answer was lost: ours, as
                # workers take queued trials one at a time, under the sweep's ask lock.
                return RDBStorage.get_trial(self, trial_id).state == TrialState.RUNNING
            return done

        return with_retries(attempt, "calling set_trial_state_values", self.where)

    def _create_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None = None
    ) -> FrozenTrial:
        if template_trial is None:  # a new RUNNING trial: see close_unstarted
            return with_retries(
                lambda: RDBStorage._create_new_trial(self, study_id),
                "calling _create_new_trial",
                self.where,
            )
        # A queued trial (a warm start, a retry): made again after a lost answer, it would
        # run twice. A try after the first looks for it among the trials created since.
        before = with_retries(lambda: self.get_n_trials(study_id), "counting trials", self.where)
        tries = 0

        def attempt() -> FrozenTrial:
            nonlocal tries
            tries += 1
            if tries > 1:
                for trial in RDBStorage.get_all_trials(self, study_id, deepcopy=False):
                    if trial.number >= before and same_trial(trial, template_trial):
                        return trial
            return RDBStorage._create_new_trial(self, study_id, template_trial)

        return with_retries(attempt, "calling _create_new_trial", self.where)


def same_trial(stored: FrozenTrial, template: FrozenTrial) -> bool:
    """Whether `stored` is `template` as a storage creates it (number, id and times aside)."""
    return (
        stored.state == template.state
        and stored.params == template.params
        and stored.user_attrs == template.user_attrs
        and stored.system_attrs == template.system_attrs
        and stored.intermediate_values == template.intermediate_values
        and stored.values == template.values
    )


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
    "create_new_trial",  # _create_new_trial: see RetryingRDBStorage
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
    *_compat.RDB_CACHE_CALLS,  # what Optuna itself calls instead of some of the above
)


def _retried(name: str) -> Callable[..., Any]:
    call = getattr(RDBStorage, name)

    @functools.wraps(call)
    def retried(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return with_retries(lambda: call(self, *args, **kwargs), f"calling {name}", self.where)

    return retried


for _name in RETRIED_CALLS:
    if _name not in RetryingRDBStorage.__dict__:  # those it defines retry in their own way
        setattr(RetryingRDBStorage, _name, _retried(_name))


def describe_storage(storage: str | None, sweep_dir: Path) -> str:
    if storage is None:
        return str(sweep_dir / JOURNAL_FILE)
    return mask_password(storage)


@contextlib.contextmanager
def heartbeat(client: BaseStorage, trial: Trial, interval: int) -> Iterator[None]:
    """RDB storages: record the trial's heartbeat every `interval` seconds while it runs."""
    if not isinstance(client, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                client.record_heartbeat(_compat.trial_id(trial))
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
