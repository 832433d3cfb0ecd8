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
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.errors import HydraException
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import Trial, TrialState

from hydra_plugins.hpsweep_sweeper import (
    FAIL_REASON,
    OVERRIDES,
    RETRY_OF,
    TRIAL_DIR,
    WORKER,
    running_trial,
)
from hydra_plugins.hpsweep_sweeper._experimental import our_optuna_calls
from hydra_plugins.hpsweep_sweeper._groups import derive_config, run_fusable
from hydra_plugins.hpsweep_sweeper._progress import (
    SweepProgress,
    log_prefix,
    quiet_bars_in_workers,
)
from hydra_plugins.hpsweep_sweeper._report import write_report
from hydra_plugins.hpsweep_sweeper._search_space import (
    SearchSpaceError,
    parse_search_space,
)
from hydra_plugins.hpsweep_sweeper._settings import (
    JobContext,
    SweepError,
    fusable_task,
    study_directions,
)
from hydra_plugins.hpsweep_sweeper._storage import (
    describe_storage,
    mask_password,
    open_storage,
    with_retries,
)
from hydra_plugins.hpsweep_sweeper._study import (
    MAX_RETRIES,
    WARM_STARTED,
    check_search_space,
    claim_trial_dir,
    failures,
    file_lock,
    heartbeat,
    requeue_abandoned,
    tell_study,
    worker_threads,
)
from hydra_plugins.hpsweep_sweeper._tally import Tally
from hydra_plugins.hpsweep_sweeper._workers import (
    gpu_of_worker,
    run_forked,
    run_threads,
    visible_gpus,
)
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyConnection:
    """The study as one process sees it: a storage client and a sampler of its own."""

    study: optuna.Study
    # The client itself, for heartbeats: the study wraps an RDB storage in a cache.
    client: BaseStorage
    tally: Tally  # what the budget checks and progress lines count, read incrementally


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
        self.told: set[int] = set()  # trials this process has told the study the end of
        self.started: set[int] = set()  # trials whose job this process began
        self.directions = study_directions(settings, context.config)
        try:
            self.space = parse_search_space(settings.params or {}, arguments)
            grid = self.space.grid_values() if self.is_grid() else None
        except (SearchSpaceError, HydraException) as e:
            raise SweepError(f"hydra.sweeper.params: {e}") from None
        n_trials = settings.n_trials
        self.total = n_trials if grid is None else min(n_trials, math.prod(map(len, grid.values())))
        self.progress = SweepProgress(self.total, settings.n_jobs)
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
        settings, config, sweep_dir = self.settings, self.context.config, self.context.sweep_dir
        setup_globals()
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module logs what matters
        # Open and check before writing anything: a refused start leaves the sweep dir as it was.
        conn = self.open_study()
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
        except KeyboardInterrupt:
            log.warning("sweep interrupted; run the same command again to continue the study")
            sys.exit(130)

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

    def open_study(self) -> StudyConnection:
        """The study, with a storage client and sampler of this process's own."""
        settings = self.settings
        try:
            client = open_storage(
                settings.storage,
                self.context.sweep_dir,
                settings.heartbeat_interval,
                settings.grace_period,
            )
            with our_optuna_calls():  # a preset's sampler or pruner may be experimental
                pruner = instantiate(settings.pruner)
            study_args = {
                "study_name": settings.study_name,
                "storage": client,
                "sampler": self.sampler(),  # seeded ones are rebuilt before each ask
                "pruner": pruner,
            }
            # Loading reads; creating an existing study would append to a journal even so.
            if settings.study_name in optuna.get_all_study_names(client):
                study = optuna.load_study(**study_args)
            else:
                study = optuna.create_study(
                    **study_args, directions=self.directions, load_if_exists=True
                )
        except Exception as e:  # drivers and SQLAlchemy raise many types; all mean "cannot open"
            raise SweepError(
                f"cannot open study {settings.study_name} in {self.where}: {mask_password(str(e))}"
            ) from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise SweepError(
                f"hydra.sweeper.direction={self.directions}: study {settings.study_name} in "
                f"{self.where} was created with {stored}"
            )
        return StudyConnection(study, client, Tally(study.directions, self.progress.started_at))

    def sampler(self, stream: int | None = None) -> optuna.samplers.BaseSampler:
        """The sampler, its seed (if it has one) mixed with `stream`: the number of trials the
        study holds when it is asked for the next one (see `reseeded`)."""
        config = dict(self.settings.sampler)
        if config.get("seed") is not None and stream is not None:
            config["seed"] = trial_seed(config["seed"], stream)
        with our_optuna_calls():
            sampler = instantiate(config)
            if isinstance(sampler, functools.partial):  # the grid sampler waits for its grid
                sampler = sampler(search_space=self.space.grid_values())
        return sampler

    # -- the workers: each in its own process, or a thread per launcher slot --------------------

    def work(self, worker: int) -> None:
        quiet_bars_in_workers()  # n_jobs > 1: bars of several jobs would garble one terminal
        self.serve(self.open_study())

    def serve(self, conn: StudyConnection) -> None:
        """Run trials until the study has its n_trials (or too many failed)."""
        while claimed := self.claim_trials(conn, self.settings.fuse):
            try:
                if len(claimed) == 1:
                    trial, trial_dir, _ = claimed[0]
                    self.run_trial(conn, trial, trial_dir)
                else:
                    run_fusable(self, conn, [(trial, trial_dir) for trial, trial_dir, _ in claimed])
            except KeyboardInterrupt:
                left = self.left(claimed)
                log.warning("interrupted: %s; start the sweep again to continue", left)
                raise
            finally:
                for _, _, lock in claimed:
                    lock.close()

    def left(self, claimed: list[tuple[Trial, str, IO[str]]]) -> str:
        """What an interrupt leaves of the claimed trials: those of a fused group that ended
        before it were told already, and a group after the one interrupted had not begun."""
        started = [(t.number, d) for t, d, _ in claimed if t.number in self.started - self.told]
        waiting = [str(t.number) for t, _, _ in claimed if t.number not in self.started]
        what = []
        if started:
            numbers = ", ".join(str(number) for number, _ in started)
            dirs = ", ".join(str(self.context.sweep_dir / d) for _, d in started)
            if len(started) == 1:
                what.append(f"trial {numbers} stays resumable in {dirs}")
            else:
                what.append(f"trials {numbers} stay resumable in {dirs}")
        if waiting:
            what.append(f"trial{'s' * (len(waiting) > 1)} {', '.join(waiting)} had not started")
        return "; ".join(what) or "every trial it had begun was recorded"

    def claim_trials(self, conn: StudyConnection, n: int) -> list[tuple[Trial, str, IO[str]]]:
        """Up to n trials from the study (fewer once a budget is spent), each with its trial
        dir and the lock that says a live worker runs it."""
        sweep_dir, study, tally = self.context.sweep_dir, conn.study, conn.tally
        claimed: list[tuple[Trial, str, IO[str]]] = []
        with file_lock(sweep_dir / ".ask.lock"):
            with our_optuna_calls():
                optuna.storages.fail_stale_trials(study)  # RDB: no heartbeat for grace_period
            tally.refresh(study)
            requeue_abandoned(study, sweep_dir, tally.running_trials())  # trial dir lock free
            tally.refresh(study)  # the trials it failed and queued: a read of those alone
            # a fair share: one worker taking every trial would leave the others idle
            n = min(n, -(-self.total // self.settings.n_jobs))
            shared: dict[str, Any] | None = None
            while len(claimed) < n and self.may_start_trial(tally):
                # fuse_sampling=per_group: the trials after the first take its values of the
                # parameters a group must share (queued for this worker, which holds the lock)
                if shared and not tally.waiting:
                    with our_optuna_calls():
                        study.enqueue_trial(shared, skip_if_exists=False)
                trial, trial_dir, lock = self.claim_trial(conn)
                claimed.append((trial, trial_dir, lock))
                if self.settings.fuse_sampling == "per_group" and shared is None:
                    _, _, may_differ = self.fusable
                    shared = {k: v for k, v in trial.params.items() if not may_differ(k)}
                tally.refresh(study)  # the trial just asked counts toward the budgets
        return claimed

    def may_start_trial(self, tally: Tally) -> bool:
        settings = self.settings
        if tally.failed > settings.max_failure_rate * self.total:
            return False
        if not tally.waiting and tally.budget_used >= self.total:
            return False
        if self.deadline is not None and time.monotonic() >= self.deadline:
            log.info("timeout of %g s reached: no new trials", settings.timeout)
            return False
        if settings.epoch_budget is not None and tally.epochs >= settings.epoch_budget:
            log.info("epoch budget of %d spent: no new trials", settings.epoch_budget)
            return False
        return True

    def claim_trial(self, conn: StudyConnection) -> tuple[Trial, str, IO[str]]:
        """The study's next trial, asked under the ask lock."""
        settings, sweep_dir, study = self.settings, self.context.sweep_dir, conn.study
        if self.reseeded:
            study.sampler = self.sampler(stream=len(conn.tally.trials))
        with our_optuna_calls():  # the sampler is at work in both
            trial = study.ask()  # a queued trial (warm start, retry) first, else a new one
            self.space.suggest(trial)
        # Named after the trial it was made for: a retry's is its first attempt's (retry_of).
        trial_dir = trial.user_attrs.get(TRIAL_DIR, f"trial_{trial.number:04d}")
        if settings.custom_search_space:
            get_method(settings.custom_search_space)(self.context.config, trial)
        trial.set_user_attr(TRIAL_DIR, trial_dir)
        trial.set_user_attr(OVERRIDES, self.space.overrides(trial.params))
        trial.set_user_attr(WORKER, worker_name())
        if isinstance(conn.client, RDBStorage):
            conn.client.record_heartbeat(trial._trial_id)  # alive from the start
        return trial, trial_dir, claim_trial_dir(sweep_dir / trial_dir)

    def run_trial(
        self, conn: StudyConnection, trial: Trial, trial_dir: str, config: DictConfig | None = None
    ) -> None:
        """One trial, one job (`config`: its job config, if composed already)."""
        overrides = self.log_trial_start(trial, trial_dir)
        launcher = self.context.launcher
        try:
            with heartbeat(conn.client, trial, self.settings.heartbeat_interval):
                if launcher is None:
                    config = config or self.job_config(overrides, trial.number, trial_dir)
                    ret = self.run_here(trial, config)
                else:  # one job per call: the slot frees when this trial ends, not a batch
                    overrides = [
                        *overrides,
                        *self.context.job_overrides,
                        f"hydra.sweep.subdir={trial_dir}",
                    ]
                    [ret] = launcher.launch([overrides], initial_job_idx=trial.number)
            # JobReturn.return_value would re-raise a failure too, but first prints "Error
            # executing job", which is wrong for a pruned trial (hydra 1.3).
            outcome = ret._return_value
        except Exception as e:
            outcome = e
        self.record(conn, trial, outcome)

    def log_trial_start(self, trial: Trial, trial_dir: str) -> list[str]:
        overrides: list[str] = trial.user_attrs[OVERRIDES]
        where = trial_dir
        if RETRY_OF in trial.user_attrs:  # in the dir of the trial it retries, named after it
            where += f", retry of trial {trial.user_attrs[RETRY_OF]}"
        log.info("trial %d (%s): %s", trial.number, where, " ".join(overrides))
        self.started.add(trial.number)
        return overrides

    def record(self, conn: StudyConnection, trial: Trial, outcome: Any) -> None:
        """Tell the study how the trial ended: `outcome` is what its job returned, or the
        exception that ended it."""
        study = conn.study
        self.told.add(trial.number)
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            values = self.values(outcome)
        except optuna.TrialPruned as pruned:
            self.tell(study, trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, pruned)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            with_retries(lambda: trial.set_user_attr(FAIL_REASON, reason), "saving", self.where)
            self.tell(study, trial, state=TrialState.FAIL)
            log.error("trial %d failed: %s", trial.number, reason)
        else:
            self.tell(study, trial, values=values)
            log.info("trial %d finished: %s", trial.number, ", ".join(f"{v:.6g}" for v in values))
        self.progress.log(study, conn.tally)

    def run_here(self, trial: Trial, config: DictConfig) -> JobReturn:
        """The job in this process, where it can report to its trial and be pruned."""
        context = self.context
        try:
            with running_trial(trial), log_prefix(f"[trial {trial.number}] "):
                return run_job(
                    hydra_context=context.hydra_context,
                    task_function=context.task_function,
                    config=config,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
        finally:
            configure_log(context.config.hydra.hydra_logging, context.config.hydra.verbose)

    def tell(self, study: optuna.Study, trial: Trial, **outcome: Any) -> None:
        def tell() -> None:
            with our_optuna_calls():
                tell_study(study, trial, skip_if_finished=True, **outcome)

        with_retries(tell, f"recording trial {trial.number}", self.where)

    def job_config(
        self,
        overrides: list[str],
        number: int,
        trial_dir: str,
        like: tuple[DictConfig, list[str]] | None = None,
    ) -> DictConfig:
        """The trial's job config. `like`: another trial's (config, overrides), which this
        one's is derived from when they differ only in plain values (_groups.derive_config)."""
        config = None if like is None else derive_config(*like, overrides)
        if config is None:
            loader = self.context.hydra_context.config_loader
            config = loader.load_sweep_config(
                self.context.config, [*overrides, *self.context.job_overrides]
            )
        with open_dict(config):
            config.hydra.job.id = f"{self.settings.study_name}_{number}"
            config.hydra.job.num = number
            config.hydra.sweep.subdir = trial_dir
        masked(config)  # the job writes hydra.yaml: no password in it
        HydraConfig.instance().set_config(config)
        return config

    def values(self, result: Any) -> list[float]:
        raw = [result] if len(self.directions) == 1 else list(result)
        values = [float(v) for v in raw]
        if len(values) != len(self.directions) or not all(map(math.isfinite, values)):
            raise ValueError(
                f"the job returned {result!r}; expected {len(self.directions)} finite number(s)"
            )
        return values


def worker_name() -> str:
    """host:pid, and the GPU the worker was given, if it was (the `worker` attribute)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return name if gpus is None else f"{name} (CUDA_VISIBLE_DEVICES={gpus})"


def trial_seed(seed: int, stream: int) -> int:
    # SeedSequence mixes both: seeds 1 and 2 do not give overlapping streams
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def masked(config: DictConfig) -> DictConfig:
    with open_dict(config):
        if config.hydra.sweeper.get("storage"):
            config.hydra.sweeper.storage = mask_password(config.hydra.sweeper.storage)
        config.hydra.overrides.hydra = [mask_password(o) for o in config.hydra.overrides.hydra]
    return config
