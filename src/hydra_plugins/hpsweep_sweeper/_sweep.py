"""A sweep: one Optuna study in shared storage, and workers that each pull their next trial.

Why not Hydra's launcher interface: `Launcher.launch(batch)` returns when the whole batch has
finished, so one slow trial idles every other slot. Here each of the `n_jobs` workers is a
forked process that asks the study for a trial, runs the job in-process through Hydra's
`run_job` (the job sees its Optuna trial and can be pruned), tells the result and asks again.
Forking after the task's imports means a worker pays for `import torch` once, not per trial.
With another Hydra launcher selected (submitit, for SLURM), `n_jobs` threads each hand it one
trial at a time instead, so there is no batch barrier there either.
"""

import functools
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.utils import configure_log, setup_globals
from hydra.errors import CompactHydraException, HydraException
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from hydra_plugins.hpsweep_sweeper._experimental import our_optuna_calls
from hydra_plugins.hpsweep_sweeper._groups import FusingWorker
from hydra_plugins.hpsweep_sweeper._names import (
    CHECKS,
    FAIL_REASON,
    JOURNAL_FILE,
    MAX_RETRIES,
    WARM_STARTED,
)
from hydra_plugins.hpsweep_sweeper._precheck import check_values
from hydra_plugins.hpsweep_sweeper._progress import (
    SweepProgress,
    quiet_bars_in_workers,
)
from hydra_plugins.hpsweep_sweeper._report import write_report
from hydra_plugins.hpsweep_sweeper._search_space import (
    SearchSpace,
    SearchSpaceError,
    parse_search_space,
)
from hydra_plugins.hpsweep_sweeper._settings import (
    JobContext,
    SweepError,
    fusable_task,
    masked,
    study_directions,
)
from hydra_plugins.hpsweep_sweeper._signals import exit_code, stop_on_signals, stopped_how
from hydra_plugins.hpsweep_sweeper._storage import (
    describe_os_error,
    describe_storage,
    environment_cause,
    mask_password,
    open_storage,
)
from hydra_plugins.hpsweep_sweeper._study import (
    check_search_space,
    failures,
    file_lock,
    worker_threads,
)
from hydra_plugins.hpsweep_sweeper._tally import Tally
from hydra_plugins.hpsweep_sweeper._worker_loop import StudyConnection, SweepPlan, Worker
from hydra_plugins.hpsweep_sweeper._workers import (
    gpu_of_worker,
    run_forked,
    run_threads,
    visible_gpus,
)
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

log = logging.getLogger(__name__)


