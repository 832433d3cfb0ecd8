"""Many workers on one study: PostgreSQL (real server) and the embedded journal storage."""

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from hydra_plugins.hpsweep_sweeper import _storage, _study, open_sweep_storage
from hydra_plugins.hpsweep_sweeper import load_sweep_study as load_study
from hydra_plugins.hpsweep_sweeper._names import WAIT_SCALE
from tests.conftest import (
    FAST,
    TRAIN_CMD,
    read_metrics,
    read_result,
    run_cli,
    start_sweep,
    wait_for_epochs,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def start_workers(n, cwd, *overrides):
    args = [
        *TRAIN_CMD,
        "-m",
        "sweep=mlp",
        "num_threads=1",
        "hydra/sweeper/pruner=none",
        *FAST,
        *overrides,
    ]
    return [
        subprocess.Popen(
            args,
            cwd=cwd,
            start_new_session=True,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(n)
    ]


def open_study(storage, tmp_path, name):
    if storage == "journal":
        return load_study(tmp_path / "multirun" / name, name)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(params=["postgres", "journal"])
def storage(request, tmp_path):
    """(storage setting for the sweeper, study name); the PostgreSQL study is deleted after."""
    name = f"scale_{uuid.uuid4().hex[:8]}"
    if request.param == "journal":
        yield "journal", name
        return
    url = request.getfixturevalue("postgres_url")
    yield url, name
    optuna.delete_study(study_name=name, storage=url)


def sweep_overrides(storage, name, n_trials):
    setting, _ = storage
    overrides = [f"hydra.sweeper.study_name={name}", f"hydra.sweeper.n_trials={n_trials}"]
    if setting != "journal":
        overrides.append(f"hydra.sweeper.storage={setting}")
    return overrides


@pytest.mark.slow
def test_three_workers_share_one_study_and_run_exactly_n_trials(tmp_path, storage):
    setting, name = storage
    workers = start_workers(3, tmp_path, "epochs=2", *sweep_overrides(storage, name, 12))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    study = open_study(setting, tmp_path, name)
    assert len(study.trials) == 12
    assert all(t.state in FINISHED for t in study.trials)
    sweep = tmp_path / "multirun" / name
    dirs = {t.user_attrs["trial_dir"] for t in study.trials}
    assert len(dirs) == 12 and dirs == {p.name for p in sweep.glob("trial_*")}
    for trial in study.trials:
        result = read_result(sweep / trial.user_attrs["trial_dir"])
        assert result.value == trial.value
    assert len({t.user_attrs["worker"] for t in study.trials}) == 3  # all three took part


@pytest.mark.slow
def test_killed_worker_trial_is_retried_from_its_checkpoint_by_the_others(tmp_path, storage):
    setting, name = storage
    workers = start_workers(
        3, tmp_path, "epochs=6", "batch_size=16", *sweep_overrides(storage, name, 6)
    )
    victim = workers[0]
    sweep = tmp_path / "multirun" / name
    deadline = time.monotonic() + 300
    target = None
    while target is None:
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.1)
        try:
            running = open_study(setting, tmp_path, name).get_trials(states=(TrialState.RUNNING,))
        except (KeyError, ValueError, FileNotFoundError):  # the study is not there yet
            continue
        for trial in running:
            metrics = sweep / trial.user_attrs.get("trial_dir", "-") / "metrics.csv"
            mine = trial.user_attrs.get("worker", "").endswith(f":{victim.pid}")
            if mine and metrics.exists() and len(read_metrics(metrics.parent)) >= 2:
                target = trial
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    outputs = [w.communicate(timeout=600)[0] for w in workers[1:]]
    assert [w.returncode for w in workers[1:]] == [0, 0], outputs

    study = open_study(setting, tmp_path, name)
    finished = [t for t in study.trials if t.state in FINISHED]
    assert len(finished) == 6
    assert study.trials[target.number].state == TrialState.FAIL
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == target.number)
    assert retry.state == TrialState.COMPLETE and retry.params == target.params
    trial_dir = sweep / target.user_attrs["trial_dir"]
    assert retry.user_attrs["trial_dir"] == target.user_attrs["trial_dir"]
    assert [r["epoch"] for r in read_metrics(trial_dir)] == list(range(1, 7))
    assert "resuming" in (trial_dir / "train.log").read_text()


