"""Config of the hpsweep sweeper: `hydra/sweeper=hpsweep`, plus sampler and pruner presets.

Keys follow hydra-optuna-sweeper's, so a search-space YAML written for it runs after changing
only the sweeper's name (`override hydra/sweeper: optuna` -> `override hydra/sweeper: hpsweep`).
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# The one list of the sweeper's settings: it receives them as this dataclass, checked by
# _settings.read_settings.
@dataclass
class HpsweepSweeperConf:
    _target_: str = "hydra_plugins.hpsweep_sweeper.sweeper.HpsweepSweeper"
    # The sweeper builds sampler and pruner itself, once per worker (each with its own seed).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    # MISSING, not None: this node merges after its defaults list, and None would erase them.
    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random|grid|cmaes|gp|qmc|nsgaii
    pruner: Any = (
        MISSING  # hydra/sweeper/pruner=none|median|percentile|successive_halving|hyperband
    )
    # "maximize" or "minimize"; a list of them for several objectives (the job returns a list).
    # null: the direction the task function declares for its config (declares_direction:
    # hpsweep-train's `objective`, val_acc up, val_loss down), else maximize. Set for such a
    # task, it must agree with what the task declares.
    direction: Any = None
    # The study's name: re-running a sweep with the same name and storage continues it.
    # null (as hydra-optuna-sweeper's configs have it): Hydra's job name, as by default.
    study_name: str | None = "${hydra.job.name}"
    # null: a journal file in the sweep dir (no server, safe for many processes on one machine);
    # or an Optuna storage URL (sqlite:///..., postgresql://..., mysql://...), or a journal path.
    storage: str | None = None
    n_trials: int = 20  # the study's total, counted across re-runs and workers
    # Budgets that end a sweep before n_trials (trials already running finish): seconds since
    # this command started, and epochs spent by all of the study's trials (each epoch a job
    # reports counts, so a trial pruned after 2 epochs costs 2). null: no limit.
    timeout: float | None = None
    epoch_budget: int | None = None
    n_jobs: int = 1  # trials run at once, each in its own worker process
    # End the sweep once more than this fraction of n_trials has failed (0.0: at the first).
    max_failure_rate: float = 0.5
    params: dict[str, Any] | None = None  # key: choice(...) | range(...) | interval(...) | value
    custom_search_space: str | None = None  # "module.fn": fn(cfg, trial) suggests more params
    enqueue: list[dict[str, Any]] = field(default_factory=list)  # params to run first
    allow_space_change: bool = False  # continue a study whose search space differs
    # A trial whose worker died (killed, out of memory, machine lost) runs again from its last
    # checkpoint at most this many times; then it is FAIL and counts toward max_failure_rate.
    max_retries: int = 2
    threads_per_job: int | None = None  # torch threads per worker; null = cores // n_jobs
    # Trials a worker takes from the study at once, to train those that can share a model as
    # one fused job (hpsweep-train: MLPs alike but for width, dropout, seed and optimizer
    # floats); the others run one by one as usual. 1: off. See the README, "Fused trials".
    fuse: int = 1
    # per_trial: each trial samples all its parameters, and those of the fuse trials taken at
    # once whose group keys match train together (batch size choices split them). per_group:
    # the first samples the parameters a group must share and the others take its values, so
    # groups fill up, at the cost of sampling those parameters once per group only.
    fuse_sampling: str = "per_trial"
    # With several GPUs visible, forked worker i sees only GPU i mod N (CUDA_VISIBLE_DEVICES):
    # n_jobs > N puts several workers on each GPU, for small models. false: all see all.
    spread_gpus: bool = True
    # RDB storages: a running trial's worker writes a heartbeat every heartbeat_interval s; a
    # trial silent for grace_period s is failed by any worker and run again where it stopped.
    heartbeat_interval: int = 10
    grace_period: int = 60
    top_k: int = 5  # trials in the table logged at the end


SAMPLERS: dict[str, dict[str, Any]] = {
    # constant_liar: parallel workers see running trials as bad, so they do not all sample
    # the same promising spot.
    "tpe": {
        "_target_": "optuna.samplers.TPESampler",
        "seed": None,
        "n_startup_trials": 10,
        "multivariate": False,
        "constant_liar": True,
    },
    # hydra-optuna-sweeper's MOTPE; Optuna merged it into TPE, which handles several objectives.
    "motpe": {"_target_": "optuna.samplers.TPESampler", "seed": None, "n_startup_trials": 10},
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    # built with the grid of the search space, which must be choice/range only
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
    "cmaes": {"_target_": "optuna.samplers.CmaEsSampler", "seed": None, "n_startup_trials": 1},
    "gp": {"_target_": "optuna.samplers.GPSampler", "seed": None, "n_startup_trials": 10},
    "qmc": {"_target_": "optuna.samplers.QMCSampler", "seed": None, "qmc_type": "sobol"},
    "nsgaii": {"_target_": "optuna.samplers.NSGAIISampler", "seed": None, "population_size": 50},
}

PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"_target_": "optuna.pruners.NopPruner"},
    # stop a trial whose value at an epoch is worse than the median of earlier trials there
    "median": {
        "_target_": "optuna.pruners.MedianPruner",
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
        "interval_steps": 1,
    },
    "percentile": {
        "_target_": "optuna.pruners.PercentilePruner",
        "percentile": 25.0,
        "n_startup_trials": 5,
        "n_warmup_steps": 0,
    },
    "successive_halving": {
        "_target_": "optuna.pruners.SuccessiveHalvingPruner",
        "min_resource": "auto",
        "reduction_factor": 4,
    },
    "hyperband": {
        "_target_": "optuna.pruners.HyperbandPruner",
        "min_resource": 1,
        "max_resource": "auto",
        "reduction_factor": 3,
    },
}

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="hpsweep", node=HpsweepSweeperConf, provider="hpsweep")
for name, node in SAMPLERS.items():
    cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="hpsweep")
for name, node in PRUNERS.items():
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="hpsweep")
