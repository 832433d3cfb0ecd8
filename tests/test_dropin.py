"""Configs written for hydra-optuna-sweeper run with hpsweep's sweeper, and so do the settings
other projects run their tests with (`python -W error`)."""

import contextlib
import subprocess
import sys
import uuid

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpsweep.results import load_trials
from hydra_plugins.hpsweep_sweeper import load_sweep_study
from tests.conftest import FAST, TRAIN_CMD, run_cli, write_preset

# lightning-hydra-template's configs/hparams_search/mnist_optuna.yaml, with the changes a user
# makes: the sweeper's name, and the parameter names of this project (lin1_size, lin2_size and
# lin3_size are the widths of its 3 hidden layers; `optimized_metric` is that template's own
# key, whose counterpart here is `objective`). Its `_target_`, `study_name: null` and
# `storage: null` stay as they were.
TEMPLATE = """\
# @package _global_

# example hyperparameter optimization of some experiment with Optuna:
# python train.py -m hparams_search=mnist_optuna experiment=example

defaults:
  - override /hydra/sweeper: hpsweep

# choose metric which will be optimized by Optuna
# make sure this is the correct name of some metric logged in lightning module!
objective: val_acc

# here we define Optuna hyperparameter search
# it optimizes for value returned from function with @hydra.main decorator
# docs: https://hydra.cc/docs/next/plugins/optuna_sweeper
hydra:
  mode: "MULTIRUN" # set hydra to multirun by default if this config is attached

  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper

    # storage URL to persist optimization results
    # for example, you can use SQLite if you set 'sqlite:///example.db'
    storage: null

    # name of the study to persist optimization results
    study_name: null

    # number of parallel workers
    n_jobs: 1

    # 'minimize' or 'maximize' the objective
    direction: maximize

    # total number of runs that will be executed
    n_trials: 20

    # choose Optuna hyperparameter sampler
    # you can choose bayesian sampler (tpe), random search (without optimization), grid sampler, and others
    # docs: https://optuna.readthedocs.io/en/stable/reference/samplers.html
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10 # number of random sampling runs before optimization starts

    # define hyperparameter search space
    params:
      optimizer.lr: interval(0.0001, 0.1)
      batch_size: choice(32, 64, 128, 256)
      model.hidden_sizes.0: choice(64, 128, 256)
      model.hidden_sizes.1: choice(64, 128, 256)
      model.hidden_sizes.2: choice(32, 64, 128, 256)
"""  # noqa: E501  (the template's own comment lines)
LAYERS = [f"model.hidden_sizes.{i}" for i in range(3)]