class Sweep:
    """One run of the sweep command: settings, Hydra's context, the search space and budgets."""

    def __init__(
        self, settings: HpsweepSweeperConf, context: JobContext, arguments: list[str]
    ) -> None:
        # CLOCK_MONOTONIC is system-wide on Linux, so forked workers share this start.
        self.deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
        if settings.epoch_budget is not None and context.launcher is not None:
            raise SweepError(
                f"hydra.sweeper.epoch_budget={settings.epoch_budget}: jobs run through "
                f"{context.config.hydra.launcher._target_} do not report epochs to the study; "
                "use hydra.sweeper.n_trials or timeout"
            )
        self.settings = settings
        self.context = context
        self.fusable = fusable_task(settings, context)
        self.directions = study_directions(settings, context)
        try:
            self.space = parse_search_space(settings.params or {}, arguments)
            grid = self.space.grid_values() if self.is_grid() else None
        except (SearchSpaceError, HydraException) as e:
            raise SweepError(f"hydra.sweeper.params: {e}") from None
        n_trials = settings.n_trials
        self.total = n_trials if grid is None else min(n_trials, math.prod(map(len, grid.values())))
        self.progress = SweepProgress(self.total, settings.n_jobs, settings.timeout)
        self.where = describe_storage(settings.storage, context.sweep_dir)

    def is_grid(self) -> bool:
        return str(self.settings.sampler.get("_target_", "")).endswith("GridSampler")

    @property
    def reseeded(self) -> bool:
        """A seeded sampler restarts its random stream whenever it is built: on every resume
        and in every worker, so trial 5 of a resumed sweep would replay trial 0's parameters
        and two workers would propose the same ones. It is rebuilt before each ask with the
        seed mixed with the study's trial count (unique under the ask lock), so a sweep is
        reproducible from its seed and never replays. QMC and grid are left alone: the study
        indexes their sequence (QMC's points, the grid's ids), and their seed orders the whole
        sequence, so every worker must keep the same one."""
        sampler = self.settings.sampler
        target = str(sampler.get("_target_", ""))
        seeded = sampler.get("seed") is not None
        return seeded and not target.endswith(("QMCSampler", "GridSampler"))

    # -- the sweep, in the process that was started --------------------------------------------

    def run(self) -> None:
        try:
            with stop_on_signals():  # SIGTERM, SIGUSR1: as Ctrl-C, in every worker too
                self.sweep()
        except CompactHydraException:  # a message already (EnvironmentStop among them)
            raise
        except Exception as e:
            cause = environment_cause(e)
            if cause is None:
                raise
            raise SweepError(
                f"sweep stopped: {describe_os_error(cause)}; no trial is charged for it: free "
                "space (or make it writable), then run the same command again to continue"
            ) from None

    def sweep(self) -> None:
        settings, config, sweep_dir = self.settings, self.context.config, self.context.sweep_dir
        setup_globals()
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module logs what matters
        # Check, then open, before writing anything: a refused start leaves the sweep dir and
        # the study as they were.
        check = getattr(self.context.task_function, CHECKS, None)
        check_values(self.context, self.space, settings.enqueue, check)
        conn = self.open_study(first=True)
        self.start(conn)
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(masked(config.copy()), sweep_dir / "multirun.yaml")
        except OSError as e:
            raise SweepError(
                f"hydra.sweep.dir={sweep_dir}: cannot write there ({e.strerror or e}); "
                "choose a writable folder"
            ) from None
        try:
            if self.context.launcher is not None:
                crashed = run_threads(settings.n_jobs, self.serve, conn)
            elif settings.n_jobs == 1:
                self.serve(conn)
                crashed = []
            else:
                threads = settings.threads_per_job or worker_threads(settings.n_jobs)
                gpus = visible_gpus() if settings.spread_gpus else []
                if len(gpus) > 1:
                    placed = ", ".join(str(gpu_of_worker(i, gpus)) for i in range(settings.n_jobs))
                    log.info("workers 0-%d on GPUs %s", settings.n_jobs - 1, placed)
                crashed = run_forked(settings.n_jobs, self.work, threads, gpus)
            if crashed:
                raise SweepError(f"{', '.join(crashed)} stopped with an error; see the log above")
        except KeyboardInterrupt as e:
            log.warning(
                "sweep %s; run the same command again to continue the study", stopped_how(e)
            )
            sys.exit(exit_code(e))

        write_report(conn.study, sweep_dir, self.where, settings.top_k)
        failed = failures(conn.study.get_trials(deepcopy=False))
        if len(failed) > settings.max_failure_rate * self.total:
            raise SweepError(
                f"sweep stopped: {len(failed)} of {self.total} trials failed "
                f"(hydra.sweeper.max_failure_rate={settings.max_failure_rate}); last reason: "
                f"{failed[-1].user_attrs.get(FAIL_REASON, 'unknown')}"
            )

    def start(self, conn: StudyConnection) -> None:
        """Check the search space against the study's, queue the warm start, log the plan."""
        settings, study = self.settings, conn.study
        with file_lock(self.context.sweep_dir / ".ask.lock"):
            try:
                check_search_space(
                    study, self.space.signature(), settings.allow_space_change, self.where
                )
            except ValueError as e:
                raise SweepError(str(e)) from None
            # Once per study: re-running the command must not queue the warm start again.
            if settings.enqueue and not study.user_attrs.get(WARM_STARTED):
                for params in settings.enqueue:  # param name -> value
                    try:
                        study.enqueue_trial(self.space.expand(params))
                    except SearchSpaceError as e:
                        raise SweepError(f"hydra.sweeper.enqueue: {e}") from None
                study.set_user_attr(WARM_STARTED, True)
            if study.user_attrs.get(MAX_RETRIES) != settings.max_retries:
                study.set_user_attr(MAX_RETRIES, settings.max_retries)
        conn.tally.refresh(study)
        log.info(
            "study %s in %s: %d trials (%d there already), %d at a time, %s, %s, %s",
            settings.study_name,
            self.where,
            self.total,
            conn.tally.budget_used,
            settings.n_jobs,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            "/".join(self.directions),
        )
        for name, distribution in self.space.distributions.items():
            log.info("  %s: %s", name, distribution)
        for mismatch in self.space.lists_unlike(self.context.config):
            log.warning(mismatch)

    def open_study(self, first: bool = False) -> StudyConnection:
        """The study, with a storage client and sampler of this process's own. `first`: the
        sweep process's, before any worker: the sweep dir must hold no other study."""
        settings = self.settings
        journal = self.context.sweep_dir / JOURNAL_FILE
        if first and settings.storage is None and not journal.exists():
            self.check_sweep_dir(exists=False)  # before opening the journal creates it
        try:
            client = open_storage(
                settings.storage,
                self.context.sweep_dir,
                settings.heartbeat_interval,
                settings.grace_period,
            )
            exists = settings.study_name in optuna.get_all_study_names(client)
        except Exception as e:  # drivers and SQLAlchemy raise many types; all mean "cannot open"
            raise SweepError(self.cannot_open(e)) from None
        if first:
            self.check_sweep_dir(exists)
        try:
            with our_optuna_calls():  # a preset's sampler or pruner may be experimental
                pruner = instantiate(settings.pruner)
            study_args = {
                "study_name": settings.study_name,
                "storage": client,
                "sampler": make_sampler(settings.sampler, self.space),  # see `reseeded`
                "pruner": pruner,
            }
            # Loading reads; creating an existing study would append to a journal even so.
            if exists:
                study = optuna.load_study(**study_args)
            else:
                study = optuna.create_study(
                    **study_args, directions=self.directions, load_if_exists=True
                )
        except Exception as e:
            raise SweepError(self.cannot_open(e)) from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise SweepError(
                f"hydra.sweeper.direction={self.directions}: study {settings.study_name} in "
                f"{self.where} was created with {stored}"
            )
        return StudyConnection(study, client, Tally(study.directions, self.progress.started_at))

    def cannot_open(self, error: Exception) -> str:
        lines = [line for line in mask_password(str(error)).splitlines() if line.strip()]
        why = lines[0] if lines else type(error).__name__  # SQLAlchemy adds a line of links
        return f"cannot open study {self.settings.study_name} in {self.where}: {why}"

    def check_sweep_dir(self, exists: bool) -> None:
        """One study per sweep dir: its trial dirs are named after that study's trial numbers,
        so a second study there would run its trials in the first one's dirs, and the same
        study started afresh (its journal emptied, its database lost) would too."""
        sweep_dir, name = self.context.sweep_dir, self.settings.study_name
        earlier = earlier_study(sweep_dir)
        if earlier is None or (earlier == name and exists):
            return
        if earlier != name:
            raise SweepError(
                f"hydra.sweeper.study_name={name}: {sweep_dir} holds the sweep of study "
                f"{earlier}, whose trial dirs are named by its trial numbers; continue it with "
                f"hydra.sweeper.study_name={earlier}, or give study {name} a folder of its own "
                "(hydra.sweep.dir)"
            )
        journal = sweep_dir / JOURNAL_FILE
        empty = self.settings.storage is None and journal.is_file() and not journal.stat().st_size
        missing = "is empty" if empty else "holds no such study"
        raise SweepError(
            f"{sweep_dir} holds a sweep of study {name} (its multirun.yaml and trial dirs), but "
            f"{self.where} {missing}: rebuild the study from the trial dirs (hpsweep rebuild "
            f"{sweep_dir}) and run this command again, or move {sweep_dir} away to start afresh"
        )

    # -- the workers: each in its own process, or a thread per launcher slot --------------------

    def plan(self) -> SweepPlan:
        reseed = functools.partial(make_sampler, self.settings.sampler, self.space)
        return SweepPlan(
            settings=self.settings,
            context=self.context,
            space=self.space,
            directions=self.directions,
            total=self.total,
            deadline=self.deadline,
            where=self.where,
            progress=self.progress,
            fusable=self.fusable,
            reseed=reseed if self.reseeded else None,
        )

    def work(self, worker: int) -> None:
        quiet_bars_in_workers()  # n_jobs > 1: bars of several jobs would garble one terminal
        self.serve(self.open_study())

    def serve(self, conn: StudyConnection) -> None:
        worker = Worker if self.fusable is None else FusingWorker
        worker(self.plan()).serve(conn)


