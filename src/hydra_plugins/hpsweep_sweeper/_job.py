"""A trial's Hydra job in this process: hydra.core.utils.run_job's steps, in its order, with
what the job sees unchanged, but without run_job's four copies of the config's hydra node
(two by HydraConfig.set_config, one for the JobReturn, one inside the task config's copy):
10-20 ms a trial here, a tenth of what a small trial costs around its training.

A worker derives a fresh config for each trial (_derive) and drops it when the trial ends, so
HydraConfig and the JobReturn can share that config's hydra node (_compat.use_hydra_config).
The task config is still a copy of the rest, as run_job's is: a task may change what it gets.

A config that keeps Hydra's old working-dir change (hydra.job.chdir unset, version_base below
1.2) goes through run_job itself, which warns about it.
"""

import os
from pathlib import Path
from typing import Any, cast

from hydra import version
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, env_override, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.hpsweep_sweeper import _compat


def run_sweep_job(
    hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
) -> JobReturn:
    """run_job(config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir") for
    a config made for this job alone: the job may keep (and share) its hydra node."""
    if config.hydra.job.chdir is None and not version.base_at_least("1.2"):
        return run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    callbacks = hydra_context.callbacks
    old_cwd, old_hydra_config = os.getcwd(), HydraConfig.instance().cfg
    chdir = bool(config.hydra.job.chdir)
    try:
        _compat.use_hydra_config(config)  # the dirs may interpolate ${hydra:...}
        output_dir = os.path.join(
            str(OmegaConf.select(config, "hydra.sweep.dir")),
            str(OmegaConf.select(config, "hydra.sweep.subdir")),
        )
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        ret = JobReturn()
        ret.cfg = task_config = _compat.copy_without_hydra(config)
        ret.hydra_cfg = cast(DictConfig, HydraConfig.instance().cfg)
        ret.overrides = list(config.hydra.overrides.task)
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if chdir:
            os.chdir(output_dir)
        ret.working_dir = output_dir if chdir else os.getcwd()
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        save_records(config, task_config)
        with env_override(config.hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_config)
                ret.status = JobStatus.COMPLETED
            except Exception as e:
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _compat.flush_loggers()
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        HydraConfig.instance().cfg = old_hydra_config
        if chdir:
            os.chdir(old_cwd)


def save_records(config: DictConfig, task_config: DictConfig) -> None:
    """The job's .hydra files, unless hydra.output_subdir is null, as run_job writes them."""
    if config.hydra.output_subdir is None:
        return
    folder = Path(config.hydra.runtime.output_dir) / Path(config.hydra.output_subdir)
    records: list[tuple[Any, str]] = [
        (task_config, "config.yaml"),
        (HydraConfig.instance().cfg, "hydra.yaml"),
        (config.hydra.overrides.task, "overrides.yaml"),
    ]
    for node, name in records:
        _compat.save_config(node, name, folder)
