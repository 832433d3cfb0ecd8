"""What the sweeper is given, checked before any trial runs: its settings (hydra.sweeper.*,
typed by config.HpsweepSweeperConf), the study's directions, and what Hydra hands it in
`setup` (the task and the marks it carries, its config, another launcher if one is selected).
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.hpsweep_sweeper._names import DIRECTION, FUSABLE
from hydra_plugins.hpsweep_sweeper._search_space import format_value
from hydra_plugins.hpsweep_sweeper._storage import mask_password
from hydra_plugins.hpsweep_sweeper.config import HpsweepSweeperConf

DIRECTIONS = ("maximize", "minimize")
HYDRA_SWEEP_DIR = "multirun/${now:%Y-%m-%d}/${now:%H-%M-%S}"  # hydra.sweep.dir's default
FUSE_SAMPLING = ("per_trial", "per_group")


class SweepError(CompactHydraException):
    """Shown by Hydra as its message alone: a setting to fix, or a sweep that cannot go on."""


def read_settings(settings: Mapping[str, Any]) -> HpsweepSweeperConf:
    """What Hydra passes to the sweeper, as its typed config, checked before any trial runs."""
    typed = OmegaConf.merge(OmegaConf.structured(HpsweepSweeperConf), settings)
    conf = OmegaConf.to_object(typed)  # plain values: sampler and pruner become dicts
    assert isinstance(conf, HpsweepSweeperConf)
    timeout, epoch_budget, threads = conf.timeout, conf.epoch_budget, conf.threads_per_job
    checks = [
        ("n_trials", conf.n_trials >= 1, "must be >= 1"),
        ("timeout", timeout is None or 0 < timeout < math.inf, "seconds > 0, or null"),
        ("epoch_budget", epoch_budget is None or epoch_budget >= 1, "must be >= 1, or null"),
        ("n_jobs", conf.n_jobs >= 1, "must be >= 1"),
        ("max_failure_rate", 0 <= conf.max_failure_rate <= 1, "must be in [0, 1]"),
        ("direction", set(directions(conf)) <= {None, *DIRECTIONS}, "maximize or minimize"),
        ("threads_per_job", threads is None or threads >= 1, "must be >= 1, or null"),
        ("top_k", conf.top_k >= 1, "must be >= 1"),
        ("fuse", conf.fuse >= 1, "must be >= 1 (1: each trial its own job)"),
        ("fuse_sampling", conf.fuse_sampling in FUSE_SAMPLING, " or ".join(FUSE_SAMPLING)),
        ("max_retries", conf.max_retries >= 0, "must be >= 0 (0: a dead worker's trial fails)"),
        ("heartbeat_interval", conf.heartbeat_interval >= 1, "must be >= 1"),
        (
            "grace_period",
            conf.grace_period > conf.heartbeat_interval,
            "must be longer than heartbeat_interval",
        ),
    ]
    for key, ok, expected in checks:
        if not ok:
            raise SweepError(f"hydra.sweeper.{key}={getattr(conf, key)!r}: {expected}")
    if conf.study_name is not None:  # null: Hydra's job name (job_context)
        check_study_name(conf.study_name)
    return conf


def check_study_name(name: str) -> None:
    # The sweep dir is multirun/<study name>: a name with a path in it would write elsewhere.
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise SweepError(
            f"hydra.sweeper.study_name={name!r}: must be a plain name (no '/', '\\', '..' "
            "or empty); it names the study and its folder multirun/<study_name>"
        )


def directions(settings: HpsweepSweeperConf) -> list[Any]:
    """`direction` as a list: one entry per objective."""
    direction = settings.direction
    return [direction] if direction is None or isinstance(direction, str) else list(direction)


def study_directions(settings: HpsweepSweeperConf, context: "JobContext") -> list[Any]:
    """The study's directions: the setting's, checked against the one the task function
    declares for its config (`declares_direction`); null: the task's, or else maximize.

    A sweep steering against the task's own word would find the worst trial and call it
    the best.
    """
    declared = declared_direction(context)
    implied = None if declared is None else declared[2]
    if settings.direction is None:
        return [implied or "maximize"]
    given = directions(settings)
    if declared is not None and given != [implied]:
        key, value, _ = declared
        raise SweepError(
            f"hydra.sweeper.direction={settings.direction}: {key}={value} is {implied}d; set "
            f"hydra.sweeper.direction={implied}, or leave it out to follow the {key}"
        )
    return given


def declared_direction(context: "JobContext") -> tuple[str, Any, str] | None:
    """(key, its value, direction) when the task function declares a direction for its job
    config, else None."""
    name = getattr(context.task_function, "__qualname__", context.task_function)
    declared = getattr(context.task_function, DIRECTION, None)
    return direction_for(declared, context.config, f"the task function {name}")


def direction_for(
    declared: tuple[str, Callable[[Any], str | None]] | None, config: DictConfig, who: str
) -> tuple[str, Any, str] | None:
    """What `declared` (declares_direction's key and function) says of `config`: (key, its
    value, direction), or None when it has no say."""
    if declared is None:
        return None
    key, direction_of = declared
    value = OmegaConf.select(config, key, default=None)
    if not isinstance(value, str | int | float | bool):  # missing, or a node: no say
        return None
    direction = direction_of(value)
    if direction is None:
        return None
    if direction not in DIRECTIONS:
        raise SweepError(
            f"{key}={value}: {who} declares the direction {direction!r}, not maximize or minimize"
        )
    return key, value, direction


@dataclass(frozen=True)
class JobContext:
    """What Hydra hands the sweeper in `setup`: all it takes to run a job."""

    hydra_context: HydraContext
    task_function: TaskFunction
    config: DictConfig
    sweep_dir: Path
    # Another Hydra launcher (submitit for SLURM): trials go through it, one job per call,
    # from n_jobs threads. Jobs then run elsewhere, so they cannot be pruned.
    launcher: Launcher | None
    # Hydra overrides every job's config needs, as the sweep's config has them
    job_overrides: tuple[str, ...] = ()


def job_context(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    settings: HpsweepSweeperConf,
) -> JobContext:
    job_overrides: tuple[str, ...] = ()
    if settings.study_name is None:
        # hydra-optuna-sweeper's configs say `study_name: null`. Hydra's job name then, not a
        # random one: the same command continues the same study, in the sweep dir that name
        # gives (multirun/<study_name>), and each job's config (composed anew) says so too.
        settings.study_name = str(config.hydra.job.name)
        check_study_name(settings.study_name)
        with read_write(config), open_dict(config):
            config.hydra.sweeper.study_name = settings.study_name
        job_overrides = (f"hydra.sweeper.study_name={format_value(settings.study_name)}",)
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    if isinstance(sweep, dict) and sweep.get("dir") == HYDRA_SWEEP_DIR:
        # Hydra's own default, a new dir per start: the study's dir instead (as hpsweep-train's
        # train.yaml sets it), so that the same command continues the same study there
        study_dir = f"multirun/{settings.study_name}"
        with read_write(config), open_dict(config):
            config.hydra.sweep.dir = study_dir
        job_overrides += (f"hydra.sweep.dir={format_value(study_dir)}",)
    launcher = None
    if not str(config.hydra.launcher._target_).endswith("BasicLauncher"):
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
    sweep_dir = Path(config.hydra.sweep.dir)
    return JobContext(hydra_context, task_function, config, sweep_dir, launcher, job_overrides)


def fusable_task(settings: HpsweepSweeperConf, context: JobContext) -> Any:
    """The task's (group_key, run_group) when fuse > 1 (see hpsweep_sweeper.fusable)."""
    if settings.fuse == 1:
        return None
    if context.launcher is not None:
        raise SweepError(
            f"hydra.sweeper.fuse={settings.fuse}: jobs run through "
            f"{context.config.hydra.launcher._target_} run one trial each; use fuse=1"
        )
    if context.config.hydra.job.chdir:
        raise SweepError(
            f"hydra.sweeper.fuse={settings.fuse}: hydra.job.chdir=true runs each job in its "
            "trial's dir, and a fused group runs many trials in one process; set "
            "hydra.job.chdir=false (hpsweep-train writes into each trial's dir either way), "
            "or fuse=1"
        )
    found = getattr(context.task_function, FUSABLE, None)
    if found is None:
        name = getattr(context.task_function, "__qualname__", context.task_function)
        raise SweepError(
            f"hydra.sweeper.fuse={settings.fuse}: the task function {name} cannot train "
            "trials together (it is not marked with hydra_plugins.hpsweep_sweeper.fusable); "
            "use fuse=1"
        )
    return found


def masked(config: DictConfig) -> DictConfig:
    """The storage URL's password as *** in a config the sweep writes (multirun.yaml, a
    job's hydra.yaml)."""
    with open_dict(config):
        if config.hydra.sweeper.get("storage"):
            config.hydra.sweeper.storage = mask_password(config.hydra.sweeper.storage)
        config.hydra.overrides.hydra = [mask_password(o) for o in config.hydra.overrides.hydra]
    return config
