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
import warnings
from pathlib import Path
from typing import IO, Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.errors import CompactHydraException, HydraException
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.storages import RDBStorage
from optuna.trial import Trial, TrialState

from hydra_plugins import hpsweep_sweeper
from hydra_plugins.hpsweep_sweeper._report import write_report
from hydra_plugins.hpsweep_sweeper._search_space import SearchSpaceError, parse_search_space
from hydra_plugins.hpsweep_sweeper._study import (
    FAIL_REASON,
    OVERRIDES,
    TRIAL_DIR,
    WARM_STARTED,
    WORKER,
    budget_used,
    check_search_space,
    claim_trial_dir,
    describe_storage,
    epochs_spent,
    failures,
    file_lock,
    heartbeat,
    mask_password,
    open_storage,
    requeue_abandoned,
    with_retries,
    worker_threads,
)
from hydra_plugins.hpsweep_sweeper._workers import run_forked, run_threads

log = logging.getLogger(__name__)
# Optuna sends heartbeats itself only inside Study.optimize; this sweeper sends its own.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
warnings.filterwarnings("ignore", message=r"optuna\.storages\._heartbeat\.fail_stale_trials is")

DIRECTIONS = ("maximize", "minimize")


class SweepError(CompactHydraException):
    """Shown by Hydra as its message alone: a setting to fix, or a sweep that cannot go on."""


