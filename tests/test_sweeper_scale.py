"""The sweeper on a big study: what it counts after each trial stays right, and it reads all of
the study's trials a bounded number of times per sweep, not once per trial."""

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import TrialState, create_trial

from hydra_plugins.hpsweep_sweeper import _study, _tally, open_sweep_storage

PROGRESS = re.compile(
    r"trials (\d+)/(\d+) done \((\d+) complete, (\d+) pruned, (\d+) failed\), (\d+) running"
    r" \| best (\S+) \(trial (\d+)\)"
)
SPACE = {"x": FloatDistribution(-5.0, 5.0), "y": FloatDistribution(-5.0, 5.0)}
CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - override hydra/sweeper/sampler: random

hydra:
  sweeper:
    direction: minimize
    study_name: big
    params:
      x: interval(-5.0, 5.0)
      y: interval(-5.0, 5.0)

x: 0
y: 0
"""
# The task, and a count of the journal's all-trials reads (by the states asked for; None: all)
# written when the sweep process exits.
APP = """\
import atexit, json, os
import hydra
from optuna.storages import JournalStorage

reads = []
read = JournalStorage.get_all_trials


def counted(self, study_id, deepcopy=True, states=None):
    reads.append(None if states is None else sorted(s.name for s in states))
    return read(self, study_id, deepcopy, states)


JournalStorage.get_all_trials = counted
atexit.register(lambda: open(os.environ["READS_FILE"], "w").write(json.dumps(reads)))


@hydra.main(version_base=None, config_path="conf", config_name="config")
def task(cfg):
    return float(cfg.x**2 + cfg.y**2)


if __name__ == "__main__":
    task()
"""


class MemoryBackend(BaseJournalBackend):
    """Journal records in a list, written to the file at once: thousands of trials appended
    one by one would fsync thousands of times."""

    def __init__(self) -> None:
        self.logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int):
        yield from self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self.logs.extend(logs)


def prefilled(n: int) -> list[optuna.trial.FrozenTrial]:
    """n finished trials: every 10th pruned, every 17th failed, trial 1234 the best (-1: below
    anything the task returns), and trial 100 failed and continued by a retry (trial n-1)."""
    trials = []
    for i in range(n):
        params = {"x": (i % 100) / 20 - 2.5, "y": 1.0}
        state = TrialState.COMPLETE
        if i % 10 == 9:
            state = TrialState.PRUNED
        elif i % 17 == 16 or i == 100:
            state = TrialState.FAIL
        value = -1.0 if i == 1234 else 10.0 + i / n
        attrs = {"trial_dir": f"trial_{i:04d}", "overrides": []}
        if i == n - 1:
            state, attrs = TrialState.COMPLETE, {"trial_dir": "trial_0100", "retry_of": 100}
        trials.append(
            create_trial(
                params=params,
                distributions=SPACE,
                value=value if state == TrialState.COMPLETE else None,
                state=state,
                user_attrs=attrs,
            )
        )
    return trials


def write_journal(path, trials) -> None:
    backend = MemoryBackend()
    study = optuna.create_study(
        storage=JournalStorage(backend), study_name="big", direction="minimize"
    )
    study.add_trials(trials)
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in backend.logs))


def test_progress_lines_of_a_3000_trial_study_count_right_and_read_it_a_few_times(tmp_path):
    n, more = 3000, 6
    trials = prefilled(n)
    write_journal(tmp_path / "sweep" / "optuna.journal", trials)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    (tmp_path / "app.py").write_text(APP)
    counted = trials[:100] + trials[101:]  # trial 100 is continued by its retry
    total = len(counted) + more
    proc = subprocess.run(
        [
            sys.executable,
            "app.py",
            "-m",
            "hydra.sweep.dir=sweep",
            f"hydra.sweeper.n_trials={total}",
        ],
        cwd=tmp_path,
        env={**os.environ, "READS_FILE": str(tmp_path / "reads.json")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert f"({len(counted)} there already)" in output

    def count(state):
        return sum(t.state == state for t in counted)

    complete, pruned, failed = (
        count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    assert (complete, pruned, failed) == (2541, 299, 159)
    lines = [tuple(m.groups()) for m in PROGRESS.finditer(output)]
    assert lines == [
        tuple(map(str, (len(counted) + k, total, complete + k, pruned, failed, 0, "-1", 1234)))
        for k in range(1, more + 1)
    ]
    # One read of every trial when the sweep starts, and at its end the report's and the
    # failure check's; the reads of the WAITING trials alone are Optuna's, once per ask.
    reads = json.loads((tmp_path / "reads.json").read_text())
    assert reads.count(None) <= 3, reads
    assert [r for r in reads if r is not None] == [["WAITING"]] * more + [["COMPLETE"]], reads


def reference(trials, directions):
    """The progress line's counts and best, counted from scratch as the sweeper used to."""
    gone = _study.superseded(list(trials))
    counted = [t for t in trials if t.number not in gone]
    states = [t.state for t in counted]
    done = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING]
    complete = [t for t in counted if t.state == TrialState.COMPLETE]
    sign = 1 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1
    best = max(complete, key=lambda t: (sign * t.value, -t.number), default=None)
    return (
        [states.count(s) for s in done],
        None if best is None else best.number,
        len(trials) - len(gone),
        len(_study.failures(list(trials))),
        sum(len(t.intermediate_values) for t in trials),
    )


