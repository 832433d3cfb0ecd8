"""What a user sees of a sweep: each line names its trial, a sweep-level line counts the trials,
parallel jobs print no bars, and a retry's dir is the one of the trial it retries."""

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta

import optuna
import pytest
import yaml
from optuna.trial import TrialState, create_trial

from hydra_plugins.hpsweep_sweeper import load_sweep_study
from hydra_plugins.hpsweep_sweeper._progress import tally_line
from hydra_plugins.hpsweep_sweeper._tally import Tally
from tests.conftest import FAST, TRAIN_CMD, read_metrics

EPOCH_LINE = re.compile(r"\[trial (\d+)\] epoch (\d+)/(\d+) \|.* val loss \S+ acc (\d\.\d+) ")
PARALLEL_SWEEP = (
    "sweep=mlp",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
    "epochs=2",
    *FAST,
)
PROGRESS_LINE = re.compile(
    r"trials (\d+)/(\d+) done \((\d+) complete, (\d+) pruned, (\d+) failed\), (\d+) running"
    r" \| best (\S+) \(trial (\d+)\) \| (\S+) elapsed(, ~\S+ left)?$"
)


@pytest.mark.slow
def test_a_parallel_sweep_names_the_trial_on_every_line_and_counts_up(tmp_path):
    log_file = tmp_path / "sweep.log"
    with open(log_file, "w") as out:  # piped to a file, as under nohup or a batch system
        proc = subprocess.run(
            # -W error too: forked workers on the journal storage raise no warning either
            [sys.executable, "-W", "error", *TRAIN_CMD[1:], "-m", *PARALLEL_SWEEP, *FAST],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    output = log_file.read_text()
    assert proc.returncode == 0, output
    sweep = tmp_path / "multirun" / "mlp"
    study = load_sweep_study(sweep, "mlp")

    epoch_lines = [line for line in output.splitlines() if re.search(r" epoch \d+/\d+ \|", line)]
    assert len(epoch_lines) == 4 * 2  # every epoch of every trial, each naming its trial
    for line in epoch_lines:
        match = EPOCH_LINE.search(line)
        assert match, line
        number, epoch = int(match[1]), int(match[2])
        trial_dir = sweep / study.trials[number].user_attrs["trial_dir"]
        assert trial_dir.name == f"trial_{number:04d}"
        assert match[4] == f"{read_metrics(trial_dir)[epoch - 1]['val_acc']:.4f}", line
    assert {int(EPOCH_LINE.search(line)[1]) for line in epoch_lines} == {0, 1, 2, 3}

    progress = [m for line in output.splitlines() if (m := PROGRESS_LINE.search(line))]
    assert len(progress) == 4  # one per finished trial
    for m in progress:
        assert int(m[2]) == 4 and int(m[1]) == int(m[3]) + int(m[4]) + int(m[5])
        assert (m[10] is None) == (int(m[1]) == 4)  # an estimate while trials are left
    last = max(progress, key=lambda m: int(m[1]))
    assert (last[1], last[3], last[6]) == ("4", "4", "0")
    assert last[7] == f"{study.best_value:.4g}" and int(last[8]) == study.best_trial.number

    for trial in study.trials:  # each train.log holds its own trial's lines only
        lines = (sweep / f"trial_{trial.number:04d}" / "train.log").read_text().splitlines()
        assert len(lines) >= 3
        assert all(f"[trial {trial.number}] " in line for line in lines)
        assert all(re.findall(r"\[trial (\d+)\]", line) == [str(trial.number)] for line in lines)


TINY_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep

hydra:
  sweeper:
    study_name: tiny
    n_trials: 3
    params:
      x: choice(1, 2, 3)
    enqueue: [{x: 3}, {x: 1}, {x: 2}]

x: 0
"""

# Logs what a job sees of HPSWEEP_PROGRESS; a job with x=3 kills its own process the first
# time it runs (leaving a marker file), as an out-of-memory kill would.
TINY_APP = """\
import logging, os, signal
from pathlib import Path

import hydra

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def tiny(cfg):
    log.info("x=%s progress=%s", cfg.x, os.environ.get("HPSWEEP_PROGRESS"))
    if cfg.x == 3 and os.environ.get("KILL_ONCE") and not Path("killed").exists():
        Path("killed").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return cfg.x


if __name__ == "__main__":
    tiny()
"""


def run_tiny(tmp_path, *args, **env):
    (tmp_path / "conf").mkdir(parents=True, exist_ok=True)
    (tmp_path / "conf" / "config.yaml").write_text(TINY_CONFIG)
    (tmp_path / "tiny.py").write_text(TINY_APP)
    environ = {k: v for k, v in os.environ.items() if k != "HPSWEEP_PROGRESS"}
    return subprocess.run(
        [sys.executable, "tiny.py", "-m", "hydra.sweep.dir=sweep", *args],
        cwd=tmp_path,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_parallel_workers_ask_jobs_for_progress_lines_unless_the_user_chose(tmp_path):
    seen = {}
    for case, args, env in [
        ("one job", [], {}),
        ("two jobs", ["hydra.sweeper.n_jobs=2"], {}),
        ("user's choice", ["hydra.sweeper.n_jobs=2"], {"HPSWEEP_PROGRESS": "off"}),
    ]:
        proc = run_tiny(tmp_path / case.replace(" ", "_"), *args, **env)
        assert proc.returncode == 0, proc.stderr
        seen[case] = set(re.findall(r"\[trial \d\] x=\d progress=(\w+)", proc.stdout))
    assert seen == {"one job": {"None"}, "two jobs": {"log"}, "user's choice": {"off"}}


@pytest.mark.slow
def test_a_retry_runs_in_the_dir_of_the_trial_it_retries_and_every_record_says_so(tmp_path):
    killed = run_tiny(tmp_path, KILL_ONCE="1")
    assert killed.returncode == -9  # trial 0 (x=3) killed the sweep process itself
    proc = run_tiny(tmp_path, KILL_ONCE="1")
    assert proc.returncode == 0, proc.stderr
    study = load_sweep_study(tmp_path / "sweep", "tiny")
    assert [t.state for t in study.trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    retry = study.trials[3]  # queued after the enqueued trials 1 and 2
    assert retry.params == {"x": 3} and retry.user_attrs["retry_of"] == 0
    assert retry.user_attrs["trial_dir"] == "trial_0000"
    assert not (tmp_path / "sweep" / "trial_0003").exists()

    assert "trial 3 (trial_0000, retry of trial 0): x=3" in proc.stdout
    table = proc.stdout.split("top trials:\n")[1].splitlines()
    assert table[0].split() == ["trial", "value", "x", "dir", "retry_of"]
    assert table[1].split() == ["3", "3", "3", "trial_0000", "0"]
    assert table[2].split() == ["2", "2", "2", "trial_0002"]
    assert "trials 3/3 done (3 complete, 0 pruned, 0 failed), 0 running | best 3 (trial 3)" in (
        proc.stdout
    )
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert (results["best_trial"], results["best_trial_dir"], results["best_retry_of"]) == (
        3,
        "trial_0000",
        0,
    )
    # the dir's log holds both attempts, each line naming its trial
    log_lines = (tmp_path / "sweep" / "trial_0000" / "tiny.log").read_text().splitlines()
    assert [re.findall(r"\[trial (\d+)\] x=3", line) for line in log_lines] == [["0"], ["3"]]


def test_progress_line_counts_the_study_and_estimates_from_this_runs_trials():
    start = datetime(2026, 1, 1, 12, 0, 0)

    def trial(state, value=None, began=0, took=30, **attrs):
        t = create_trial(state=state, value=value, user_attrs=attrs)
        t.datetime_start = start + timedelta(seconds=began)
        t.datetime_complete = (
            None if state == TrialState.RUNNING else t.datetime_start + timedelta(seconds=took)
        )
        return t

    trials = [
        trial(TrialState.COMPLETE, 0.5, began=-999, took=998),  # an earlier run's: not timed
        trial(TrialState.FAIL, trial_dir="trial_0001"),  # continued by the retry below
        trial(TrialState.COMPLETE, 0.9545, took=20),
        trial(TrialState.PRUNED, took=40),
        trial(TrialState.FAIL),
        trial(TrialState.RUNNING, trial_dir="trial_0001", retry_of=1),
        trial(TrialState.RUNNING),
    ]
    for number, t in enumerate(trials):
        t.number = number

    def progress_line(directions, total, slots, elapsed, timeout=None):
        tally = Tally(directions, since=start)
        tally.fold(trials)
        return tally_line(tally, total, slots, elapsed, timeout)

    maximize = [optuna.study.StudyDirection.MAXIMIZE]
    line = progress_line(maximize, total=20, slots=2, elapsed=65)
    # 4 done of 20: 16 left at the mean of 20 s, 40 s and 30 s (the failed one), over 2 slots
    assert line == (
        "trials 4/20 done (2 complete, 1 pruned, 1 failed), 2 running | best 0.9545 (trial 2) "
        "| 1m05s elapsed, ~4m left"
    )
    # n_trials=1e9 with a 5-minute timeout: the timeout ends it, not 16 billion trials
    line = progress_line(maximize, total=10**9, slots=2, elapsed=65, timeout=300)
    assert line.endswith("| 1m05s elapsed, the timeout in ~4m")
    minimize = [optuna.study.StudyDirection.MINIMIZE]
    assert "| best 0.5 (trial 0) |" in progress_line(minimize, 4, 1, 3725)
    assert progress_line(maximize, 4, 1, 3725).endswith("| 1h02m elapsed")
