"""curves.png off the trials' path: a child process draws each finished trial's figure from
its files while the next trial trains.

A figure costs 0.1-0.2 s of text layout and PNG encoding, as much as the rest of a small
trial's time around its training. A sweep (`hpsweep-train -m`) starts one drawer
(`start_drawing`, from its Hydra callback); its trials, in that process or in workers forked
from it, hand it their dir (`draw_later`), and the sweep waits for it before it returns
(`finish_drawing`), so every trial dir holds its curves.png when the command is done. The
drawer first draws the figures that the sweep dir's finished trials lack: those a killed
sweep had not drawn yet.

Where no drawer runs (a single run, run_trial called from Python, a launcher's job in another
process) or it is gone, the trial draws its own figure.
"""

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)
PIPE_BUF = 4096  # POSIX: writes of up to this many bytes to a pipe are never interleaved


class Drawer:
    """The child process (`python -m hpsweep.plots`), fed one trial dir per line on its stdin."""

    def __init__(self, scan: Path | None, stale_only: bool = False) -> None:
        """`scan`: a sweep dir whose finished trials' missing or outdated figures it draws
        first; `stale_only`: the trials it is given too, only if missing or outdated."""
        args = [sys.executable, "-m", "hpsweep.plots"]
        if scan is not None:
            args += ["--scan", str(scan.resolve())]
        if stale_only:
            args += ["--stale-only"]
        self.owner = os.getpid()
        # stderr: the command's own, for its one-line warnings
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert self.process.stdin is not None
        self.fd = self.process.stdin.fileno()
        self.broken = False
        # what this process sent (a forked worker's are its own copy's): (dir, label_smoothing)
        self.sent: list[tuple[Path, float]] = []

    def send(self, trial_dir: Path, label_smoothing: float) -> bool:
        """Queue the trial's figure; False when the drawer is gone (then draw it yourself).
        Safe from forked workers at once: a line is one write of at most PIPE_BUF bytes."""
        request = {"dir": str(Path(trial_dir).resolve()), "label_smoothing": label_smoothing}
        line = (json.dumps(request) + "\n").encode()
        if self.broken or len(line) > PIPE_BUF:
            return False
        try:
            os.write(self.fd, line)
        except OSError:  # BrokenPipeError: it died; EBADF: closed
            self.broken = True
            return False
        self.sent.append((Path(trial_dir), label_smoothing))
        return True

    def finish(self) -> int | None:
        """Close its input and wait for it to draw what it was given; its exit code. Only
        the process that started it can wait for it (a forked worker returns None)."""
        if os.getpid() != self.owner:
            return None
        assert self.process.stdin is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        return self.process.wait()


_current: Drawer | None = None


def start_drawing(scan: Path | None = None) -> None:
    """Start this command's drawer; `scan`: a sweep dir whose finished trials' missing or
    outdated figures it draws first."""
    global _current
    if _current is not None:
        return
    try:
        _current = Drawer(scan)
    except OSError as e:  # no process to be had: each trial draws its own
        log.warning("curves.png drawn by each trial: no drawer process (%s)", e)


def draw_later(trial_dir: Path, label_smoothing: float = 0.0) -> bool:
    """Hand the trial's curves.png to the drawer (`label_smoothing`: its training loss's,
    named in the legend); False when there is none: draw it now."""
    return _current is not None and _current.send(trial_dir, label_smoothing)


def finish_drawing(scan: Path | None = None) -> None:
    """Wait for the drawer to finish. If it failed, a second one draws what the first may have
    left: the figures of the trials this process gave it, and those `scan` (a sweep dir)
    lacks."""
    global _current
    drawer, _current = _current, None
    if drawer is None:
        return
    code = drawer.finish()
    if code in (0, None):
        return
    log.warning("the curves.png drawer exited with code %s: drawing what it left", code)
    try:
        again = Drawer(scan, stale_only=True)
    except OSError as e:
        log.warning("curves.png not redrawn: no drawer process (%s)", e)
        return
    for trial_dir, label_smoothing in drawer.sent:
        again.send(trial_dir, label_smoothing)
    again.finish()