@pytest.mark.slow
def test_password_never_appears_in_logs_or_files(tmp_path, postgres_url):
    name = f"secret_{uuid.uuid4().hex[:8]}"
    # trust auth on the test server accepts any password: the sweep runs for real
    url = postgres_url.replace("postgres@", "postgres:s3cretpw@", 1)
    assert "s3cretpw" in url
    proc = run_cli(
        "-m",
        "sweep=mlp",
        "epochs=1",
        *FAST,
        f"hydra.sweeper.storage={url}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=2",
        cwd=tmp_path,
    )
    try:
        assert proc.returncode == 0, proc.stderr
        assert "s3cretpw" not in proc.stdout + proc.stderr
        files = [p for p in (tmp_path / "multirun").rglob("*") if p.is_file()]
        assert len(files) > 10
        assert not [p for p in files if b"s3cretpw" in p.read_bytes()]
        assert "postgres:***@" in (tmp_path / "multirun" / name / "multirun.yaml").read_text()
    finally:
        optuna.delete_study(study_name=name, storage=postgres_url)


@pytest.mark.slow
def test_stale_heartbeat_fails_the_trial_and_queues_a_retry_in_its_dir(tmp_path):
    storage = _storage.open_storage(f"sqlite:///{tmp_path}/hb.db", tmp_path, 1, 2)
    assert isinstance(storage, RDBStorage)
    study = optuna.create_study(study_name="hb", storage=storage)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("trial_dir", "trial_0000")
    storage.record_heartbeat(trial._trial_id)
    time.sleep(4)  # well past grace_period (heartbeats are stored to the second): presumed dead
    optuna.storages.fail_stale_trials(study)
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["trial_dir"] == "trial_0000"
    assert retry.params == failed.params and retry.system_attrs["retry_history"] == [0]