@pytest.mark.slow
def test_lightning_templates_optuna_config_runs_and_the_same_command_continues(tmp_path):
    folder = tmp_path / "conf" / "hparams_search"
    folder.mkdir(parents=True)
    (folder / "mnist_optuna.yaml").write_text(TEMPLATE)
    args = [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+hparams_search=mnist_optuna"]
    args += ["epochs=1", *FAST]  # no -m: the file sets hydra.mode
    proc = run_cli(*args, "hydra.sweeper.n_trials=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # study_name null: Hydra's job name, and the sweep dir that name gives
    assert [p.name for p in (tmp_path / "multirun").iterdir()] == ["train"]
    sweep = tmp_path / "multirun" / "train"
    assert (sweep / "optuna.journal").is_file()  # storage null: the journal in the sweep dir
    study = load_sweep_study(sweep, "train")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    for trial in study.trials:
        assert set(trial.params) == {"optimizer.lr", "batch_size", *LAYERS}
        config = yaml.safe_load(
            (sweep / f"trial_{trial.number:04d}/.hydra/config.yaml").read_text()
        )
        assert config["model"]["hidden_sizes"] == [trial.params[k] for k in LAYERS]
        assert config["optimizer"]["lr"] == trial.params["optimizer.lr"]
        assert config["batch_size"] == trial.params["batch_size"]
    assert "[trial 0] epoch 1/1 |" in proc.stdout  # one job: its lines name it too
    first = [t.params for t in study.trials]

    again = run_cli(*args, "hydra.sweeper.n_trials=4", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    continued = load_sweep_study(sweep, "train")
    assert [t.params for t in continued.trials[:3]] == first
    assert len(continued.trials) == 4 and (sweep / "trial_0003").is_dir()


@pytest.mark.slow
def test_a_list_of_expressions_searches_each_layer_and_rebuilds(tmp_path):
    searchpath = write_preset(
        tmp_path,
        "layers",
        """\
        epochs: 1
        hydra:
          sweeper:
            study_name: layers
            n_trials: 2
            params:
              model.hidden_sizes: [choice(64, 128, 256), choice(64, 128), choice(32, 64)]
              optimizer.lr: tag(log, interval(1e-3, 1e-2))
        """,
    )
    proc = run_cli("-m", "sweep=layers", searchpath, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "layers"
    trials = load_sweep_study(sweep, "layers").trials
    assert len(trials) == 2
    for trial in trials:
        sizes = [trial.params[k] for k in LAYERS]
        trial_dir = sweep / trial.user_attrs["trial_dir"]
        config = yaml.safe_load((trial_dir / ".hydra" / "config.yaml").read_text())
        assert config["model"]["hidden_sizes"] == sizes
        overrides = yaml.safe_load((trial_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"model.hidden_sizes=[{','.join(map(str, sizes))}]" in overrides
    # the table has a column per layer, as the study has a parameter per layer
    table = load_trials(sweep).set_index("number")
    assert [c for c in table if c.startswith("params_")] == [
        *(f"params_{k}" for k in LAYERS),
        "params_optimizer.lr",
    ]
    for trial in trials:
        assert [table.loc[trial.number, f"params_{k}"] for k in LAYERS] == [
            trial.params[k] for k in LAYERS
        ]

    rebuilt = subprocess.run(
        [sys.executable, "-m", "hpsweep.cli", "rebuild", str(sweep)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = load_sweep_study(sweep, "layers")
    assert [t.params for t in again.trials] == [t.params for t in trials]
    # the rebuilt study keeps the space's signature: a changed layer is refused
    changed = run_cli(
        "-m",
        "sweep=layers",
        searchpath,
        *FAST,
        "model.hidden_sizes.2=choice(32,64,128)",
        cwd=tmp_path,
    )
    assert changed.returncode == 1
    assert "another search space (changed: model.hidden_sizes.2)" in changed.stderr


# hydra-optuna-sweeper's multi-objective example (example/multi-objective-conf/config.yaml and
# multi-objective.py), with the sweeper's name changed
MULTI_OBJECTIVE_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - override hydra/sweeper/sampler: nsgaii

hydra:
  sweeper:
    sampler:
      seed: 123
    direction: [minimize, minimize]
    study_name: multi-objective
    storage: null
    n_trials: 20
    n_jobs: 1
    params:
      x: range(0, 5, step=0.5)
      y: range(0, 3, step=0.5)

x: 1
y: 1
"""
BINH_AND_KORN = """\
import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def binh_and_korn(cfg):
    x, y = cfg.x, cfg.y
    return 4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2


if __name__ == "__main__":
    binh_and_korn()
"""


@pytest.mark.slow
def test_a_multi_objective_sweep_writes_the_old_plugins_solutions_too(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(MULTI_OBJECTIVE_CONFIG)
    (tmp_path / "multi_objective.py").write_text(BINH_AND_KORN)
    proc = subprocess.run(
        [sys.executable, "multi_objective.py", "-m", "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    study = load_sweep_study(tmp_path / "sweep", "multi-objective")
    report = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    expected = [{"params": t.params, "values": t.values} for t in study.best_trials]
    assert report["solutions"] == expected and len(expected) >= 2
    assert [{"params": e["params"], "values": e["values"]} for e in report["pareto_front"]] == (
        expected
    )
    for solution in report["solutions"]:
        x, y = solution["params"]["x"], solution["params"]["y"]
        assert solution["values"] == [4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2]


SMALL = ("hydra.sweeper.n_trials=2", "epochs=1", *FAST)


def werror_sweep(tmp_path, *overrides):
    """hpsweep-train under `python -W error`: any warning raised is an error."""
    return subprocess.run(
        [sys.executable, "-W", "error", *TRAIN_CMD[1:], "-m", "sweep=mlp", *SMALL, *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_a_sqlite_sweep_runs_under_python_W_error(tmp_path):
    # heartbeats and fail_stale_trials (RDB storages) and the QMC sampler are experimental in
    # Optuna. (The journal storage under -W error: test_sweep_output's parallel sweep.)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = werror_sweep(tmp_path, f"hydra.sweeper.storage={url}", "hydra/sweeper/sampler=qmc")
    assert proc.returncode == 0, proc.stderr
    study = load_sweep_study(tmp_path / "multirun" / "mlp", "mlp", url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_a_postgres_sweep_runs_under_python_W_error(tmp_path, postgres_url):
    name = f"werror_{uuid.uuid4().hex[:8]}"
    try:
        proc = werror_sweep(
            tmp_path, f"hydra.sweeper.storage={postgres_url}", f"hydra.sweeper.study_name={name}"
        )
        assert proc.returncode == 0, proc.stderr
        study = optuna.load_study(study_name=name, storage=postgres_url)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    finally:
        with contextlib.suppress(KeyError):  # not created: the assertion above says why
            optuna.delete_study(study_name=name, storage=postgres_url)
