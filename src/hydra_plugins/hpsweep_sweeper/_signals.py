"""SIGTERM and SIGUSR1 stop a sweep (or a run) the way Ctrl-C does: a scheduler's stop, a
`kill`, SLURM's warning before a preemption or a time limit. Each is raised as a
KeyboardInterrupt where the process is, so the same paths that handle Ctrl-C say which trials
stay resumable and exit, instead of the process dying without a word.
"""

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# The stop a signal asked for, once it came (see check_stopped)
_asked: "Stopped | None" = None


class Stopped(KeyboardInterrupt):
    """A stop signal, raised as Ctrl-C's KeyboardInterrupt is; `exit_code` is the shell's
    code for a process ended by that signal (128 + its number), as 130 is for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum


def exit_code(interrupt: KeyboardInterrupt) -> int:
    return interrupt.exit_code if isinstance(interrupt, Stopped) else 130


def stopped_how(interrupt: KeyboardInterrupt) -> str:
    """How a message says it: "interrupted" (Ctrl-C), "stopped by SIGTERM"."""
    return f"stopped by {interrupt.name}" if isinstance(interrupt, Stopped) else "interrupted"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside this block, SIGTERM and SIGUSR1 raise Stopped in the main thread, once: a second
    one while stopping is ignored (SLURM signals every process of a job, and the sweep passes
    the signal on to its workers too). Processes forked inside inherit it (and `_asked` as it
    was then: None). Outside the main thread, where Python cannot set handlers, it does
    nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        global _asked
        if _asked is not None:
            return
        _asked = Stopped(signum)
        raise _asked

    before = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        global _asked
        _asked = None
        for s, handler in before.items():
            signal.signal(s, handler)


def check_stopped() -> None:
    """Raise the stop a signal asked for, if there was one: where a process can stop cleanly
    (a worker, before it claims its next trial). The raise in the handler itself can be lost:
    a signal may land in a finalizer or a weakref callback, whose exceptions Python prints
    and drops, and a second signal is ignored."""
    if _asked is not None:
        raise _asked