def test_a_tally_refreshed_as_other_workers_go_on_counts_what_a_full_recount_does(
    tmp_path, monkeypatch
):
    # Ours and another worker's connection to one journal; the other asks, reports, finishes,
    # fails and retries trials between our refreshes.
    ours = optuna.create_study(storage=open_sweep_storage(tmp_path), study_name="s")
    other = optuna.load_study(study_name="s", storage=open_sweep_storage(tmp_path))
    tally = _tally.Tally(ours.directions, datetime.now())
    full_reads = []
    read = JournalStorage.get_all_trials

    def counted(self, study_id, deepcopy=True, states=None):
        if self is ours._storage and states is None:
            full_reads.append(study_id)
        return read(self, study_id, deepcopy, states)

    monkeypatch.setattr(JournalStorage, "get_all_trials", counted)

    def check():
        tally.refresh(ours)
        expected = reference(ours.get_trials(deepcopy=False), ours.directions)
        states = [
            tally.states[TrialState.COMPLETE],
            tally.states[TrialState.PRUNED],
            tally.states[TrialState.FAIL],
            tally.running,
        ]
        best = None if tally.best is None else tally.best.number
        assert (states, best, tally.budget_used, tally.failed, tally.epochs) == expected

    def run(value, trial_dir, **kwargs):
        trial = other.ask()
        trial.set_user_attr("trial_dir", trial_dir)
        if value is not None:
            other.tell(trial, value, **kwargs)
        return trial

    check()  # empty
    for i in range(5):
        run(float(i), f"trial_{i:04d}")
    slow = run(None, "trial_0005")
    slow.report(0.5, 1)
    check()
    slow.report(0.6, 2)
    check()  # epochs of a running trial
    other.tell(slow, 9.0)
    dead = run(None, "trial_0006")
    run(None, "trial_0007").report(1.0, 1)
    pruned = run(None, "trial_0008")
    other.tell(pruned, state=TrialState.PRUNED)
    check()
    # trial 6's worker died: failed, and a retry queued in its dir (it no longer counts)
    other.tell(dead, state=TrialState.FAIL)
    _study.requeue(other, other.trials[dead.number], "its worker died")
    check()
    retry = other.ask()
    assert retry.user_attrs["retry_of"] == dead.number
    check()
    other.tell(retry, -1.0)  # minimize: the best now
    check()
    # the best continued by a retry (not something the sweeper does, but counted all the same)
    other.add_trial(create_trial(state=TrialState.WAITING, user_attrs={"trial_dir": "trial_0006"}))
    check()
    assert tally.best.number == 0
    assert len(full_reads) == 1 + 8  # the tally's first read, and each check's reference
    assert len(tally.trials) == len(ours.trials) == 11


def test_progress_line_counts_the_pareto_front_of_two_objectives():
    from hydra_plugins.hpsweep_sweeper._progress import tally_line

    values = [(3, 1), (1, 3), (2, 2), (2.5, 2.5), (1, 3), (0.5, 4), (3, 0.5)]
    trials = [create_trial(values=list(v)) for v in values]
    for number, t in enumerate(trials):
        t.number = number
    minimize = [optuna.study.StudyDirection.MINIMIZE] * 2
    tally = _tally.Tally(minimize, datetime.now())
    tally.fold(trials)
    line = tally_line(tally, 10, 1, 1)
    # (3, 1) is dominated by (3, 0.5) once it comes, and (2.5, 2.5) by (2, 2); both (1, 3) stay
    assert "| pareto front 5 trials |" in line
