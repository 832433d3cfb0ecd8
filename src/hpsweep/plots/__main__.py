"""The drawer process of a sweep (hpsweep.record._drawing starts it):

    python -m hpsweep.plots [--scan SWEEP_DIR] [--stale-only]

reads one request per line on its stdin, {"dir": ..., "label_smoothing": ...}, and draws that
trial's curves.png from its files, as the trial would have at its end.

It runs only where a core would otherwise idle, so while workers train it falls behind; when
its input ends (the sweep is done and waits for it) it draws what is left on every core.
"""

import argparse
import contextlib
import json
import os
import select
import signal
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from hpsweep.plots._drawer import draw_or_say, stale_trial_dirs

Request = tuple[Path, float | None, bool]  # trial dir, label smoothing (None: read), stale only


def idle() -> None:
    """The trials first: this process runs where a core would otherwise idle (SCHED_IDLE),
    so it takes no time slices from torch's threads, whose parallel ops would wait for them."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        with contextlib.suppress(OSError):
            os.nice(19)


def requests(fd: int, queue: deque[Request], stale_only: bool) -> Iterator[None]:
    """Reads requests into `queue` as they come, without waiting while it holds some; yields
    after each read, and returns at the end of the input."""
    buffer = b""
    while True:
        if queue and not select.select([fd], [], [], 0)[0]:
            yield
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            request = json.loads(line)
            queue.append((Path(request["dir"]), request["label_smoothing"], stale_only))
        yield


def draw_on_every_core(queue: deque[Request]) -> None:
    """Each of os.cpu_count() forked copies draws its share (matplotlib is imported already,
    and this process has no threads: a fork is cheap and safe)."""
    items, cores = list(queue), max(1, min(len(queue), os.cpu_count() or 1))
    children = []
    for k in range(1, cores):
        pid = os.fork()
        if pid == 0:  # a child: its share, then gone without running the parent's exit code
            code = 0
            try:
                for item in items[k::cores]:
                    draw_or_say(*item)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    for item in items[0::cores]:
        draw_or_say(*item)
    for pid in children:
        os.waitpid(pid, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", type=Path, help="first draw this sweep dir's missing figures")
    parser.add_argument(
        "--stale-only", action="store_true", help="draw a figure given only if missing or outdated"
    )
    args = parser.parse_args(argv)
    idle()
    # Ctrl-C at the terminal reaches every process of the command: draw what was given, then
    # stop at the end of the input, which comes when the command and its workers are gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    queue: deque[Request] = deque()
    if args.scan is not None:
        queue.extend((trial_dir, None, True) for trial_dir in stale_trial_dirs(args.scan))
    for _ in requests(sys.stdin.fileno(), queue, args.stale_only):
        if queue:
            draw_or_say(*queue.popleft())
    draw_on_every_core(queue)
    return 0


if __name__ == "__main__":
    sys.exit(main())
