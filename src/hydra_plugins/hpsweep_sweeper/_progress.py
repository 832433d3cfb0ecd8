"""What a user sees of a running sweep: whose line is which, and how far along it is.

- Every log record made while a trial's job runs in this process starts with `[trial N] `, in
  the console and in the trial's train.log alike. A record factory rather than a handler
  filter: Hydra replaces the handlers for each job (and again after it); the factory stays.
- After each trial, one line for the whole sweep: trials done by state, trials running, the
  best so far, the time elapsed and an estimate of the time left.
- Parallel workers share one terminal, so their jobs print progress lines instead of per-batch
  bars: HPSWEEP_PROGRESS=log in each worker (hpsweep-train reads it), unless the user set it.
"""

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from hydra_plugins.hpsweep_sweeper._storage import mask_password
from hydra_plugins.hpsweep_sweeper._tally import Tally

log = logging.getLogger(__name__)
PROGRESS_ENV = "HPSWEEP_PROGRESS"  # bar | log | off: how a job shows its batches
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@contextlib.contextmanager
def log_prefix(prefix: str) -> Iterator[None]:
    """Log records made inside this block (any logger, any thread) start with `prefix` (the
    trial or trials they come from)."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # No '%' in the prefix: a message with arguments formats as before.
        record.msg = f"{prefix}{record.msg}"
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        logging.setLogRecordFactory(previous)


@contextlib.contextmanager
def logging_as(
    handlers: list[logging.Handler], factory: Callable[..., logging.LogRecord]
) -> Iterator[None]:
    """The root logger's handlers and the record factory (log_prefix's) as given, for a block:
    the sweeper's own lines, made while a fused group's job has its logging set up. (The job's
    set-up closed the sweep's console handler; a closed StreamHandler still writes.)"""
    root = logging.getLogger()
    saved = root.handlers[:], logging.getLogRecordFactory()
    root.handlers[:] = handlers
    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        logging.setLogRecordFactory(saved[1])


def quiet_bars_in_workers() -> None:
    os.environ.setdefault(PROGRESS_ENV, "log")


class SweepProgress:
    """The sweep-level line after each trial, timed from this command's start."""

    def __init__(self, total: int, slots: int, timeout: float | None = None) -> None:
        self.total, self.slots, self.timeout = total, slots, timeout
        self.started = time.monotonic()  # system-wide on Linux: forked workers share it
        self.started_at = datetime.now()  # Optuna's trial times are naive local ones too

    def log(self, study: optuna.Study, tally: Tally) -> None:
        try:
            tally.refresh(study)
        except Exception as e:  # the storage gone past its retries: the next trial will say
            log.warning("sweep progress unknown: %s", mask_password(str(e)).splitlines()[0])
            return
        elapsed = time.monotonic() - self.started
        log.info(tally_line(tally, self.total, self.slots, elapsed, self.timeout))


def tally_line(
    tally: Tally, total: int, slots: int, elapsed: float, timeout: float | None = None
) -> str:
    """`trials 5/20 done (3 complete, 1 pruned, 1 failed), 2 running | best 0.9545 (trial 2) |
    1m05s elapsed, ~3m left`. Trials a retry continues are not counted (nor is their time);
    the estimate is the mean time of the trials the tally timed (those finished since this
    command's start), times the trials left, over the slots (`slots`, or more workers seen
    running); when the `timeout` comes first, the time until it (no trial starts after it)."""
    complete, pruned, failed = (tally.states[s] for s in FINISHED)
    running = tally.running
    done = complete + pruned + failed
    parts = [
        f"trials {done}/{total} done ({complete} complete, {pruned} pruned, {failed} failed), "
        f"{running} running",
        best_so_far(tally),
    ]
    timing = f"{duration(elapsed)} elapsed"
    left = max(0, total - done)
    if left and tally.timed:
        eta = tally.timed_seconds / tally.timed * left / max(1, slots, running)
        if timeout is not None and eta > timeout - elapsed:
            timing += f", the timeout in ~{duration(max(0.0, timeout - elapsed), rough=True)}"
        else:
            timing += f", ~{duration(eta, rough=True)} left"
    parts.append(timing)
    return " | ".join(parts)


def best_so_far(tally: Tally) -> str:
    if tally.front:
        return f"pareto front {len(tally.front)} trial{'s' if len(tally.front) > 1 else ''}"
    if tally.best is None:
        return "best -"
    return f"best {tally.best.values[0]:.4g} (trial {tally.best.number})"


def duration(seconds: float, rough: bool = False) -> str:
    """12s, 1m05s, 2h03m; rough (an estimate): 12s, 4m, 2h03m."""
    seconds = max(0, math.ceil(seconds) if rough else round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = round(seconds / 60) if rough else seconds // 60
    if minutes < 60:
        return f"{minutes}m" if rough else f"{minutes}m{seconds % 60:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