class Sweep:
    def __init__(
        self,
        sampler: DictConfig,
        pruner: DictConfig,
        direction: Any,
        study_name: str,
        storage: str | None,
        n_trials: int,
        timeout: float | None,
        epoch_budget: int | None,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
        enqueue: list[Any],
        allow_space_change: bool,
        threads_per_job: int | None,
        top_k: int,
        heartbeat_interval: int,
        grace_period: int,
    ) -> None:
        directions: list[Any] = [direction] if isinstance(direction, str) else list(direction)
        checks = [
            ("n_trials", n_trials, n_trials >= 1, "must be >= 1"),
            ("timeout", timeout, timeout is None or timeout > 0, "seconds > 0, or null"),
            (
                "epoch_budget",
                epoch_budget,
                epoch_budget is None or epoch_budget >= 1,
                "must be >= 1, or null",
            ),
            ("n_jobs", n_jobs, n_jobs >= 1, "must be >= 1"),
            ("max_failure_rate", max_failure_rate, 0 <= max_failure_rate <= 1, "must be in [0, 1]"),
            ("direction", direction, set(directions) <= set(DIRECTIONS), "maximize or minimize"),
            (
                "threads_per_job",
                threads_per_job,
                threads_per_job is None or threads_per_job >= 1,
                "must be >= 1, or null",
            ),
            ("top_k", top_k, top_k >= 1, "must be >= 1"),
            ("heartbeat_interval", heartbeat_interval, heartbeat_interval >= 1, "must be >= 1"),
            (
                "grace_period",
                grace_period,
                grace_period > heartbeat_interval,
                "must be longer than heartbeat_interval",
            ),
        ]
        for key, value, ok, expected in checks:
            if not ok:
                raise SweepError(f"hydra.sweeper.{key}={value!r}: {expected}")
        self.sampler_config = sampler
        self.pruner_config = pruner
        self.directions = directions
        self.study_name = study_name
        self.storage = storage
        self.n_trials = n_trials
        self.timeout = timeout
        self.epoch_budget = epoch_budget
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = {} if params is None else OmegaConf.to_container(params)
        self.custom_search_space = custom_search_space
        self.enqueue = [dict(p) for p in enqueue]  # param name -> value
        self.allow_space_change = allow_space_change
        self.threads_per_job = threads_per_job
        self.top_k = top_k
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.sweep_dir = Path(config.hydra.sweep.dir)
        # Another Hydra launcher (submitit for SLURM): trials go through it, one job per call,
        # from n_jobs threads. Jobs then run elsewhere, so they cannot be pruned.
        self.launcher = None
        if not str(config.hydra.launcher._target_).endswith("BasicLauncher"):
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=hydra_context, task_function=task_function, config=config
            )

    # -- the sweep, in the process that was started --------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        # CLOCK_MONOTONIC is system-wide on Linux, so forked workers share this start.
        self.deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.epoch_budget is not None and self.launcher is not None:
            raise SweepError(
                f"hydra.sweeper.epoch_budget={self.epoch_budget}: jobs run through "
                f"{self.config.hydra.launcher._target_} do not report epochs to the study; "
                "use hydra.sweeper.n_trials or timeout"
            )
        try:
            self.space = parse_search_space(self.params, arguments)  # type: ignore[arg-type]
            grid = self.space.grid_values() if self._is_grid() else None
        except (SearchSpaceError, HydraException) as e:
            raise SweepError(f"hydra.sweeper.params: {e}") from None
        self.total = (
            self.n_trials
            if grid is None
            else min(self.n_trials, math.prod(map(len, grid.values())))
        )
        self.where = describe_storage(self.storage, self.sweep_dir)

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # this module logs what matters
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self._masked(self.config.copy()), self.sweep_dir / "multirun.yaml")

        study = self.open_study(worker=0)
        with file_lock(self.sweep_dir / ".ask.lock"):
            check_search_space(study, self.space.signature(), self.allow_space_change, self.where)
            # Once per study: re-running the command must not queue the warm start again.
            if self.enqueue and not study.user_attrs.get(WARM_STARTED):
                for params in self.enqueue:
                    study.enqueue_trial(params)
                study.set_user_attr(WARM_STARTED, True)
        log.info(
            "study %s in %s: %d trials (%d there already), %d at a time, %s, %s, %s",
            self.study_name,
            self.where,
            self.total,
            budget_used(study.get_trials(deepcopy=False)),
            self.n_jobs,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            "/".join(self.directions),
        )
        for name, distribution in self.space.distributions.items():
            log.info("  %s: %s", name, distribution)

        try:
            if self.launcher is not None:
                crashed = run_threads(self.n_jobs, self.serve, study)
            elif self.n_jobs == 1:
                self.serve(study)
                crashed = []
            else:
                threads = self.threads_per_job or worker_threads(self.n_jobs)
                crashed = run_forked(self.n_jobs, self.work, threads)
            if crashed:
                raise SweepError(f"{', '.join(crashed)} stopped with an error; see the log above")
        except KeyboardInterrupt:
            log.warning("sweep interrupted; run the same command again to continue the study")
            sys.exit(130)

        write_report(study, self.sweep_dir, self.where, self.top_k)
        failed = failures(study.get_trials(deepcopy=False))
        if len(failed) > self.max_failure_rate * self.total:
            raise SweepError(
                f"sweep stopped: {len(failed)} of {self.total} trials failed "
                f"(hydra.sweeper.max_failure_rate={self.max_failure_rate}); last reason: "
                f"{failed[-1].user_attrs.get(FAIL_REASON, 'unknown')}"
            )

    def open_study(self, worker: int) -> optuna.Study:
        """The study, with a storage client and sampler of this process's own."""
        try:
            self.client = open_storage(
                self.storage, self.sweep_dir, self.heartbeat_interval, self.grace_period
            )
            study = optuna.create_study(
                study_name=self.study_name,
                storage=self.client,
                sampler=self._sampler(worker),
                pruner=instantiate(self.pruner_config),
                directions=self.directions,
                load_if_exists=True,
            )
        except Exception as e:  # drivers and SQLAlchemy raise many types; all mean "cannot open"
            raise SweepError(
                f"cannot open study {self.study_name} in {self.where}: {mask_password(str(e))}"
            ) from None
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise SweepError(
                f"hydra.sweeper.direction={self.directions}: study {self.study_name} in "
                f"{self.where} was created with {stored}"
            )
        return study

    def _sampler(self, worker: int) -> optuna.samplers.BaseSampler:
        settings = OmegaConf.to_container(self.sampler_config)
        assert isinstance(settings, dict)
        if settings.get("seed") is not None:
            settings["seed"] += worker  # same seed in every worker would sample the same points
        sampler = instantiate(settings)
        if isinstance(sampler, functools.partial):  # the grid sampler waits for its grid
            sampler = sampler(search_space=self.space.grid_values())
        return sampler

    def _is_grid(self) -> bool:
        return str(self.sampler_config.get("_target_", "")).endswith("GridSampler")

    def work(self, worker: int) -> None:
        self.serve(self.open_study(worker))

    def serve(self, study: optuna.Study) -> None:
        """Run trials until the study has its n_trials (or too many failed)."""
        while (claimed := self.claim_next_trial(study)) is not None:
            trial, trial_dir, lock = claimed
            try:
                self.run(study, trial, trial_dir)
            except KeyboardInterrupt:
                log.warning(
                    "interrupted: trial %d stays resumable in %s; start the sweep again to "
                    "continue it",
                    trial.number,
                    self.sweep_dir / trial_dir,
                )
                raise
            finally:
                lock.close()

    def claim_next_trial(self, study: optuna.Study) -> tuple[Trial, str, IO[str]] | None:
        with file_lock(self.sweep_dir / ".ask.lock"):
            optuna.storages.fail_stale_trials(study)  # RDB: no heartbeat for grace_period
            requeue_abandoned(study, self.sweep_dir)  # any storage: trial dir lock released
            trials = study.get_trials(deepcopy=False)
            if len(failures(trials)) > self.max_failure_rate * self.total:
                return None
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and budget_used(trials) >= self.total:
                return None
            if self.deadline is not None and time.monotonic() >= self.deadline:
                log.info("timeout of %g s reached: no new trials", self.timeout)
                return None
            if self.epoch_budget is not None and epochs_spent(trials) >= self.epoch_budget:
                log.info("epoch budget of %d spent: no new trials", self.epoch_budget)
                return None
            trial = study.ask()  # a queued trial (warm start, retry) first, else a new one
            trial_dir = trial.user_attrs.get(TRIAL_DIR, f"trial_{trial.number:04d}")
            self.space.suggest(trial)
            if self.custom_search_space:
                get_method(self.custom_search_space)(self.config, trial)
            trial.set_user_attr(TRIAL_DIR, trial_dir)
            trial.set_user_attr(OVERRIDES, self.space.overrides(trial.params))
            trial.set_user_attr(WORKER, f"{socket.gethostname()}:{os.getpid()}")
            if isinstance(self.client, RDBStorage):
                self.client.record_heartbeat(trial._trial_id)  # alive from the start
            return trial, trial_dir, claim_trial_dir(self.sweep_dir / trial_dir)

    def run(self, study: optuna.Study, trial: Trial, trial_dir: str) -> None:
        overrides = trial.user_attrs[OVERRIDES]
        log.info("trial %d (%s): %s", trial.number, trial_dir, " ".join(overrides))
        try:
            with heartbeat(self.client, trial, self.heartbeat_interval):
                if self.launcher is None:
                    ret = self.run_here(trial, trial_dir, overrides)
                else:  # one job per call: the slot frees when this trial ends, not a batch
                    overrides = [*overrides, f"hydra.sweep.subdir={trial_dir}"]
                    [ret] = self.launcher.launch([overrides], initial_job_idx=trial.number)
            values = self.values(ret)
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

    def run_here(self, trial: Trial, trial_dir: str, overrides: list[str]) -> JobReturn:
        """The job in this process, where it can report to its trial and be pruned."""
        config = self.job_config(overrides, trial.number, trial_dir)
        hpsweep_sweeper._running[0] = trial
        try:
            return run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        finally:
            hpsweep_sweeper._running[0] = None
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

    def tell(self, study: optuna.Study, trial: Trial, **outcome: Any) -> None:
        what = f"recording trial {trial.number}"
        with_retries(lambda: study.tell(trial, skip_if_finished=True, **outcome), what, self.where)

    def job_config(self, overrides: list[str], number: int, trial_dir: str) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = f"{self.study_name}_{number}"
            config.hydra.job.num = number
            config.hydra.sweep.subdir = trial_dir
        self._masked(config)  # the job writes hydra.yaml: no password in it
        HydraConfig.instance().set_config(config)
        return config

    def values(self, ret: JobReturn) -> list[float]:
        if ret.status == JobStatus.FAILED:
            # JobReturn.return_value would re-raise too, but first prints "Error executing
            # job", which is wrong for a pruned trial; the exception is kept here (hydra 1.3).
            raise ret._return_value
        result = ret.return_value
        raw = [result] if len(self.directions) == 1 else list(result)
        values = [float(v) for v in raw]
        if len(values) != len(self.directions) or not all(map(math.isfinite, values)):
            raise ValueError(
                f"the job returned {result!r}; expected {len(self.directions)} finite number(s)"
            )
        return values

    def _masked(self, config: DictConfig) -> DictConfig:
        with open_dict(config):
            if config.hydra.sweeper.get("storage"):
                config.hydra.sweeper.storage = mask_password(config.hydra.sweeper.storage)
            config.hydra.overrides.hydra = [mask_password(o) for o in config.hydra.overrides.hydra]
        return config
