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
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.hpsweep_sweeper._study import mask_password, superseded

log = logging.getLogger(__name__)
PROGRESS_ENV = "HPSWEEP_PROGRESS"  # bar | log | off: how a job shows its batches


@contextlib.contextmanager
def trial_log_prefix(number: int) -> Iterator[None]:
    """Log records made inside this block (any logger, any thread) start with `[trial N] `."""
    previous = logging.getLogRecordFactory()
    prefix = f"[trial {number}] "

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


def quiet_bars_in_workers() -> None:
    os.environ.setdefault(PROGRESS_ENV, "log")


class SweepProgress:
    """The sweep-level line after each trial, timed from this command's start."""

    def __init__(self, total: int, slots: int) -> None:
        self.total, self.slots = total, slots
        self.started = time.monotonic()  # system-wide on Linux: forked workers share it
        self.started_at = datetime.now()  # Optuna's trial times are naive local ones too

    def log(self, study: optuna.Study) -> None:
        try:
            trials = study.get_trials(deepcopy=False)
        except Exception as e:  # the storage gone past its retries: the next trial will say
            log.warning("sweep progress unknown: %s", mask_password(str(e)).splitlines()[0])
            return
        elapsed = time.monotonic() - self.started
        line = progress_line(
            trials, study.directions, self.total, self.slots, elapsed, self.started_at
        )
        log.info(line)


def progress_line(
    trials: Sequence[FrozenTrial],
    directions: Sequence[StudyDirection],
    total: int,
    slots: int,
    elapsed: float,
    since: datetime,
) -> str:
    """`trials 5/20 done (3 complete, 1 pruned, 1 failed), 2 running | best 0.9545 (trial 2) |
    1m05s elapsed, ~3m left`. Trials a retry continues are not counted (nor is their time);
    the estimate is the mean time of the trials finished since `since` (this command's start),
    times the trials left, over the slots (`slots`, or more workers seen running)."""
    gone = superseded(list(trials))
    counted = [t for t in trials if t.number not in gone]
    states = [t.state for t in counted]
    complete = states.count(TrialState.COMPLETE)
    pruned = states.count(TrialState.PRUNED)
    failed = states.count(TrialState.FAIL)
    running = states.count(TrialState.RUNNING)
    done = complete + pruned + failed
    parts = [
        f"trials {done}/{total} done ({complete} complete, {pruned} pruned, {failed} failed), "
        f"{running} running",
        best_so_far(counted, directions),
    ]
    timing = f"{duration(elapsed)} elapsed"
    seconds = [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in counted
        if t.state.is_finished()
        and t.datetime_start is not None
        and t.datetime_complete is not None
        and t.datetime_complete >= since
    ]
    left = max(0, total - done)
    if left and seconds:
        eta = sum(seconds) / len(seconds) * left / max(1, slots, running)
        timing += f", ~{duration(eta, rough=True)} left"
    parts.append(timing)
    return " | ".join(parts)


def best_so_far(trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]) -> str:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    if not complete:
        return "best -"
    if len(directions) > 1:
        front = pareto_front(complete, directions)
        return f"pareto front {len(front)} trial{'s' if len(front) > 1 else ''}"
    sign = 1 if directions[0] == StudyDirection.MAXIMIZE else -1
    best = max(complete, key=lambda t: (sign * t.values[0], -t.number))
    return f"best {best.values[0]:.4g} (trial {best.number})"


def pareto_front(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection]
) -> list[FrozenTrial]:
    signs = [1 if d == StudyDirection.MAXIMIZE else -1 for d in directions]

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(signs, a.values, b.values, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    return [t for t in trials if not any(dominates(o, t) for o in trials)]


def duration(seconds: float, rough: bool = False) -> str:
    """12s, 1m05s, 2h03m; rough (an estimate): 12s, 4m, 2h03m."""
    seconds = max(0, math.ceil(seconds) if rough else round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = round(seconds / 60) if rough else seconds // 60
    if minutes < 60:
        return f"{minutes}m" if rough else f"{minutes}m{seconds % 60:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
