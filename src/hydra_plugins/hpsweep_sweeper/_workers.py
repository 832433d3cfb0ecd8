"""Running the worker loop in parallel: forked processes, or threads that feed a Hydra launcher."""

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hydra.errors import CompactHydraException

from hydra_plugins.hpsweep_sweeper._signals import Stopped, exit_code
from hydra_plugins.hpsweep_sweeper._study import file_lock

log = logging.getLogger(__name__)
T = TypeVar("T")

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def visible_gpus() -> list[str]:
    """The GPUs workers can be spread over, found without initializing CUDA: the entries of
    CUDA_VISIBLE_DEVICES when it is set (up to an invalid one, where CUDA stops too), else one
    per GPU the NVIDIA driver lists."""
    chosen = os.environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        try:
            return [str(i) for i in range(len(os.listdir("/proc/driver/nvidia/gpus")))]
        except OSError:
            return []
    gpus = []
    for entry in (e.strip() for e in chosen.split(",")):
        if not entry or entry.startswith("-"):
            break
        gpus.append(entry)
    return gpus


def gpu_of_worker(index: int, gpus: list[str]) -> str | None:
    """Worker i on GPU i mod N: n_jobs > N puts several small-model workers on each GPU.
    None (the worker sees what the sweep sees) with fewer than two GPUs."""
    return gpus[index % len(gpus)] if len(gpus) > 1 else None


def run_forked(
    n_jobs: int, work: Callable[[int], None], threads: int, gpus: list[str]
) -> list[str]:
    """`work(i)` in n_jobs forked processes, each on its GPU (gpu_of_worker); returns the
    names of those that failed.

    Forked, not spawned: the children start with the task's imports (torch) already done. A
    child cannot use CUDA once its parent has initialized it, so the sweep process never does.
    """
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise CompactHydraException(
            "CUDA was initialized in the sweep process before it forked its workers, which then "
            "cannot use it: keep CUDA calls out of the task module's import (or use "
            "hydra.sweeper.n_jobs=1, which runs trials in the sweep process)"
        )
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(
            target=_worker,
            args=(work, i, threads, gpu_of_worker(i, gpus)),
            name=f"hpsweep-worker-{i}",
        )
        for i in range(n_jobs)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    except KeyboardInterrupt as e:
        # Ctrl-C reaches every process of the terminal's group, each stopping on its own; a
        # SIGTERM may reach this process alone (`kill`, a parent's death): passed on, also
        # when it came while the workers were being started (to those started).
        started = [worker for worker in workers if worker.pid is not None]
        for worker in started:
            if isinstance(e, Stopped) and worker.pid is not None and worker.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, e.signum)
        for worker in started:
            worker.join()
        raise
    return [f"{w.name} (exit code {w.exitcode})" for w in workers if w.exitcode != 0]


def _worker(work: Callable[[int], None], index: int, threads: int, gpu: str | None) -> None:
    try:  # a stop may come at any moment, this one's first lines too
        die_with_parent()
        if gpu is not None:  # before anything here initializes CUDA: it reads the variable then
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        # Oversubscribed cores make parallel trials slower than serial ones: each worker gets
        # its share of threads, for torch (imported already) and for libraries reading this.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
        work(index)
    except KeyboardInterrupt as e:
        sys.exit(exit_code(e))
    except CompactHydraException as e:  # a message for the user (storage gone for minutes)
        log.error("%s stopped: %s", multiprocessing.current_process().name, e)
        sys.exit(1)


def die_with_parent() -> None:
    """Linux: get SIGTERM when the sweep process dies (even by SIGKILL), instead of running on
    as an orphan. The trial then stays RUNNING with its lock free: the next start resumes it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the parent was already gone before prctl
        sys.exit(1)


def run_threads(n_jobs: int, serve: Callable[[T], None], study: T) -> list[str]:
    """`serve(study)` in n_jobs threads (each waits on jobs that run elsewhere); returns the
    names of those that failed."""
    crashed: list[str] = []

    def slot() -> None:
        try:
            serve(study)
        except CompactHydraException as e:  # a message for the user: a full disk, say
            log.error("%s stopped: %s", threading.current_thread().name, e)
            crashed.append(threading.current_thread().name)
        except Exception:
            log.exception("%s stopped", threading.current_thread().name)
            crashed.append(threading.current_thread().name)

    slots = [threading.Thread(target=slot, name=f"slot-{i}") for i in range(n_jobs)]
    for thread in slots:
        thread.start()
    for thread in slots:
        thread.join()
    return crashed


def abandoned_trial_dirs(sweep: Path, trial_dirs: list[Path]) -> set[Path]:
    """The trial dirs among `trial_dirs` whose lock, which the sweeper's worker holds while the
    trial runs, is free: the test for a dead worker. Tested while holding the
    sweep's ask lock, as the sweeper does, so that no worker is between asking for a retry and
    locking its dir (a lock taken here then would stop it). Without a lock file (a trial not
    run by the hpsweep sweeper) or one that cannot be opened (a read-only copy), nothing is
    known; and nothing, if workers keep the ask lock for a second (busy, or a storage outage).
    """
    locked = [d for d in trial_dirs if (d / ".lock").is_file()]
    if not locked:
        return set()

    def free(lock: Path) -> bool:
        with file_lock(lock, blocking=False) as taken:
            return taken is not None

    ask = sweep / ".ask.lock"
    try:
        for _ in range(20):
            with file_lock(ask, blocking=False) if ask.is_file() else _no_lock() as held:
                if held is not None:
                    return {d for d in locked if free(d / ".lock")}
            time.sleep(0.05)
    except OSError:
        pass
    return set()


@contextlib.contextmanager
def _no_lock() -> Iterator[bool]:
    yield True