def test_storage_errors_are_retried_with_backoff_then_reported(monkeypatch):
    sleeps = []
    monkeypatch.setattr(_storage.time, "sleep", sleeps.append)
    calls = iter([OSError("connection reset"), OSError("connection refused"), "told"])

    def flaky():
        outcome = next(calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert _storage.with_retries(flaky, "recording trial 3", "db") == "told"
    assert sleeps == [1, 2]

    def down():
        raise OSError("could not connect to postgresql://u:pw@db/x")

    with pytest.raises(_storage.StorageUnavailable, match="did not answer while recording") as info:
        _storage.with_retries(down, "recording trial 3", "postgresql://u:***@db/x")
    assert "pw@" not in str(info.value)


@pytest.mark.slow
def test_submitit_local_launcher_runs_the_sweep_and_results_load(tmp_path):
    proc = run_cli(
        "-m",
        "sweep=mlp",
        "epochs=1",
        *FAST,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=4",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "mlp"
    assert list(sweep.glob(".submitit/*")), "the jobs did not go through submitit"
    compare = subprocess.run(
        [sys.executable, "-m", "hpsweep.cli", "compare", str(sweep), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compare.returncode == 0, compare.stderr
    table = pd.read_csv(io.StringIO(compare.stdout))
    assert sorted(table["number"]) == [0, 1, 2, 3]
    assert set(table["state"]) == {"COMPLETE"}
    study = load_study(sweep, "mlp")
    assert sorted(table["value"]) == sorted(t.value for t in study.trials)


def submitit_task(sweep: Path) -> int:
    """The pid of the process submitit's local executor runs a job of `sweep` in."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if b"submitit.core._submit" in cmdline and str(sweep).encode() in cmdline:
                return int(proc.name)
    raise AssertionError(f"no submitit job of {sweep} is running")


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_its_trial(tmp_path):
    args = [
        *TRAIN_CMD,
        "-m",
        "sweep=mlp",
        "epochs=6",
        "batch_size=32",
        *FAST,
        "hydra/launcher=submitit_local",
        "hydra.sweeper.n_trials=1",
    ]
    sweep = tmp_path / "multirun" / "mlp"
    proc = start_sweep(args, tmp_path)
    wait_for_epochs(proc, sweep / "trial_0000", 2)
    # SLURM's warning before it preempts a job, as submitit asks for it (its `_interrupt`)
    os.kill(submitit_task(sweep), signal.SIGUSR2)
    output, _ = proc.communicate(timeout=300)

    assert proc.returncode == 0, output
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    study = load_study(sweep, "mlp")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]  # one trial, no retry
    train_log = (sweep / "trial_0000" / "train.log").read_text()
    resumed = re.search(r"resuming \S+ after epoch (\d+)", train_log)
    assert resumed is not None and int(resumed[1]) >= 2, train_log
    assert [r["epoch"] for r in read_metrics(sweep / "trial_0000")] == list(range(1, 7))


def test_epoch_budget_is_refused_with_a_launcher_whose_jobs_cannot_report(tmp_path):
    args = ("-m", "sweep=mlp", "hydra/launcher=submitit_local", "hydra.sweeper.epoch_budget=5")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "hydra.sweeper.epoch_budget=5: jobs run through" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("multirun/mlp/trial_*"))


def journal_study(tmp_path):
    study = optuna.create_study(storage=open_sweep_storage(tmp_path))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("trial_dir", "trial_0000")
    return study, trial


JOURNAL_WRITER = """
import os, signal, sys
from pathlib import Path
import optuna
from hydra_plugins.hpsweep_sweeper import open_sweep_storage

storage = open_sweep_storage(Path("multirun/s"))
study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
if sys.argv[1] == "die":  # killed mid-append, while it holds the journal's lock
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
study.ask()
"""


@pytest.mark.slow
def test_journal_lock_left_by_a_killed_writer_is_taken_over(tmp_path):
    # The sweep dir is relative to the working dir, as in every sweep. Optuna takes over a
    # stale lock after its grace (30 s; 3 s at a tenth of the waits); with a relative journal
    # path it waited forever (CI hung on it).
    def writer(action):
        cmd = [sys.executable, "-c", JOURNAL_WRITER, action]
        env = {**os.environ, WAIT_SCALE: "0.1"}
        return subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    assert writer("die").returncode == -signal.SIGKILL
    assert (tmp_path / "multirun" / "s" / "optuna.journal.lock").is_symlink()
    began = time.monotonic()
    survivor = writer("ask")
    assert survivor.returncode == 0, survivor.stderr
    assert time.monotonic() - began >= 3  # it waited out the grace, then took the lock
    study = load_study(tmp_path / "multirun" / "s", "s")
    assert len(study.trials) == 2


def test_running_trial_with_a_free_lock_is_failed_and_requeued(tmp_path):
    study, _ = journal_study(tmp_path)
    assert _study.requeue_abandoned(study, tmp_path) == [0]
    failed, retry = study.get_trials()
    assert failed.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert retry.user_attrs == {"trial_dir": "trial_0000", "overrides": [], "retry_of": 0}


def test_running_trial_with_a_held_lock_is_left_alone(tmp_path):
    study, _ = journal_study(tmp_path)
    lock = _study.claim_trial_dir(tmp_path / "trial_0000")  # its worker, alive
    try:
        assert _study.requeue_abandoned(study, tmp_path) == []
    finally:
        lock.close()
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]


def test_trial_finishing_while_it_is_checked_is_not_run_twice(tmp_path, monkeypatch):
    # Its worker tells the study and unlocks the trial dir right between the check's read of
    # the RUNNING trials and its look at the lock: the lock is free, yet nothing is lost.
    study, trial = journal_study(tmp_path)
    real_lock = _study.file_lock

    @contextlib.contextmanager
    def lock_taken_just_after_the_trial_finished(path, blocking=True):
        study.tell(trial.number, 0.5)
        with real_lock(path, blocking) as held:
            yield held

    monkeypatch.setattr(_study, "file_lock", lock_taken_just_after_the_trial_finished)
    assert _study.requeue_abandoned(study, tmp_path) == []
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
