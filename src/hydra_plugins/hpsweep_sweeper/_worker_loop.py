"""What each worker of a sweep does (hpsweep_sweeper._sweep starts them): claim its next
trials from the study under the ask lock, run each as a Hydra job in this process (or through
another launcher), and tell the study how each ended. A worker of a fused sweep runs the
claimed trials in groups instead (_groups.FusingWorker).

A worker knows its sweep only through a SweepPlan: the values it reads, settled before any
worker starts (a forked worker has a copy of them, not the sweep's own).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import optuna
from hydra.core.utils import JobReturn, configure_log
from hydra.utils import get_method
from omegaconf import DictConfig, open_dict
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import Trial, TrialState

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._derive import derive_config
from hydra_plugins.hpsweep_sweeper._experimental import our_optuna_calls
from hydra_plugins.hpsweep_sweeper._job import run_sweep_job
from hydra_plugins.hpsweep_sweeper._names import FAIL_REASON, OVERRIDES, RETRY_OF, TRIAL_DIR, WORKER
from hydra_plugins.hpsweep_sweeper._progress import SweepProgress, log_prefix
from hydra_plugins.hpsweep_sweeper._running import running_trial
from hydra_plugins.hpsweep_sweeper._search_space import SearchSpace
from hydra_plugins.hpsweep_sweeper._settings import JobContext, masked
from hydra_plugins.hpsweep_sweeper._signals import check_stopped, stopped_how
from hydra_plugins.hpsweep_sweeper._storage import (
    EnvironmentStop,
    describe_os_error,
    environment_cause,
    heartbeat,
    with_retries,
)
from hydra_plugins.hpsweep_sweeper._study import (
    claim_trial_dir,
    close_unstarted,
    file_lock,
    requeue_abandoned,
    tell_study,
)
from hydra_plugins.hpsweep_sweeper._tally import Tally
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

log = logging.getLogger(__name__)

Claimed = tuple[Trial, str, IO[str]]  # a trial, its dir (relative to the sweep dir), its lock


@dataclass(frozen=True)
class SweepPlan:
    """What a worker reads of the sweep it serves, settled before any worker starts."""

    settings: HpsweepSweeperConf
    context: JobContext
    space: SearchSpace
    directions: list[str]
    total: int  # the sweep's n_trials, capped at the grid's size for a grid
    deadline: float | None  # time.monotonic() after which no trial starts (timeout)
    where: str  # the storage as messages name it
    progress: SweepProgress
    # The task's (group_key, run_group, may_differ) when fuse > 1 (see hpsweep_sweeper.fusable)
    fusable: Any
    # A seeded sampler rebuilt for the number of trials in the study before each ask (see
    # _sweep.Sweep.reseeded), or None: the study's sampler keeps its own stream.
    reseed: Callable[[int], optuna.samplers.BaseSampler] | None


@dataclass(frozen=True)
class StudyConnection:
    """The study as one process sees it: a storage client and a sampler of its own."""

    study: optuna.Study
    # The client itself, for heartbeats: the study wraps an RDB storage in a cache.
    client: BaseStorage
    tally: Tally  # what the budget checks and progress lines count, read incrementally


class Worker:
    """One worker's loop over the sweep's study: a process of its own, or a thread feeding
    another launcher."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.context = plan.context
        self.fusable = plan.fusable
        self.told: set[int] = set()  # trials this worker has told the study the end of
        self.started: set[int] = set()  # trials whose job this worker began
        # its first composed job config and that trial's overrides: the others derive from it
        self.template: tuple[DictConfig, list[str]] | None = None

    def serve(self, conn: StudyConnection) -> None:
        """Run trials until the study has its n_trials (or too many failed).

        A full disk or an unwritable folder (environment_cause) stops the worker instead of
        failing its trial, and every trial after it in turn: the trial stays RUNNING, and the
        next start of the sweep resumes it where its last checkpoint stands."""
        claimed: list[Claimed] = []
        try:
            while claimed := self.claim_trials(conn, self.settings.fuse):
                try:
                    self.run_claimed(conn, [(trial, trial_dir) for trial, trial_dir, _ in claimed])
                finally:
                    for _, _, lock in claimed:
                        lock.close()
        except KeyboardInterrupt as e:  # Ctrl-C, a stop signal
            left = self.left(claimed)  # those of an earlier claim were told: none left
            log.warning("%s: %s; start the sweep again to continue", stopped_how(e), left)
            raise
        except Exception as e:
            cause = environment_cause(e)
            if cause is None:
                raise
            raise EnvironmentStop(
                f"sweep stopped: {describe_os_error(cause)}; {self.left(claimed)}; no trial is "
                "charged for it: free space (or make it writable), then run the same command "
                "again to continue"
            ) from None

    def run_claimed(self, conn: StudyConnection, claimed: list[tuple[Trial, str]]) -> None:
        """Run the claimed trials, one job each."""
        for trial, trial_dir in claimed:
            self.run_trial(conn, trial, trial_dir)

    def left(self, claimed: list[Claimed]) -> str:
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

    def claim_trials(self, conn: StudyConnection, n: int) -> list[Claimed]:
        """Up to n trials from the study (fewer once a budget is spent), each with its trial
        dir and the lock that says a live worker runs it."""
        check_stopped()  # a stop whose signal's raise was lost: before another trial starts
        sweep_dir, study, tally = self.context.sweep_dir, conn.study, conn.tally
        claimed: list[Claimed] = []
        with file_lock(sweep_dir / ".ask.lock"):
            with our_optuna_calls():
                optuna.storages.fail_stale_trials(study)  # RDB: no heartbeat for grace_period
            tally.refresh(study)
            running = tally.running_trials()
            requeue_abandoned(study, sweep_dir, running)  # trial dir lock free
            close_unstarted(study, running)  # no trial dir: no worker is between ask and claim
            tally.refresh(study)  # the trials they failed and queued: a read of those alone
            # a fair share: one worker taking every trial would leave the others idle
            n = min(n, -(-self.plan.total // self.settings.n_jobs))
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
        if tally.failed > settings.max_failure_rate * self.plan.total:
            return False
        if not tally.waiting and tally.budget_used >= self.plan.total:
            return False
        if self.plan.deadline is not None and time.monotonic() >= self.plan.deadline:
            log.info("timeout of %g s reached: no new trials", settings.timeout)
            return False
        if settings.epoch_budget is not None and tally.epochs >= settings.epoch_budget:
            log.info("epoch budget of %d spent: no new trials", settings.epoch_budget)
            return False
        return True

    def claim_trial(self, conn: StudyConnection) -> Claimed:
        """The study's next trial, asked under the ask lock."""
        settings, sweep_dir, study = self.settings, self.context.sweep_dir, conn.study
        if self.plan.reseed is not None:
            study.sampler = self.plan.reseed(len(conn.tally.trials))
        with our_optuna_calls():  # the sampler is at work in both
            trial = study.ask()  # a queued trial (warm start, retry) first, else a new one
            self.plan.space.suggest(trial)
        # Named after the trial it was made for: a retry's is its first attempt's (retry_of).
        trial_dir = trial.user_attrs.get(TRIAL_DIR, f"trial_{trial.number:04d}")
        if settings.custom_search_space:
            get_method(settings.custom_search_space)(self.context.config, trial)
        trial.set_user_attr(TRIAL_DIR, trial_dir)
        trial.set_user_attr(OVERRIDES, self.plan.space.overrides(trial.params))
        trial.set_user_attr(WORKER, worker_name())
        if isinstance(conn.client, RDBStorage):
            conn.client.record_heartbeat(_compat.trial_id(trial))  # alive from the start
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
            outcome = _compat.job_outcome(ret)
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
        if isinstance(outcome, Exception) and environment_cause(outcome) is not None:
            raise outcome  # not the trial's fault: serve stops the sweep, the trial resumable
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            values = self.values(outcome)
        except optuna.TrialPruned as pruned:
            self.tell(study, trial, state=TrialState.PRUNED)
            log.info("trial %d pruned: %s", trial.number, pruned)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            with_retries(
                lambda: trial.set_user_attr(FAIL_REASON, reason), "saving", self.plan.where
            )
            self.tell(study, trial, state=TrialState.FAIL)
            log.error("trial %d failed: %s", trial.number, reason)
        else:
            self.tell(study, trial, values=values)
            log.info("trial %d finished: %s", trial.number, ", ".join(f"{v:.6g}" for v in values))
        self.plan.progress.log(study, conn.tally)

    def run_here(self, trial: Trial, config: DictConfig) -> JobReturn:
        """The job in this process, where it can report to its trial and be pruned."""
        context = self.context
        try:
            with running_trial(trial), log_prefix(f"[trial {trial.number}] "):
                return run_sweep_job(context.hydra_context, context.task_function, config)
        finally:
            configure_log(context.config.hydra.hydra_logging, context.config.hydra.verbose)

    def tell(self, study: optuna.Study, trial: Trial, **outcome: Any) -> None:
        def tell() -> None:
            with our_optuna_calls():
                tell_study(study, trial, skip_if_finished=True, **outcome)

        with_retries(tell, f"recording trial {trial.number}", self.plan.where)
        self.told.add(trial.number)

    def job_config(self, overrides: list[str], number: int, trial_dir: str) -> DictConfig:
        """The trial's job config: derived from the worker's first one where it can be (the
        same config groups: see _derive), else composed."""
        config = None if self.template is None else derive_config(*self.template, overrides)
        if config is None:
            loader = self.context.hydra_context.config_loader
            config = loader.load_sweep_config(
                self.context.config, [*overrides, *self.context.job_overrides]
            )
            self.template = self.template or (config, overrides)
        with open_dict(config):
            config.hydra.job.id = f"{self.settings.study_name}_{number}"
            config.hydra.job.num = number
            config.hydra.sweep.subdir = trial_dir
        masked(config)  # the job writes hydra.yaml: no password in it
        return config

    def values(self, result: Any) -> list[float]:
        raw = [result] if len(self.plan.directions) == 1 else list(result)
        values = [float(v) for v in raw]
        expected = len(self.plan.directions)
        if len(values) != expected or not all(map(math.isfinite, values)):
            raise ValueError(f"the job returned {result!r}; expected {expected} finite number(s)")
        return values


def worker_name() -> str:
    """host:pid, and the GPU the worker was given, if it was (the `worker` attribute)."""
    name = f"{socket.gethostname()}:{os.getpid()}"
    gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
    return name if gpus is None else f"{name} (CUDA_VISIBLE_DEVICES={gpus})"
