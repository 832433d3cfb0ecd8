"""How a job shows its progress inside a pass over a split: a tqdm bar on a terminal, a log
line every few seconds elsewhere (nohup, SLURM, CI, a pipe), or nothing."""

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from tqdm import tqdm

from hpsweep.errors import ConfigError
from hpsweep.job._steps import Batches

log = logging.getLogger("hpsweep.trial")  # the job's own lines: one logger name in train.log

# How a job shows its progress inside an epoch. HPSWEEP_PROGRESS chooses; unset, tqdm bars on a
# terminal and log lines elsewhere (nohup, SLURM, CI, a pipe), where a bar's carriage returns
# make one unreadable line. The sweeper sets `log` in its parallel workers: bars of two
# processes on one terminal line mix.
PROGRESS_ENV = "HPSWEEP_PROGRESS"
PROGRESS_MODES = ("bar", "log", "off")
LOG_EVERY_S = 15.0  # configs saved before log_every_s existed (hpsweep reproduce) get this


@dataclass(frozen=True)
class Meter:
    """Progress inside a pass over a split: a tqdm bar, a log line every `every_s` seconds
    (samples done, rate, time left), or nothing."""

    mode: str  # one of PROGRESS_MODES
    every_s: float = LOG_EVERY_S

    @contextlib.contextmanager
    def track(
        self, samples: int, label: str, eta: str = "ETA", bar_delay: float = 0.0
    ) -> Iterator[Callable[[Batches], Batches]]:
        """Yields what wraps the batches; a bar is closed when the block ends, also by Ctrl-C,
        so the next line starts on a line of its own."""
        if self.mode == "bar":
            # bar_delay: an evaluation shorter than that shows no bar at all
            with tqdm(
                total=samples, desc=label, unit=" samples", leave=False, delay=bar_delay
            ) as bar:
                yield lambda batches: _counted(batches, bar.update)
        elif self.mode == "log":
            yield lambda batches: _logged(batches, samples, label, eta, self.every_s)
        else:
            yield lambda batches: batches


def _counted(batches: Batches, update: Callable[[int], object]) -> Batches:
    for x, y in batches:
        yield x, y
        update(len(y))


def _logged(batches: Batches, samples: int, label: str, eta: str, every_s: float) -> Batches:
    started = last = time.perf_counter()
    done = 0
    for x, y in batches:
        yield x, y  # the caller's step on this batch runs here
        done += len(y)
        now = time.perf_counter()
        if now - last >= every_s and done < samples:  # at 100% the epoch's own line follows
            last = now
            rate = done / (now - started)
            log.info(
                "%s: %d/%d samples (%d%%), %.0f samples/s, %s %s",
                label,
                done,
                samples,
                100 * done // samples,
                rate,
                eta,
                duration((samples - done) / rate),
            )


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_mode() -> str:
    mode = os.environ.get(PROGRESS_ENV, "")
    if not mode:
        return "bar" if sys.stderr.isatty() else "log"
    if mode not in PROGRESS_MODES:
        raise ConfigError(
            PROGRESS_ENV,
            mode,
            f"must be one of {', '.join(PROGRESS_MODES)} (unset: bar on a terminal, else log)",
        )
    return mode
