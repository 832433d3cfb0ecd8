"""The sweeper's config presets compose and build the Optuna objects they name."""

import functools
import re

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from hpsweep.config import CONFIG_DIR
from hydra_plugins.hpsweep_sweeper import config as sweeper_conf
from hydra_plugins.hpsweep_sweeper.config import PRUNERS, SAMPLERS
from tests.conftest import compose_config

PRUNER_CLASSES = {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}


def sweeper_config(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.sweeper


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_preset_builds_its_pruner(name):
    sweeper = sweeper_config("hydra/sweeper=hpsweep", f"hydra/sweeper/pruner={name}")
    assert isinstance(instantiate(sweeper.pruner), PRUNER_CLASSES[name])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_preset_builds_its_sampler(name):
    sweeper = sweeper_config("hydra/sweeper=hpsweep", f"hydra/sweeper/sampler={name}")
    sampler = instantiate(sweeper.sampler)
    if isinstance(sampler, functools.partial):  # grid: built once the grid is known
        sampler = sampler(search_space={"x": [1, 2]})
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert type(sampler).__name__ == sweeper.sampler._target_.rsplit(".", 1)[1]


def test_sweep_presets_search_the_documented_keys():
    mlp = sweeper_config("sweep=mlp")
    assert set(mlp.params) == {"model.hidden_sizes", "optimizer.lr", "batch_size"}
    assert mlp.direction is None and mlp.study_name == "mlp"  # direction: the objective's
    assert mlp.pruner._target_ == "optuna.pruners.MedianPruner"
    cnn = sweeper_config("sweep=cnn")
    assert cnn.pruner._target_ == "optuna.pruners.HyperbandPruner"
    assert compose_config("sweep=cnn").model._target_ == "hpsweep.models.CNN"
    # a preset's run-level values win over train.yaml's, the command line over both
    assert compose_config("sweep=mlp").epochs == 5
    assert compose_config("sweep=mlp", "epochs=2").epochs == 2


def test_sweep_dir_is_stable_per_study():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["sweep=mlp"], return_hydra_config=True)
        assert cfg.hydra.sweep.dir == "multirun/mlp"
        basic = compose("train", return_hydra_config=True)
        assert basic.hydra.sweep.dir.startswith("multirun/20")  # Hydra's dated default


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_jobs=0", "hydra.sweeper.n_jobs=0: must be >= 1"),
        ("threads_per_job=0", "hydra.sweeper.threads_per_job=0: must be >= 1, or null"),
        ("timeout=0", "hydra.sweeper.timeout=0.0: seconds > 0, or null"),
        ("epoch_budget=0", "hydra.sweeper.epoch_budget=0: must be >= 1, or null"),
        ("grace_period=5", "hydra.sweeper.grace_period=5: must be longer than heartbeat_interval"),
        ("direction=up", "hydra.sweeper.direction='up': maximize or minimize"),
        ("timeout=inf", "hydra.sweeper.timeout=inf: seconds > 0, or null"),
        ("max_failure_rate=nan", "hydra.sweeper.max_failure_rate=nan: must be in [0, 1]"),
        ("study_name=../../x", "hydra.sweeper.study_name='../../x': must be a plain name"),
        ("study_name=/tmp/x", "hydra.sweeper.study_name='/tmp/x': must be a plain name"),
        ("study_name='..'", "hydra.sweeper.study_name='..': must be a plain name"),
    ],
)
def test_bad_sweeper_settings_are_refused_by_name_before_any_trial(override, message):
    from hydra_plugins.hpsweep_sweeper._settings import SweepError, read_settings

    sweeper = instantiate(sweeper_config("sweep=mlp", f"hydra.sweeper.{override}"))
    # as its setup checks them, before any trial; a SweepError is shown as its message alone
    with pytest.raises(SweepError, match=re.escape(message)):
        read_settings(sweeper.raw_settings)


def test_sweeper_reads_its_settings_as_the_typed_config():
    from hydra_plugins.hpsweep_sweeper._settings import read_settings

    sweeper = instantiate(sweeper_config("sweep=mlp", "hydra.sweeper.timeout=30"))
    settings = read_settings(sweeper.raw_settings)
    # the module's class now: Hydra's plugin scan runs the module again, making a new class
    assert isinstance(settings, sweeper_conf.HpsweepSweeperConf)
    assert settings.study_name == "mlp"  # interpolations resolved
    assert settings.timeout == 30.0
    assert settings.pruner == PRUNERS["median"]  # plain values, not config nodes
    assert isinstance(settings.params, dict)


@pytest.mark.parametrize("name", ["tpe", "motpe", "random", "cmaes", "gp", "nsgaii"])
def test_a_sampler_rebuilt_for_an_ask_samples_as_the_one_instantiate_builds(name):
    """make_sampler builds a flat sampler config for each ask itself (not with instantiate):
    the same sampler, the same seed mixed in, the same parameters proposed."""
    # imported here: Hydra's plugin scan (in other tests) runs the sweeper's modules again
    from hydra_plugins.hpsweep_sweeper._sweep import make_sampler, trial_seed

    config = {**SAMPLERS[name], "seed": 3}
    rebuilt = make_sampler(config, space=None, stream=5)
    instantiated = instantiate({**config, "seed": trial_seed(3, 5)})
    assert type(rebuilt) is type(instantiated)

    def proposed(sampler):
        study = optuna.create_study(sampler=sampler)
        objective = lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2 + t.suggest_int("n", 1, 9)  # noqa: E731
        study.optimize(objective, n_trials=12)
        return [t.params for t in study.trials]

    assert proposed(rebuilt) == proposed(instantiated)
