"""Atomic writes an epoch does not wait for: a trial's checkpoints and metrics.csv, written
and synced to disk by one thread, in the order given, while the next epoch trains (writing
and fsync release the GIL). An epoch's writes cost 10-30 ms here, most of it fsync.

Whoever reads or reports them waits first (`wait_for_writes`): the trial's final report (its
test set loads best.pt; result.json comes after them) and the end of its epochs, however the
trial ends. The first failed write (a full disk) is raised there, or by the next write; the
writes queued after it are not made.
"""

import os
import queue
import threading
from pathlib import Path

from hpsweep.record._files import atomic_write_bytes


class Writer:
    def __init__(self) -> None:
        self.tasks: queue.Queue[tuple[Path, bytes]] = queue.Queue()
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def write(self, path: Path, data: bytes) -> None:
        self.check()
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, name="hpsweep-writer", daemon=True)
            self.thread.start()
        self.tasks.put((path, data))

    def run(self) -> None:
        while True:
            path, data = self.tasks.get()
            try:
                if self.error is None:
                    atomic_write_bytes(path, data)
            except BaseException as e:
                self.error = e
            finally:
                self.tasks.task_done()

    def wait(self) -> None:
        self.tasks.join()
        self.check()

    def check(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            raise error


_writer = Writer()


def _after_fork() -> None:  # a forked worker has none of its parent's threads: its own writer
    global _writer
    _writer = Writer()


os.register_at_fork(after_in_child=_after_fork)


def write_later(path: Path, data: bytes) -> None:
    """atomic_write_bytes, by the writer thread: returns at once."""
    _writer.write(path, data)


def wait_for_writes() -> None:
    """Until every write given so far is on disk; raises the first that failed."""
    _writer.wait()