def earlier_study(sweep_dir: Path) -> str | None:
    """The study name in the sweep dir's multirun.yaml (written by a sweep that started
    there), or None: none there, or one that cannot be read (rebuild reads it when needed)."""
    try:
        saved = OmegaConf.load(sweep_dir / "multirun.yaml")
        name = OmegaConf.select(saved, "hydra.sweeper.study_name", default=None)
    except Exception:  # missing, damaged, an interpolation that no longer resolves: no say
        return None
    return None if name is None else str(name)


def make_sampler(
    config: dict[str, Any], space: SearchSpace, stream: int | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler of `config`, its seed (if it has one) mixed with `stream`: the number of
    trials the study holds when it is asked for the next one (see Sweep.reseeded)."""
    config = dict(config)
    if config.get("seed") is not None and stream is not None:
        config["seed"] = trial_seed(config["seed"], stream)
    with our_optuna_calls():
        if stream is not None and flat(config):
            # a flat config (TPE's, random's) rebuilt for each ask: what instantiate builds
            # (it built this one when the sweep began), without its 2 ms of OmegaConf
            kwargs = {k: v for k, v in config.items() if k != "_target_"}
            return get_class(config["_target_"])(**kwargs)
        sampler = instantiate(config)
        if isinstance(sampler, functools.partial):  # the grid sampler waits for its grid
            sampler = sampler(search_space=space.grid_values())
    return sampler


def flat(config: dict[str, Any]) -> bool:
    """Plain values only, and no instantiate key but _target_."""
    keys = [k for k in config if k.startswith("_")]
    plain = (v is None or isinstance(v, bool | int | float | str) for v in config.values())
    return keys == ["_target_"] and all(plain)


def trial_seed(seed: int, stream: int) -> int:
    # SeedSequence mixes both: seeds 1 and 2 do not give overlapping streams
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])
