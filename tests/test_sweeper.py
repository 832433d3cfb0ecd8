"""The hpsweep sweeper through the real CLI: studies, trial dirs, pruning, resume, failures."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hpsweep.record import Status
from hpsweep.results import best_trial, load_trials
from hpsweep.train import report_to
from hydra_plugins.hpsweep_sweeper import load_sweep_study as load_study
from tests.conftest import (
    FAST,
    TRAIN_CMD,
    compose_config,
    read_metrics,
    read_result,
    run_cli,
    start_sweep,
    wait_for_epochs,
    write_preset,
)
from tests.warm_start import run_command


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_mlp_preset_runs_n_trials_and_names_the_best(tmp_path):
    proc = run_cli("-m", "sweep=mlp", "hydra.sweeper.n_trials=8", "epochs=2", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "mlp"
    study = load_study(sweep, "mlp")
    assert len(study.trials) == 8
    assert sorted(p.name for p in sweep.glob("trial_*")) == [f"trial_{i:04d}" for i in range(8)]
    for trial in study.trials:
        result = read_result(sweep / trial.user_attrs["trial_dir"])
        if trial.state == TrialState.COMPLETE:
            assert result.value == trial.value
        assert set(trial.params) == {"model.hidden_sizes", "optimizer.lr", "batch_size"}

    report = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = read_result(sweep / report["best_trial_dir"])
    assert report["best_trial"] == study.best_trial.number
    assert report["best_value"] == best.value == study.best_value
    assert f"optimizer.lr={report['best_params']['optimizer.lr']!r}" in report["best_overrides"]
    best_config = yaml.safe_load((sweep / "best_config.yaml").read_text())
    assert best_config["batch_size"] == report["best_params"]["batch_size"]
    assert "top trials" in proc.stdout


@pytest.mark.slow
def test_rerunning_the_same_command_continues_the_study(tmp_path):
    args = ("-m", "sweep=mlp", "epochs=1", *FAST)
    assert run_cli(*args, "hydra.sweeper.n_trials=2", cwd=tmp_path).returncode == 0
    sweep = tmp_path / "multirun" / "mlp"
    mtimes = {p: p.stat().st_mtime_ns for p in sweep.glob("trial_*/result.json")}
    assert run_cli(*args, "hydra.sweeper.n_trials=2", cwd=tmp_path).returncode == 0
    assert len(load_study(sweep, "mlp").trials) == 2  # n_trials is the total: nothing re-ran
    assert mtimes == {p: p.stat().st_mtime_ns for p in sweep.glob("trial_*/result.json")}
    assert run_cli(*args, "hydra.sweeper.n_trials=3", cwd=tmp_path).returncode == 0
    assert len(load_study(sweep, "mlp").trials) == 3


@pytest.mark.slow
def test_epoch_budget_and_timeout_end_the_sweep_before_n_trials(tmp_path):
    # Pruned trials count the epochs they ran; the budget is checked before each new trial.
    args = ("-m", "sweep=mlp", *FAST, "hydra.sweeper.n_trials=50")
    proc = run_cli(*args, "epochs=3", "hydra.sweeper.epoch_budget=7", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = load_study(tmp_path / "multirun" / "mlp", "mlp").trials
    spent = [len(t.intermediate_values) for t in trials]
    assert sum(spent[:-1]) < 7 <= sum(spent), spent  # the last trial crossed the budget
    assert "epoch budget of 7 spent" in proc.stderr + proc.stdout

    # The timeout counts from the command's start: trials start before it, and the sweep
    # stops starting them once it has passed (the one running then finishes).
    started = datetime.now()
    timeout = ("hydra.sweeper.study_name=t", "hydra.sweeper.timeout=3")
    proc = run_cli(*args, "epochs=2", "hydra/sweeper/pruner=none", *timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = load_study(tmp_path / "multirun" / "t", "t").trials
    assert 1 <= len(trials) < 50
    assert all(t.state == TrialState.COMPLETE for t in trials)
    first, last = trials[0], trials[-1]
    assert all(t.datetime_start < first.datetime_start + timedelta(seconds=3) for t in trials)
    assert last.datetime_complete > started + timedelta(seconds=3)  # it did not stop early
    assert "timeout of 3 s reached" in proc.stderr + proc.stdout


def test_the_last_epoch_is_reported_but_never_pruned():
    class AlwaysPrune:
        def __init__(self):
            self.reported = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return True

    trial = AlwaysPrune()
    hook = report_to(trial, "val_acc", epochs=3)
    assert hook(1, {"val_acc": 0.5}) is Status.PRUNED
    assert hook(3, {"val_acc": 0.7}) is None  # nothing left to save: the trial completes
    assert trial.reported == [(1, 0.5), (3, 0.7)]


def test_a_successive_halving_rung_on_the_last_epoch_lets_the_trial_complete(tmp_path):
    # rung at epoch 2 = the last: the worse trial would be PRUNED with all its epochs trained
    searchpath = write_preset(
        tmp_path,
        "rung",
        """\
        epochs: 2
        hydra:
          sweeper:
            study_name: rung
            n_trials: 2
            pruner: {min_resource: 2, reduction_factor: 2}
            params:
              optimizer.lr: choice(0.003, 1e-6)
            enqueue:
              - {optimizer.lr: 0.003}
              - {optimizer.lr: 1e-6}
        """,
        defaults=("/hydra/sweeper/pruner: successive_halving",),
    )
    proc = run_cli("-m", "sweep=rung", searchpath, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    study = load_study(tmp_path / "multirun" / "rung", "rung")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert study.trials[1].value < study.trials[0].value  # the one a rung check would prune
    assert [max(t.intermediate_values) for t in study.trials] == [2, 2]


def test_median_pruner_stops_bad_learning_rates_early_and_keeps_their_files(tmp_path):
    searchpath = write_preset(
        tmp_path,
        "prune",
        """\
        epochs: 4
        hydra:
          sweeper:
            study_name: prune
            n_trials: 4
            pruner: {n_startup_trials: 2}
            params:
              optimizer.lr: choice(0.003, 0.002, 1e-6, 2e-6)
            enqueue:
              - {optimizer.lr: 0.003}
              - {optimizer.lr: 0.002}
              - {optimizer.lr: 1e-6}
              - {optimizer.lr: 2e-6}
        """,
        defaults=("/hydra/sweeper/pruner: median",),
    )
    proc = run_cli("-m", "sweep=prune", searchpath, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "prune"
    study = load_study(sweep, "prune")
    assert states(study)[:2] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials[:2]:
        assert 0.5 < read_result(sweep / trial.user_attrs["trial_dir"]).test_acc <= 1
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["optimizer.lr"] < 1e-5 for t in pruned)
    for trial in pruned:
        trial_dir = sweep / trial.user_attrs["trial_dir"]
        result = read_result(trial_dir)
        assert result.status is Status.PRUNED and result.test_acc is None  # not scored
        assert result.epochs_run < 4
        assert len(read_metrics(trial_dir)) == result.epochs_run
        assert (trial_dir / "checkpoints" / "last.pt").is_file()
        assert (trial_dir / "curves.png").is_file()


def test_failed_trials_keep_their_reason_and_the_sweep_goes_on(tmp_path):
    searchpath = write_preset(
        tmp_path,
        "failing",
        """\
        epochs: 2
        hydra:
          sweeper:
            study_name: failing
            n_trials: 3
            max_failure_rate: 1.0
            params:
              optimizer.lr: choice(0.01, 1e4)
              model.hidden_sizes: choice(32, 0)
            enqueue:
              - {optimizer.lr: 1e4, model.hidden_sizes: 32}
              - {optimizer.lr: 0.01, model.hidden_sizes: 0}
              - {optimizer.lr: 0.01, model.hidden_sizes: 32}
        """,
        defaults=("/optimizer: sgd",),
    )
    proc = run_cli("-m", "sweep=failing", searchpath, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "failing"
    study = load_study(sweep, "failing")
    assert len(study.trials) == 3
    diverged, rejected = study.trials[:2]
    assert diverged.state == rejected.state == TrialState.FAIL
    assert "TrainingDiverged" in diverged.user_attrs["fail_reason"]
    assert "model.hidden_sizes=0" in rejected.user_attrs["fail_reason"]
    result = read_result(sweep / "trial_0000")
    assert result.status is Status.FAIL and "TrainingDiverged" in result.reason
    assert study.trials[2].state == TrialState.COMPLETE


def test_max_failure_rate_ends_the_sweep_with_a_clear_message(tmp_path):
    proc = run_cli(
        "-m",
        "sweep=mlp",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0",
        "model.hidden_sizes=0",
        "epochs=1",
        *FAST,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "1 of 4 trials failed" in proc.stderr, proc.stderr
    assert "max_failure_rate=0" in proc.stderr, proc.stderr
    assert len(load_study(tmp_path / "multirun" / "mlp", "mlp").trials) == 1


@pytest.mark.slow
def test_changed_search_space_is_refused_unless_allowed(tmp_path):
    args = ("-m", "sweep=mlp", "hydra.sweeper.n_trials=1", "epochs=1", *FAST)
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    proc = run_cli(*args, "model.activation=relu,tanh", cwd=tmp_path)
    assert proc.returncode != 0
    assert "another search space" in proc.stderr and "model.activation" in proc.stderr
    assert "allow_space_change=true" in proc.stderr and "Traceback" not in proc.stderr
    allowed = run_cli(
        *args,
        "model.activation=relu,tanh",
        "hydra.sweeper.allow_space_change=true",
        "hydra.sweeper.n_trials=2",
        cwd=tmp_path,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert len(load_study(tmp_path / "multirun" / "mlp", "mlp").trials) == 2


def test_enqueued_params_run_first(tmp_path):
    searchpath = write_preset(
        tmp_path,
        "warm",
        """\
        epochs: 1
        hydra:
          sweeper:
            study_name: warm
            n_trials: 3
            params:
              optimizer.lr: tag(log, interval(1e-4, 1e-1))
              batch_size: choice(32, 64, 128)
            enqueue:
              - {optimizer.lr: 0.001, batch_size: 64}
              - {optimizer.lr: 0.01, batch_size: 128}
        """,
    )
    assert run_cli("-m", "sweep=warm", searchpath, *FAST, cwd=tmp_path).returncode == 0
    study = load_study(tmp_path / "multirun" / "warm", "warm")
    assert [t.params for t in study.trials[:2]] == [
        {"optimizer.lr": 0.001, "batch_size": 64},
        {"optimizer.lr": 0.01, "batch_size": 128},
    ]
    config = yaml.safe_load((tmp_path / "multirun/warm/trial_0001/.hydra/config.yaml").read_text())
    assert config["optimizer"]["lr"] == 0.01 and config["batch_size"] == 128
    # trial 0's config was composed, the others' derived from it: each is what Hydra composes
    for number in (1, 2):
        record = tmp_path / f"multirun/warm/trial_{number:04d}/.hydra"
        overrides = yaml.safe_load((record / "overrides.yaml").read_text())
        composed = compose_config(*overrides, searchpath, return_hydra_config=True)
        assert (record / "config.yaml").read_text() == OmegaConf.to_yaml(
            {k: v for k, v in composed.items() if k != "hydra"}
        )
        hydra = yaml.safe_load((record / "hydra.yaml").read_text())["hydra"]
        assert hydra["overrides"]["task"] == overrides == list(composed.hydra.overrides.task)
        assert hydra["runtime"]["choices"] == dict(composed.hydra.runtime.choices)
        assert hydra["job"]["override_dirname"] == composed.hydra.job.override_dirname
        assert f"optimizer.lr={study.trials[number].params['optimizer.lr']!r}" in overrides


@pytest.mark.slow
def test_two_jobs_run_asynchronously_without_batch_barrier(tmp_path):
    searchpath = write_preset(
        tmp_path,
        "async",
        """\
        batch_size: 16
        hydra:
          sweeper:
            study_name: async
            n_trials: 6
            n_jobs: 2
            params:
              epochs: choice(1, 30)
            enqueue: [{epochs: 30}, {epochs: 1}, {epochs: 1}, {epochs: 1}, {epochs: 1}, {epochs: 1}]
        """,
    )
    proc = run_cli("-m", "sweep=async", searchpath, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = load_study(tmp_path / "multirun" / "async", "async").trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    slow = next(t for t in trials if t.params["epochs"] == 30)
    fast = [t for t in trials if t is not slow]
    # trials overlap in time, and the other slot finished several trials while the slow one ran
    assert any(t.datetime_start < slow.datetime_complete for t in fast)
    during = [t for t in fast if slow.datetime_start < t.datetime_complete < slow.datetime_complete]
    assert len(during) >= 2
    # 2 workers on this machine's cores: each trial got cores // 2 torch threads
    sweep = tmp_path / "multirun" / "async"
    threads = {read_result(sweep / t.user_attrs["trial_dir"]).num_threads for t in trials}
    assert threads == {max(1, len(os.sched_getaffinity(0)) // 2)}


@pytest.mark.slow
def test_sigterm_to_the_sweep_alone_stops_every_worker_in_words_and_resumes(tmp_path):
    # `kill PID` (or a scheduler) signals the sweep process only: it passes the stop on
    args = [
        *TRAIN_CMD,
        "-m",
        "sweep=mlp",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "epochs=30",  # 2 s or so a trial: one worker may start its trial 0.3 s after the other
        "batch_size=32",
        "hydra/sweeper/pruner=none",
        *FAST,
    ]
    sweep = tmp_path / "multirun" / "mlp"
    stopped = start_sweep(args, tmp_path)
    for trial_dir in ("trial_0000", "trial_0001"):
        wait_for_epochs(stopped, sweep / trial_dir, 1)
    stopped.send_signal(signal.SIGTERM)
    output, _ = stopped.communicate(timeout=60)

    assert stopped.returncode == 128 + signal.SIGTERM, output  # 143, as a shell says
    assert "Traceback" not in output
    assert "sweep stopped by SIGTERM; run the same command again" in output
    left = [t for t in load_study(sweep, "mlp").trials if t.state == TrialState.RUNNING]
    for trial in left:  # each worker said what it left, and where
        assert f"stopped by SIGTERM: trial {trial.number} stays resumable in" in output
    assert len(left) == 2, output
    epochs_before = {t.number: len(read_metrics(sweep / t.user_attrs["trial_dir"])) for t in left}

    proc = run_command(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    study = load_study(sweep, "mlp")
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") is not None]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [0, 1]
    assert all(t.state == TrialState.COMPLETE for t in retries)
    for number, before in epochs_before.items():  # resumed, not started over
        metrics = read_metrics(sweep / f"trial_{number:04d}")
        assert before >= 1 and [r["epoch"] for r in metrics] == list(range(1, 31))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_stopped_sweep_resumes_the_interrupted_trial_from_its_checkpoint(tmp_path, sig):
    args = [
        *TRAIN_CMD,
        "-m",
        "sweep=mlp",
        "hydra.sweeper.n_trials=3",
        "epochs=8",
        "batch_size=32",
        "hydra/sweeper/pruner=none",
    ]
    sweep = tmp_path / "multirun" / "mlp"
    stopped = start_sweep(args, tmp_path)
    wait_for_epochs(stopped, sweep / "trial_0001", 3)  # stop once trial 1 is well under way
    os.killpg(stopped.pid, sig)  # the whole process group, as a terminal does
    output, _ = stopped.communicate(timeout=60)
    # The signal lands mid-trial: trial 1, or (on a loaded machine) a later one.
    left = [t for t in load_study(sweep, "mlp").trials if t.state == TrialState.RUNNING]
    assert len(left) == 1, output
    interrupted = left[0]
    trial_dir = sweep / interrupted.user_attrs["trial_dir"]
    epochs_before = len(read_metrics(trial_dir))
    assert epochs_before < 8, output
    if sig == signal.SIGINT:
        assert stopped.returncode == 130
        assert f"interrupted: trial {interrupted.number} stays resumable" in output
        assert "Traceback" not in output

    proc = run_command(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    study = load_study(sweep, "mlp")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3
    dirs = {t.user_attrs["trial_dir"] for t in finished}  # one dir per finished trial
    assert len(dirs) == 3 and dirs == {p.name for p in sweep.glob("trial_*")}
    assert study.trials[interrupted.number].state == TrialState.FAIL
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == interrupted.number)
    assert retry.state == TrialState.COMPLETE
    assert retry.params == interrupted.params
    assert retry.user_attrs["trial_dir"] == interrupted.user_attrs["trial_dir"]
    # the epochs continue after the checkpoint instead of starting over
    assert [r["epoch"] for r in read_metrics(trial_dir)] == list(range(1, 9))
    assert "resuming" in (trial_dir / "train.log").read_text()


# hydra-optuna-sweeper's example config (plugins/hydra_optuna_sweeper/example/conf/config.yaml),
# with the one change a user makes to migrate: the sweeper's name.
OLD_PLUGIN_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep   # was: optuna
  - override hydra/sweeper/sampler: grid

hydra:
  sweeper:
#    sampler:
#      seed: 123
    direction: minimize
    study_name: sphere
    storage: null
    n_trials: 20
    n_jobs: 1
    params:
      x: range(-5.5, 5.5, step=0.5)
      y: choice(-5 ,0 ,5)

x: 1
y: 1
z: 1
"""

