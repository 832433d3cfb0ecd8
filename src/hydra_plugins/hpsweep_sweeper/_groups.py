"""hydra.sweeper.fuse=K: the trials a worker claimed, trained in groups, one job per group.

The task function says which trials can share a job (its group_key, see `fusable`): trials
with equal keys form a group, the others run one by one as with fuse=1. Each trial keeps its
own Optuna trial: it reports its epochs, is pruned and is told its outcome as it leaves the
group, not when the group ends, so the sampler and the pruners see it as soon as it is known.
A FusingWorker is the worker loop of _worker_loop with the claimed trials run this way.
"""

import contextlib
import copy
import logging
import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, cast

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write
from optuna.trial import Trial

from hydra_plugins.hpsweep_sweeper import _compat
from hydra_plugins.hpsweep_sweeper._names import OVERRIDES
from hydra_plugins.hpsweep_sweeper._progress import log_prefix, logging_as
from hydra_plugins.hpsweep_sweeper._storage import heartbeat
from hydra_plugins.hpsweep_sweeper._worker_loop import StudyConnection, Worker

log = logging.getLogger(__name__)

Job = tuple[Trial, str, DictConfig]  # a trial, its dir (relative to the sweep dir), its config


class FusingWorker(Worker):
    """A worker of a sweep with fuse > 1: the trials it claims at once run in groups."""

    def run_claimed(self, conn: StudyConnection, claimed: list[tuple[Trial, str]]) -> None:
        if len(claimed) == 1:
            super().run_claimed(conn, claimed)
        else:
            run_fusable(self, conn, claimed)


def run_fusable(worker: Worker, conn: StudyConnection, claimed: list[tuple[Trial, str]]) -> None:
    """Run the claimed trials: those the task can train together as one job per group."""
    group_key, _, _ = worker.fusable
    groups: dict[Hashable, list[Job]] = {}
    for trial, trial_dir in claimed:
        config = worker.job_config(trial.user_attrs[OVERRIDES], trial.number, trial_dir)
        HydraConfig.instance().set_config(config)  # its ${hydra:...} for group_key
        with read_write(config.hydra.runtime):  # as Hydra's run_job sets it
            config.hydra.runtime.output_dir = os.path.abspath(
                os.path.join(config.hydra.sweep.dir, trial_dir)
            )
        key = group_key(config)
        # None: a trial the task trains alone (its own key, unlike any other)
        groups.setdefault(("alone", trial.number) if key is None else key, []).append(
            (trial, trial_dir, config)
        )
    for jobs in groups.values():
        if len(jobs) == 1:
            worker.run_trial(conn, *jobs[0])
        else:
            run_group(worker, conn, jobs)


def run_group(worker: Worker, conn: StudyConnection, jobs: list[Job]) -> None:
    """One job for the group: the task's run_group, each trial told as it leaves."""
    _, task_run_group, _ = worker.fusable
    trials = [trial for trial, _, _ in jobs]
    for trial, trial_dir, _ in jobs:
        worker.log_trial_start(trial, trial_dir)
    told: set[int] = set()
    # The group's job sets up its own logging; the sweeper's lines about a trial leaving it
    # ("trial 3 finished", the progress line) go out as the sweep's, as after a single trial.
    sweep_log = logging.getLogger().handlers[:], logging.getLogRecordFactory()
    # Hydra's job callbacks (hydra.callbacks), each trial its own instances: callbacks are
    # written for one job at a time (Hydra's PickleJobInfoCallback keeps the job's dir from
    # on_job_start to on_job_end), and a group's trials start together and end apart.
    callbacks = [job_callbacks(config) for _, _, config in jobs]

    def done(i: int, outcome: Any) -> None:
        if i in told:
            raise ValueError(f"trial {trials[i].number} of the group was reported twice")
        told.add(i)
        own = callbacks[i]
        if own is not None:
            job_end(own, jobs[i][2], outcome)
        with logging_as(*sweep_log):
            worker.record(conn, trials[i], outcome)

    numbers = number_ranges([t.number for t in trials])
    log.info("trials %s: one fused job", numbers)
    hydra_config = HydraConfig.instance().cfg
    error: Exception = RuntimeError("the group's job ended without a word on this trial")
    with contextlib.ExitStack() as beats:
        for trial in trials:
            beats.enter_context(heartbeat(conn.client, trial, worker.settings.heartbeat_interval))
        try:
            # trials group by their task config: hydra.job.env_set is the sweep's, as the first's
            with log_prefix(f"[trials {numbers}] "), env_override(jobs[0][2].hydra.job.env_set):
                for (_, _, config), own in zip(jobs, callbacks, strict=True):
                    Path(config.hydra.runtime.output_dir).mkdir(parents=True, exist_ok=True)
                    if own is not None:
                        HydraConfig.instance().set_config(config)
                        own.on_job_start(config=config, task_function=worker.context.task_function)
                task_run_group([config for _, _, config in jobs], trials, done)
        except Exception as e:  # the whole job failed: every trial it had not reported
            log.exception("the fused job of trials %s failed", numbers)
            error = e
        finally:  # the group set up its own logging and Hydra config: back to the sweep's
            HydraConfig.instance().cfg = hydra_config
            hydra = worker.context.config.hydra
            configure_log(hydra.hydra_logging, hydra.verbose)
    for i in range(len(trials)):
        if i not in told:
            done(i, error)


def job_callbacks(config: DictConfig) -> _compat.Callbacks | None:
    """The job's callbacks, if one of them has a job hook: the JobReturn made for on_job_end
    costs two copies of the config, which a callback of the run or sweep alone (as
    hpsweep-train's) would not use."""
    if not config.hydra.callbacks:
        return None
    callbacks = _compat.Callbacks(config)
    hooks = ("on_job_start", "on_job_end")
    if not any(
        getattr(type(c), hook) is not getattr(Callback, hook)
        for c in callbacks.callbacks
        for hook in hooks
    ):
        return None
    return callbacks


def job_end(callbacks: _compat.Callbacks, config: DictConfig, outcome: Any) -> None:
    """on_job_end for a trial of a group, with the JobReturn Hydra's run_job would give it
    (HydraConfig its own meanwhile: the group goes on under the one it had)."""
    group_config = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    task_config = copy.deepcopy(config)
    with read_write(task_config), open_dict(task_config):
        del task_config["hydra"]
    failed = isinstance(outcome, BaseException)
    job_return = JobReturn(
        overrides=list(config.hydra.overrides.task),
        cfg=task_config,
        hydra_cfg=cast(DictConfig, copy.deepcopy(HydraConfig.instance().cfg)),
        working_dir=os.getcwd(),
        task_name=config.hydra.job.name,
        status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
    )
    job_return.return_value = outcome
    try:
        callbacks.on_job_end(config=config, job_return=job_return)
    finally:
        HydraConfig.instance().cfg = group_config


def number_ranges(numbers: list[int]) -> str:
    """0,1,2,3,7,9,10 -> "0-3,7,9-10": a group's trials, short enough for every log line."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)
