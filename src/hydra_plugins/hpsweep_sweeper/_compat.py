"""Every private Hydra or Optuna API the sweeper uses, and only here: when either moves, this
file and tests/test_compat.py (which checks the shape of each) are what to look at.

Checked against hydra-core 1.3.8 and optuna 5.1.0 (CHECKED_WITH; the test accepts their patch
releases). Hydra:
- hydra._internal.callbacks.Callbacks: the job callbacks of `hydra.callbacks`, built from a
  job's config, with on_job_start(config, task_function=) and on_job_end(config, job_return=),
  the instances in its `callbacks` list.
  A fused group's trials start together and end apart, so each gets its own, called by hand:
  Hydra runs them only inside run_job.
- hydra._internal.config_loader_impl.ConfigLoaderImpl._apply_overrides_to_config(overrides,
  cfg) and get_overrides_dirname(overrides, exclude_keys, item_sep, kv_sep): what a
  composition does last, so that a fused trial's config is derived from another's.
- JobReturn._return_value: a job's outcome read without JobReturn.return_value, which prints
  "Error executing job" before re-raising, wrongly for a pruned trial.
- hydra.core.utils._save_config(cfg, filename, output_dir) and _flush_loggers(): how run_job
  writes a job's .hydra files and flushes its log handlers (_job runs a job as run_job does).
- DictConfig.__deepcopy__ gives a child that deepcopy's memo maps to itself back its parent:
  copy_without_hydra copies a job config but its hydra node, as run_job copies it whole.
- HydraConfig.cfg, what set_config sets: {hydra: a copy of the config's hydra node, read-only,
  its parent the config}. use_hydra_config sets the same without the copy, through OmegaConf's
  Node._set_parent and the flag `no_deepcopy_set_nodes` (DictConfig deep-copies a node put
  into it unless that flag is set).
Optuna:
- optuna.storages.journal._storage.JournalOperation: the op codes a journal record may hold.
- Study._storage and Study._study_id, Trial._trial_id and FrozenTrial._trial_id: one trial
  read or changed by its id, where the public API reads every trial of the study.
- RDBStorage's private methods that Optuna calls (RDB_CACHE_CALLS): RetryingRDBStorage retries
  each.
- The system attribute `fixed_params` of a trial queued by Study.enqueue_trial: the values a
  queued trial that never started is queued again with.
- The system attributes of RetryHeartbeatStaleTrialCallback (retry_history, failed_trial),
  written by the sweeper's own retries so that Optuna's helpers read them as its own.
- GridSampler._all_grids, and the grid sampler's system attributes (search_space, grid_id):
  which id the sampler gives each point of a grid.
"""

import copy
from typing import TYPE_CHECKING, Any, cast

from hydra._internal.callbacks import Callbacks
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import _flush_loggers as flush_loggers
from hydra.core.utils import _save_config as save_config
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.storages.journal._storage import JournalOperation

if TYPE_CHECKING:
    import optuna
    from hydra.core.override_parser.types import Override
    from hydra.core.utils import JobReturn
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

__all__ = [
    "CHECKED_WITH",
    "RDB_CACHE_CALLS",
    "Callbacks",
    "JournalOperation",
    "apply_overrides",
    "copy_without_hydra",
    "flush_loggers",
    "get_overrides_dirname",
    "grid_points",
    "grid_system_attrs",
    "job_outcome",
    "queued_params",
    "retry_history",
    "retry_system_attrs",
    "save_config",
    "storage_of",
    "study_id",
    "trial_id",
    "use_hydra_config",
]

CHECKED_WITH = {"hydra-core": "1.3.8", "optuna": "5.1.0"}

# What Optuna calls on an RDB storage besides its public methods: fail_stale_trials, and the
# cache that create_study puts in front of it.
RDB_CACHE_CALLS = (
    "_get_stale_trial_ids",
    "_create_new_trial",
    "_set_trial_param",
    "_get_trials",
    "_get_best_trial_id",
)


def use_hydra_config(config: DictConfig) -> None:
    """HydraConfig.instance().set_config(config), sharing the config's hydra node where
    set_config copies it (3-6 ms): for a config made for one job, dropped after it."""
    assert issubclass(OmegaConf.get_type(config, "hydra") or object, HydraConf)
    OmegaConf.set_readonly(config.hydra, True)
    node = config._get_node("hydra")
    assert node is not None
    shared = DictConfig({"hydra": node}, flags={"no_deepcopy_set_nodes": True})
    shared._set_flag("no_deepcopy_set_nodes", None)
    node._set_parent(config)  # interpolations in it see the whole config, as set_config's copy
    HydraConfig.instance().cfg = cast(HydraConf, shared)  # as set_config types its copy


def copy_without_hydra(config: DictConfig) -> DictConfig:
    """The task's config: a deep copy of the job's config without its hydra node, which is not
    copied (3 ms of run_job's 4 here): deepcopy's memo maps the node to itself, then it is
    deleted from the copy, left as it was in `config`."""
    node = config._get_node("hydra")
    task_config = copy.deepcopy(config, {id(node): node})
    with read_write(task_config), open_dict(task_config):
        del task_config["hydra"]
    return task_config


def apply_overrides(overrides: "list[Override]", config: DictConfig) -> None:
    """Set plain-value overrides on a composed config, as Hydra does at a composition's end."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, config)


def job_outcome(job_return: "JobReturn") -> Any:
    """What the job returned, or the exception that ended it."""
    return job_return._return_value


def storage_of(study: "optuna.Study") -> "BaseStorage":
    return study._storage


def study_id(study: "optuna.Study") -> int:
    return study._study_id


def trial_id(trial: "optuna.Trial | FrozenTrial") -> int:
    return trial._trial_id


def queued_params(trial: "FrozenTrial") -> dict[str, Any] | None:
    """The parameter values Study.enqueue_trial gave this trial, or None if it was not queued."""
    fixed = trial.system_attrs.get("fixed_params")
    return dict(fixed) if isinstance(fixed, dict) else None


def retry_history(trial: "FrozenTrial") -> list[int]:
    """The trials this one continues, oldest first (RetryHeartbeatStaleTrialCallback's
    retry_history reads the same)."""
    return list(trial.system_attrs.get("retry_history", []))


def retry_system_attrs(history: list[int]) -> dict[str, Any]:
    """A retry's system attributes, as RetryHeartbeatStaleTrialCallback writes them: `history`
    is the trials it continues, oldest first."""
    return {"failed_trial": history[0], "retry_history": history}


def grid_points(grid: dict[str, list[Any]], seed: int | None) -> list[tuple[Any, ...]]:
    """The points of a grid (keys sorted) in the order of the ids GridSampler(grid, seed)
    gives them; Optuna has no public way to ask."""
    import optuna

    return list(optuna.samplers.GridSampler(grid, seed=seed)._all_grids)


def grid_system_attrs(grid: dict[str, list[Any]], point_id: int) -> dict[str, Any]:
    """What the grid sampler marks a trial with, so that it does not run that point again."""
    return {"search_space": {k: list(grid[k]) for k in sorted(grid)}, "grid_id": point_id}