SLOW_SAMPLERS = ("random", "cmaes", "gp", "qmc", "nsgaii")  # 5-10 s each: CI runs them
SPHERE_APP = """\
import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def sphere(cfg):
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
"""


@pytest.mark.parametrize(
    "sampler",
    ["grid", "tpe", *(pytest.param(s, marks=pytest.mark.slow) for s in SLOW_SAMPLERS)],
)
@pytest.mark.slow
def test_old_plugin_config_runs_after_renaming_the_sweeper(tmp_path, sampler):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(OLD_PLUGIN_CONFIG)
    (tmp_path / "sphere.py").write_text(SPHERE_APP)
    proc = subprocess.run(
        [
            sys.executable,
            "sphere.py",
            "-m",
            "hydra.sweep.dir=sweep",
            f"hydra/sweeper/sampler={sampler}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    study = load_study(tmp_path / "sweep", "sphere")
    assert len(study.trials) == 20
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    xs = [t.params["x"] for t in study.trials]
    # range's end point is excluded for every sampler: -5.5, -5.0, ..., 5.0 (GP's stepped
    # floats land on the grid up to rounding: 0.5000000000000009)
    assert all(-5.5 <= x <= 5.0 + 1e-9 and abs(2 * x - round(2 * x)) < 1e-9 for x in xs)
    assert all(t.value == t.params["x"] ** 2 + t.params["y"] ** 2 for t in study.trials)
    if sampler == "grid":
        assert len({(t.params["x"], t.params["y"]) for t in study.trials}) == 20  # no repeats
    report = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert report["best_value"] == min(t.value for t in study.trials)


MULTI_OBJECTIVE_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - override hydra/sweeper/sampler: random

hydra:
  sweeper:
    direction: [minimize, minimize]
    study_name: pareto
    n_trials: 8
    custom_search_space: extend.add_z
    params:
      x: interval(-1, 1)

x: 0
z: 0
"""

PARETO_APP = """\
import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def two_objectives(cfg):
    return [cfg.x**2, (cfg.x - 1) ** 2 + cfg.z]


if __name__ == "__main__":
    two_objectives()
"""

EXTEND = """\
def add_z(cfg, trial):
    trial.suggest_float("z", 0.0, 0.1)
"""


@pytest.mark.slow
def test_two_objectives_write_the_pareto_front_and_custom_space_adds_params(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(MULTI_OBJECTIVE_CONFIG)
    (tmp_path / "pareto.py").write_text(PARETO_APP)
    (tmp_path / "extend.py").write_text(EXTEND)
    proc = subprocess.run(
        [sys.executable, "pareto.py", "-m", "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.environ.get('PYTHONPATH', '')}"},
    )
    assert proc.returncode == 0, proc.stderr
    study = load_study(tmp_path / "sweep", "pareto")
    assert len(study.trials) == 8
    for t in study.trials:
        assert 0.0 <= t.params["z"] <= 0.1  # suggested by the custom function...
        assert t.values[1] == pytest.approx((t.params["x"] - 1) ** 2 + t.params["z"])  # ...used
    report = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    front = {entry["trial"] for entry in report["pareto_front"]}
    assert front == {t.number for t in study.best_trials} and front


def test_storage_password_never_shows_in_output_or_files(tmp_path):
    proc = run_cli(
        "-m",
        "sweep=mlp",
        "hydra.sweeper.storage=mysql+nodriver://optuna:s3cret@127.0.0.1:1/db",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "optuna:***@127.0.0.1" in proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    # a storage that cannot work is refused before anything is written
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_val_loss_objective_is_minimized_and_every_reader_names_the_same_best(tmp_path):
    proc = run_cli(
        "-m", "sweep=mlp", "objective=val_loss", "hydra.sweeper.n_trials=6", "epochs=1", *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "mlp"
    study = load_study(sweep, "mlp")
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    losses = {t.number: t.value for t in study.trials if t.state == TrialState.COMPLETE}
    best = min(losses, key=losses.get)
    report = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    table = load_trials(sweep)
    assert report["best_trial"] == study.best_trial.number == best
    assert table.iloc[0]["number"] == best and table.iloc[0]["value"] == losses[best]
    assert best_trial(sweep)["number"] == best


def test_a_direction_against_the_objective_is_refused_before_any_trial(tmp_path):
    args = ("-m", "sweep=mlp", "objective=val_loss", "hydra.sweeper.direction=maximize", *FAST)
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "hydra.sweeper.direction=maximize: objective=val_loss is minimized" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("multirun/*/trial_*"))


def params_of(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


def test_a_seeded_sweep_never_replays_when_resumed_and_is_reproducible(tmp_path):
    def sweep(folder, n):
        args = ("-m", "sweep=mlp", "hydra.sweeper.sampler.seed=1", "epochs=1", *FAST)
        proc = run_cli(*args, f"hydra.sweeper.n_trials={n}", cwd=folder)
        assert proc.returncode == 0, proc.stderr
        return load_study(folder / "multirun" / "mlp", "mlp")

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sweep(tmp_path / "a", 3)
    resumed = params_of(sweep(tmp_path / "a", 6))
    assert len(set(resumed)) == 6  # before: trials 3-5 replayed trials 0-2
    assert params_of(sweep(tmp_path / "b", 6)) == resumed  # same seed, same sweep


@pytest.mark.slow
def test_two_processes_with_one_seed_sample_no_parameter_set_twice(tmp_path):
    args = [*TRAIN_CMD, "-m", "sweep=mlp", "hydra.sweeper.sampler.seed=7", "epochs=1", *FAST]
    args += ["hydra.sweeper.n_trials=8", "num_threads=1"]
    workers = [
        subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]  # reading: no full pipe stalls
    assert [w.returncode for w in workers] == [0, 0], outputs
    params = params_of(load_study(tmp_path / "multirun" / "mlp", "mlp"))
    assert len(params) == 8 and len(set(params)) == 8


KILLER_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - override hydra/sweeper/sampler: random

hydra:
  sweeper:
    direction: minimize
    study_name: killer
    n_trials: 2
    enqueue: [{x: 0.5}]
    params:
      x: interval(0, 1)

x: 0
"""

KILLER_APP = """\
import os, signal
import hydra


@hydra.main(version_base=None, config_path="conf", config_name="config")
def task(cfg):
    if cfg.x == 0.5:  # this trial's job kills its worker every time, as an out-of-memory would
        os.kill(os.getpid(), signal.SIGKILL)
    return cfg.x


if __name__ == "__main__":
    task()
"""


def test_a_trial_that_always_kills_its_worker_fails_after_max_retries(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(KILLER_CONFIG)
    (tmp_path / "killer.py").write_text(KILLER_APP)
    codes = []
    for _ in range(4):  # the user restarts the killed sweep, as the README says
        proc = subprocess.run(
            [sys.executable, "killer.py", "-m", "hydra.sweep.dir=sweep"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        codes.append(proc.returncode)
    # the first run and two retries die with their trial; the fourth fails it and goes on
    assert codes == [-signal.SIGKILL] * 3 + [0], proc.stderr
    study = load_study(tmp_path / "sweep", "killer")
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    last_try = study.trials[2]
    assert last_try.system_attrs["retry_history"] == [0, 1]  # the trials it continued
    assert "not again (hydra.sweeper.max_retries=2)" in last_try.user_attrs["fail_reason"]
    assert {t.user_attrs["trial_dir"] for t in study.trials[:3]} == {"trial_0000"}


def test_a_grid_sweep_that_covers_its_grid_ends_cleanly(tmp_path):
    proc = run_cli(
        "-m", "sweep=mlp", "hydra/sweeper/sampler=grid", "optimizer.lr=0.01",
        "model.hidden_sizes=choice(16,32)", "batch_size=choice(64,128)",
        "hydra.sweeper.n_trials=10", "epochs=1", *FAST,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # the last tell made GridSampler call Study.stop
    study = load_study(tmp_path / "multirun" / "mlp", "mlp")
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4


def test_sigterm_and_sigusr1_are_raised_as_ctrl_c_is_and_only_once():
    from hydra_plugins.hpsweep_sweeper import Stopped, exit_code, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        with pytest.raises(Stopped) as stopped, stop_on_signals():
            try:
                os.kill(os.getpid(), sig)
                time.sleep(5)  # not reached: the handler raises at the next bytecode
            finally:
                os.kill(os.getpid(), sig)  # a second one while stopping: ignored
        assert isinstance(stopped.value, KeyboardInterrupt)  # every Ctrl-C path handles it
        assert exit_code(stopped.value) == 128 + sig and stopped.value.name == sig.name
    assert signal.getsignal(signal.SIGTERM) is before  # put back after the block
    assert exit_code(KeyboardInterrupt()) == 130


def test_a_stop_whose_raise_was_lost_is_raised_where_a_worker_checks():
    # a signal landing in a weakref callback or finalizer: Python prints its exception and
    # drops it, and the second signal is ignored; the worker checks before its next claim
    from hydra_plugins.hpsweep_sweeper import Stopped
    from hydra_plugins.hpsweep_sweeper._signals import check_stopped, stop_on_signals

    with stop_on_signals():
        check_stopped()  # no signal: nothing
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached
        except Stopped:
            pass  # lost, as in a callback
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: a stop is under way
        with pytest.raises(Stopped) as stopped:
            check_stopped()
        assert stopped.value.name == "SIGTERM"
    check_stopped()  # outside the block: forgotten
