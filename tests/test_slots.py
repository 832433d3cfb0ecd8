"""Every trial slot accounted for: a trial the study holds is in one state a user can see, and a
sweep ends with exactly n_trials finished trials however its start of a trial was cut short.

A worker asks the study for a trial, records its dir, locks the dir and runs the job. Killed
between the ask and the dir, it leaves a RUNNING trial that no dir lock and no heartbeat speak
for: the next start fails it as never started, gives it no slot of n_trials, and queues a
queued trial's values again.
"""

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hpsweep.cli import main as hpsweep_cli
from hydra_plugins.hpsweep_sweeper import _study, load_sweep_study
from tests.conftest import FAST, read_metrics, run_cli, wait_for_epochs

SWEEP = ("-m", "sweep=mlp", "epochs=1", "hydra/sweeper/pruner=none", *FAST)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in FINISHED]


def compare_rows(sweep: Path, capsys) -> pd.DataFrame:
    capsys.readouterr()
    columns = "number,state,trial_dir,problem"
    assert hpsweep_cli(["compare", str(sweep), "--format", "csv", "--columns", columns]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("slots")
    proc = run_cli(*SWEEP, "hydra.sweeper.n_trials=2", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return cwd


def test_a_trial_asked_but_never_started_takes_no_slot(two_trials, tmp_path, capsys):
    shutil.copytree(two_trials / "multirun", tmp_path / "multirun")
    sweep = tmp_path / "multirun" / "mlp"
    study = load_sweep_study(sweep, "mlp")
    study.ask()  # what a worker killed between the ask and its trial dir leaves: trial 2
    rows = compare_rows(sweep, capsys)
    unstarted = rows[rows["number"] == 2].iloc[0]
    assert unstarted["state"] == "RUNNING" and pd.isna(unstarted["trial_dir"])
    assert unstarted["problem"].startswith("never started: no trial dir")

    proc = run_cli(*SWEEP, "hydra.sweeper.n_trials=3", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "trial 2 never started" in proc.stdout
    study = load_sweep_study(sweep, "mlp")
    assert states(study) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].user_attrs["never_started"] is True
    assert study.trials[3].user_attrs["trial_dir"] == "trial_0003"
    rows = compare_rows(sweep, capsys)
    assert len(rows) == 4 and rows["problem"].notna().sum() == 1
    assert rows[rows["number"] == 2].iloc[0]["problem"].startswith("never started")
    # counted as the sweeper counts: no slot, and no failure against max_failure_rate
    proc = run_cli(
        *SWEEP, "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=0", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert len(load_sweep_study(sweep, "mlp").trials) == 4


def test_a_queued_trial_that_never_started_is_queued_again_and_runs_once(two_trials, tmp_path):
    shutil.copytree(two_trials / "multirun", tmp_path / "multirun")
    sweep = tmp_path / "multirun" / "mlp"
    study = load_sweep_study(sweep, "mlp")
    queued = {"model.hidden_sizes": 32, "optimizer.lr": 0.004, "batch_size": 64}
    study.enqueue_trial(queued)
    study.ask()  # taken from the queue, then its worker was killed

    proc = run_cli(*SWEEP, "hydra.sweeper.n_trials=3", cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    assert "its queued parameters are queued again" in proc.stdout
    study = load_sweep_study(sweep, "mlp")
    assert states(study) == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[3].params == queued
    assert [t.params for t in finished(study)].count(queued) == 1


# -- a real kill at each step of a trial's start ------------------------------------------------

# The sweep's own entry point, with a SIGKILL of the whole sweep (n_jobs=1: the worker is the
# sweep process) right after the chosen step of trial 1's start.
KILLED_TRAIN = """
import os, signal

import optuna

from hydra_plugins.hpsweep_sweeper import TRIAL_DIR


def kill_after(owner, name, when):
    real, seen = getattr(owner, name), []

    def call(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(args, seen):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, call)


def nth(n):
    def when(args, seen):
        seen.append(1)
        return len(seen) == n
    return when


def dir_of_trial_1(args, seen):
    return args[1] == TRIAL_DIR and args[2] == "trial_0001"


MOMENTS = {
    "create": (optuna.Study, "ask", nth(2)),
    "dir attribute": (optuna.Trial, "set_user_attr", dir_of_trial_1),
    "first report": (optuna.Trial, "report", nth(3)),  # trial 0 reports twice (2 epochs)
}
kill_after(*MOMENTS[os.environ["KILL_AT"]])

from hpsweep.train import main

main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["create", "dir attribute", "first report"])
def test_a_sweep_killed_at_each_step_of_a_trials_start_ends_with_n_trials(tmp_path, moment, capsys):
    (tmp_path / "killed_train.py").write_text(KILLED_TRAIN)
    args = [*SWEEP, "epochs=2", "hydra.sweeper.n_trials=3"]
    killed = subprocess.run(
        [sys.executable, "killed_train.py", *args],
        cwd=tmp_path,
        env={**os.environ, "KILL_AT": moment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    sweep = tmp_path / "multirun" / "mlp"
    study = load_sweep_study(sweep, "mlp")
    assert states(study) == ["COMPLETE", "RUNNING"]

    proc = run_cli(*args, cwd=tmp_path)

    assert proc.returncode == 0, proc.stderr
    study = load_sweep_study(sweep, "mlp")
    assert len(finished(study)) == 3, states(study)
    assert TrialState.RUNNING not in {t.state for t in study.trials}
    [failed] = [t for t in study.trials if t.state == TrialState.FAIL]
    if moment == "create":  # no dir: not started, so no slot and no retry
        assert failed.user_attrs["never_started"] is True
        assert [t.user_attrs["trial_dir"] for t in finished(study)] == [
            "trial_0000",
            "trial_0002",
            "trial_0003",
        ]
    else:  # its dir was recorded: retried there, resuming what it had written
        retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
        assert retry.state == TrialState.COMPLETE and retry.params == failed.params
        assert retry.user_attrs["trial_dir"] == "trial_0001"
    rows = compare_rows(sweep, capsys)
    assert (rows["state"] == "COMPLETE").sum() == 3 and "RUNNING" not in set(rows["state"])


# -- a full disk ------------------------------------------------------------------------------

# The sweep's entry point where the disk fills at the test's word, on a machine that does not
# let the test mount a small tmpfs: from then on every fsync (each file the sweep writes, the
# journal's appends among them) fails as a full disk's does.
FULL_DISK_TRAIN = """
import errno, os
from pathlib import Path

real_fsync, full = os.fsync, Path(os.environ["DISK_FULL_FLAG"])
disk = os.environ["DISK"]


def fsync(fd):
    if full.exists() and os.readlink(f"/proc/self/fd/{fd}").startswith(disk):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)


os.fsync = fsync

from hpsweep.train import main

main()
"""


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Callable[[], None]]:
    """A 64 MB tmpfs at `path` if the machine lets the test mount one, else a plain folder;
    yields what fills it (a file of zeros up to ENOSPC, or FULL_DISK_TRAIN's flag)."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)]
    mounted = subprocess.run(mount, capture_output=True).returncode == 0

    def fill() -> None:
        if not mounted:
            (path.parent / "disk_full").touch()
            return
        with open(path / "filler", "wb", buffering=0) as f:
            for chunk in (1 << 20, 1 << 12, 1):  # to the last byte: no small write fits
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * chunk)

    try:
        yield fill
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.parametrize("journal", ["on the full disk", "elsewhere"])
def test_a_full_disk_stops_the_sweep_in_one_line_and_charges_no_trial(tmp_path, journal):
    (tmp_path / "full_disk_train.py").write_text(FULL_DISK_TRAIN)
    with small_disk(tmp_path / "disk") as fill:
        sweep = tmp_path / "disk" / "sweep"
        # epochs enough that trial 1 still trains when the disk is full a moment later
        args = [*SWEEP, "epochs=12", "batch_size=32", "hydra.sweeper.n_trials=3"]
        args.append(f"hydra.sweep.dir={sweep}")
        storage = None
        if journal == "elsewhere":  # the study can still be told: the trial must not be failed
            storage = str(tmp_path / "optuna.journal")
            args.append(f"hydra.sweeper.storage={storage}")
        env = {**os.environ, "DISK_FULL_FLAG": str(tmp_path / "disk_full")}
        env["DISK"] = str(tmp_path / "disk")
        proc = subprocess.Popen(
            [sys.executable, "full_disk_train.py", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for_epochs(proc, sweep / "trial_0001", 1)
        fill()
        output, _ = proc.communicate(timeout=120)

        assert proc.returncode == 1, output
        assert "Traceback" not in output
        [stopped] = [line for line in output.splitlines() if "sweep stopped" in line]
        assert "no space left on device (ENOSPC) writing " + str(sweep) in stopped, output
        assert "trial 1 stays resumable" in stopped and "no trial is charged" in stopped
        study = load_sweep_study(sweep, "mlp", storage)
        assert states(study) == ["COMPLETE", "RUNNING"]  # nothing failed, nothing asked since

        (tmp_path / "disk" / "filler").unlink(missing_ok=True)
        (tmp_path / "disk_full").unlink(missing_ok=True)
        proc = run_cli(*args, cwd=tmp_path)

        assert proc.returncode == 0, proc.stdout + proc.stderr
        study = load_sweep_study(sweep, "mlp", storage)
        assert len(finished(study)) == 3 and _study.failures(study.trials) == []
        retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
        assert retry.state == TrialState.COMPLETE
        assert [r["epoch"] for r in read_metrics(sweep / "trial_0001")] == list(range(1, 13))
