"""hydra.sweeper.fuse=K through the real CLI: a worker takes K trials and trains those that can
share a model as one fused job; each trial keeps its own files, report, pruning and failure."""

import difflib
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from optuna.trial import TrialState

from hpsweep.cli import main as hpsweep
from hpsweep.job import load_checkpoint
from hpsweep.record import Status, TrialFiles
from hydra_plugins.hpsweep_sweeper import load_sweep_study as load_study
from tests.conftest import (
    FAST,
    TRAIN_CMD,
    read_metrics,
    read_result,
    run_cli,
    start_sweep,
    wait_for_epochs,
    write_preset,
)
from tests.warm_start import run_command

# As tests/test_fused_trials.py: measured within 2.5e-7 of the unfused runs; asserted with margin.
LOSS_TOL = 1e-5

# A grid: every trial's parameters are known, whatever the order the workers ask in.
GRID = """
epochs: 3
hydra:
  sweeper:
    study_name: {name}
    n_trials: {n}
    params:
      model.hidden_sizes: choice(16, 48)
      optimizer.lr: choice(0.03, 0.1, 1e4)
      batch_size: choice(64, 128)
"""
SGD = ("optimizer=sgd", "num_threads=1", *FAST)


# A Hydra job callback (hydra.callbacks) that, like Hydra's own PickleJobInfoCallback, keeps
# what on_job_start saw until on_job_end: a fused group's trials each need their own instance.
RECORD_CALLBACK = """
from pathlib import Path
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback


class Record(Callback):
    def on_job_start(self, config, **kwargs):
        self.dir = Path(HydraConfig.get().runtime.output_dir)
        with open(self.dir / "callback.txt", "a") as f:
            f.write(f"start {self.dir == Path(config.hydra.runtime.output_dir)}\\n")

    def on_job_end(self, config, job_return, **kwargs):
        value = job_return._return_value
        value = type(value).__name__ if isinstance(value, BaseException) else repr(value)
        own = Path(HydraConfig.get().runtime.output_dir) == self.dir
        with open(self.dir / "callback.txt", "a") as f:
            f.write(f"end {own} {job_return.status.name} {value} {'hydra' in job_return.cfg}\\n")
"""


def grid_sweep(tmp_path, name, *args, n=12):
    # the callback's module in the command's dir, where `python -m` imports from
    (tmp_path / "record_callback.py").write_text(RECORD_CALLBACK)
    args = (*args, "+hydra.callbacks.record._target_=record_callback.Record")
    preset = write_preset(
        tmp_path,
        name,
        GRID.format(name=name, n=n),
        defaults=("/hydra/sweeper/sampler: grid", "/hydra/sweeper/pruner: none"),
    )
    return run_cli("-m", preset, f"sweep={name}", *SGD, *args, cwd=tmp_path)


def same_record(fused_dir, plain_dir, fused_number, plain_number):
    """The .hydra files of two trials with the same parameters, one of each sweep, equal but
    for the sweep's name and the trial's number."""
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        fused = (fused_dir / ".hydra" / name).read_text()
        plain = (plain_dir / ".hydra" / name).read_text().replace("plain", "fused")
        for text, number in ((fused, fused_number), (plain, plain_number)):
            assert f"num: {number}\n" in text or name != "hydra.yaml"
        fused = fused.replace(f"fused_{fused_number}\n", "").replace(f"num: {fused_number}\n", "")
        plain = plain.replace(f"fused_{plain_number}\n", "").replace(f"num: {plain_number}\n", "")
        fused = fused.replace("- hydra.sweeper.fuse=6\n    ", "").replace("fuse: 6", "fuse: 1")
        if fused != plain:
            diff = difflib.unified_diff(plain.splitlines(), fused.splitlines(), lineterm="")
            raise AssertionError(f"{name} differs:\n" + "\n".join(diff))
    return True


def by_params(study):
    return {tuple(sorted(t.params.items())): t for t in study.trials}


@pytest.mark.slow
def test_a_fused_sweep_leaves_each_trial_its_files_and_values_of_an_unfused_one(tmp_path, capsys):
    # 12 trials asked 6 at a time: two batch sizes -> groups; lr 1e4 diverges and fails alone
    fused = grid_sweep(
        tmp_path, "fused", "hydra.sweeper.fuse=6", "hydra.sweeper.max_failure_rate=1"
    )
    assert fused.returncode == 0, fused.stderr
    plain = grid_sweep(tmp_path, "plain", "hydra.sweeper.max_failure_rate=1")
    assert plain.returncode == 0, plain.stderr
    log = fused.stdout + fused.stderr
    assert log.count("one fused job") >= 3, log  # 6 asked: 2 batch sizes, some in one group
    # the sweeper's line on each trial, and the progress line after it, read as after a
    # single trial: the sweep's format, not the group's job's
    told = [line for line in log.splitlines() if re.search(r"trial \d+ (finished|failed): ", line)]
    assert len(told) == 12 and all("][HYDRA] trial " in line for line in told), told
    progress = [line for line in log.splitlines() if "done (" in line]
    assert len(progress) == 12 and all("][HYDRA] trials " in line for line in progress), progress

    sweep = tmp_path / "multirun" / "fused"
    study, other = load_study(sweep, "fused"), load_study(tmp_path / "multirun" / "plain", "plain")
    assert len(study.trials) == 12
    got, want = by_params(study), by_params(other)
    assert got.keys() == want.keys()
    for params, trial in got.items():
        trial_dir = sweep / trial.user_attrs["trial_dir"]
        files = TrialFiles(trial_dir)
        if dict(params)["optimizer.lr"] == 1e4:
            assert trial.state == want[params].state == TrialState.FAIL
            assert trial.user_attrs["fail_reason"].startswith("TrainingDiverged: train loss is")
            assert read_result(trial_dir).status is Status.FAIL
            calls = (trial_dir / "callback.txt").read_text().splitlines()
            assert calls == ["start True", "end True FAILED TrainingDiverged False"], calls
            continue
        assert trial.state == TrialState.COMPLETE
        assert trial.value == read_result(trial_dir).value
        assert abs(trial.value - want[params].value) <= 2 / 500  # two validation images
        assert list(trial.intermediate_values) == [1, 2, 3]
        for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
            assert (trial_dir / ".hydra" / name).is_file()
        overrides = files.read_hydra_file("overrides.yaml")
        # the group's configs, derived from one composition, are those Hydra composes
        other_dir = tmp_path / "multirun" / "plain" / want[params].user_attrs["trial_dir"]
        assert same_record(trial_dir, other_dir, trial.number, want[params].number)
        assert f"batch_size={dict(params)['batch_size']}" in overrides
        assert files.curves.is_file() and files.best.is_file() and files.last.is_file()
        for g, w in zip(read_metrics(trial_dir), read_metrics(other_dir), strict=True):
            assert abs(g["train_loss"] - w["train_loss"]) <= LOSS_TOL
        # its own log: its own lines, none about the other trials of its group
        [log_file] = trial_dir.glob("*.log")
        lines = log_file.read_text().splitlines()
        assert sum(f"{trial_dir.name}: epoch" in line for line in lines) == 3
        assert sum(f"{trial_dir.name}: best epoch" in line for line in lines) == 1
        assert not [line for line in lines if ": epoch" in line and trial_dir.name not in line]
        assert read_result(trial_dir).fused_with in {None, *range(2, 7)}
        # Hydra's job callbacks: started and ended once, with its own dir, value and config
        calls = (trial_dir / "callback.txt").read_text().splitlines()
        assert calls == ["start True", f"end True COMPLETED {trial.value!r} False"], calls
    fused_trials = [
        t for t in study.trials if read_result(sweep / t.user_attrs["trial_dir"]).fused_with
    ]
    assert len(fused_trials) >= 6

    # reproduce: a fused trial re-run alone matches within tolerance, and says so
    trial = max((t for t in fused_trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    out = tmp_path / "again"
    code = hpsweep(["reproduce", str(sweep), "--trial", str(trial.number), "--out", str(out)])
    said = capsys.readouterr().out
    assert code == 0, said
    group = read_result(sweep / trial.user_attrs["trial_dir"]).fused_with
    assert "reproduced within tolerance, not exactly: 3 epochs, every metric within 0.001" in said
    assert f"trained in a fused group of {group} trials and re-run alone" in said
    assert read_result(out).fused_with is None
    # --tolerance 0 asks for exact: a fused trial is not
    code = hpsweep(
        [
            "reproduce",
            str(sweep),
            "--trial",
            str(trial.number),
            "--out",
            str(out) + "2",
            "--tolerance",
            "0",
        ]
    )
    assert code == 1 and "NOT reproduced" in capsys.readouterr().out


@pytest.mark.slow
def test_pruned_trials_leave_their_group_and_are_told_at_once(tmp_path):
    # Trials 0-3 complete as one group; in the next groups the median pruner stops trials
    # after epoch 1 below the median of the first ones.
    args = ("-m", "sweep=mlp", "hydra.sweeper.fuse=4", "hydra.sweeper.n_trials=12")
    args += ("epochs=3", "batch_size=64", "num_threads=1", *FAST)
    args += ("hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.sampler.seed=3")
    proc = run_cli(*args, "hydra.sweeper.params.batch_size=64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "mlp"
    trials = load_study(sweep, "mlp").trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.number >= 4 for t in pruned)
    log = proc.stdout + proc.stderr
    for t in pruned:
        trial_dir = sweep / t.user_attrs["trial_dir"]
        epochs = len(read_metrics(trial_dir))
        assert epochs == len(t.intermediate_values) < 3
        result = read_result(trial_dir)
        assert result.status is Status.PRUNED and result.reason == f"pruned after epoch {epochs}"
        # told before its group ended: before the last epoch line of the group's survivors
        told = log.index(f"trial {t.number} pruned")
        assert told < log.rindex("epoch 3/3"), "the pruned trial was told at the group's end"


@pytest.mark.parametrize(
    "args, message",
    [
        (["hydra.sweeper.fuse=0"], "hydra.sweeper.fuse=0: must be >= 1"),
        (
            ["hydra.sweeper.fuse=4", "hydra.job.chdir=true"],
            "hydra.sweeper.fuse=4: hydra.job.chdir=true runs each job in its trial's dir",
        ),
    ],
)
def test_fuse_is_checked_before_anything_runs(tmp_path, args, message):
    proc = run_cli("-m", "sweep=mlp", *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "multirun").exists()


def test_trials_that_cannot_be_fused_run_one_by_one(tmp_path):
    # RMSprop has no fused kernel here: each trial is its own job, as with fuse=1
    args = ("-m", "sweep=mlp", "optimizer=rmsprop", "hydra.sweeper.fuse=4")
    proc = run_cli(*args, "hydra.sweeper.n_trials=3", "epochs=1", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fused" not in proc.stdout + proc.stderr
    trials = load_study(tmp_path / "multirun" / "mlp", "mlp").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


@pytest.mark.slow
def test_a_fused_sweep_killed_mid_group_resumes_it_as_if_never_stopped(tmp_path):
    body = """
    epochs: 6
    hydra:
      sweeper:
        study_name: {name}
        n_trials: 4
        fuse: 4
        enqueue:
          - {{model.hidden_sizes: 256, optimizer.lr: 0.01}}
          - {{model.hidden_sizes: 64, optimizer.lr: 0.03}}
          - {{model.hidden_sizes: 128, optimizer.lr: 0.003}}
          - {{model.hidden_sizes: 256, optimizer.lr: 0.05}}
        params:
          model.hidden_sizes: choice(64, 128, 256)
          optimizer.lr: interval(0.001, 0.1)
    """
    args = ("optimizer=sgd", "optimizer.momentum=0.9", "model.dropout=0.2", "num_threads=1")
    args += ("data.val_size=500", "batch_size=32")

    def command(name):
        preset = write_preset(
            tmp_path, name, body.format(name=name), defaults=("/hydra/sweeper/pruner: none",)
        )
        return [*TRAIN_CMD, "-m", preset, f"sweep={name}", *args]

    whole = run_command(command("whole"), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    victim = subprocess.Popen(
        command("killed"),
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sweep = tmp_path / "multirun" / "killed"
    dirs = [sweep / f"trial_{i:04d}" for i in range(4)]
    deadline = time.monotonic() + 300
    while not all(
        len(read_metrics(d)) >= 2 for d in dirs if (d / "metrics.csv").exists()
    ) or not all((d / "metrics.csv").exists() for d in dirs):
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.02)
    time.sleep(0.05)  # into the next epoch's training
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    at = [load_checkpoint(TrialFiles(d).last)["epoch"] for d in dirs]
    assert all(2 <= e < 6 for e in at), at

    again = run_command(command("killed"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    trials = load_study(sweep, "killed").trials
    assert [t.state for t in trials[:4]] == [TrialState.FAIL] * 4  # the killed worker's
    assert [t.state for t in trials[4:]] == [TrialState.COMPLETE] * 4  # their retries
    if len(set(at)) == 1:  # killed in training: the same group resumes, bitwise
        assert (again.stdout + again.stderr).count("one fused job") == 1
    for i, d in enumerate(dirs):
        got, want = read_metrics(d), read_metrics(tmp_path / "multirun" / "whole" / d.name)
        assert len(got) == 6
        for g, w in zip(got, want, strict=True):
            g.pop("seconds"), w.pop("seconds")
            if len(set(at)) == 1:
                assert g == w, (i, g["epoch"])
            else:  # killed between two trials' checkpoints: resumed in groups by epoch
                assert abs(g["train_loss"] - w["train_loss"]) <= LOSS_TOL
        got_model = load_checkpoint(TrialFiles(d).last)["model"]
        want_model = load_checkpoint(TrialFiles(tmp_path / "multirun" / "whole" / d.name).last)
        if len(set(at)) == 1:
            assert all(torch.equal(got_model[n], want_model["model"][n]) for n in got_model)


@pytest.mark.slow
def test_per_group_sampling_fills_groups_and_workers_share_the_trials(tmp_path):
    # fuse_sampling=per_group: the first trial of each claim samples batch_size, the others
    # take it (and sample width and lr), so each worker's 4 trials are one group; n_jobs=2
    # with fuse=8 and 8 trials: 4 for each worker, not 8 for the first to ask
    args = ("-m", "sweep=mlp", "hydra.sweeper.fuse=8", "hydra.sweeper.fuse_sampling=per_group")
    args += ("hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=8", "epochs=1", *FAST)
    proc = run_cli(*args, "hydra/sweeper/pruner=none", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    trials = load_study(tmp_path / "multirun" / "mlp", "mlp").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    by_worker = {}
    for t in trials:
        by_worker.setdefault(t.user_attrs["worker"], []).append(t)
    assert sorted(map(len, by_worker.values())) == [4, 4]
    for group in by_worker.values():
        assert len({t.params["batch_size"] for t in group}) == 1
        assert len({t.params["optimizer.lr"] for t in group}) == 4
        assert {
            read_result(tmp_path / "multirun" / "mlp" / t.user_attrs["trial_dir"]).fused_with
            for t in group
        } == {4}
    assert (proc.stdout + proc.stderr).count("one fused job") == 2


def test_fuse_sampling_is_checked_before_anything_runs(tmp_path):
    proc = run_cli("-m", "sweep=mlp", "hydra.sweeper.fuse_sampling=by_luck", cwd=tmp_path)
    assert proc.returncode == 1
    assert "hydra.sweeper.fuse_sampling='by_luck': per_trial or per_group" in proc.stderr
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_ctrl_c_in_a_fused_group_names_the_trials_left_and_the_next_start_ends_them(tmp_path):
    # 4 trials taken at once, two batch sizes: two groups of 2, trial 0's first
    body = """
        epochs: 8
        hydra:
          sweeper:
            study_name: mlp
            n_trials: 4
            fuse: 4
            params:
              model.hidden_sizes: choice(16, 48)
              batch_size: choice(32, 64)
    """
    preset = write_preset(tmp_path, "two_groups", body, ("/hydra/sweeper/sampler: grid",))
    args = [*TRAIN_CMD, "-m", preset, "sweep=two_groups", "hydra/sweeper/pruner=none", *FAST]
    sweep = tmp_path / "multirun" / "mlp"
    stopped = start_sweep(args, tmp_path)
    wait_for_epochs(stopped, sweep / "trial_0000", 3)
    os.killpg(stopped.pid, signal.SIGINT)  # as a terminal's Ctrl-C
    output, _ = stopped.communicate(timeout=60)
    assert stopped.returncode == 130, output
    assert "Traceback" not in output
    trials = load_study(sweep, "mlp").trials
    first = [t.number for t in trials if t.params["batch_size"] == trials[0].params["batch_size"]]
    later = [t.number for t in trials if t.number not in first]
    assert len(first) == len(later) == 2
    dirs = ", ".join(f"multirun/mlp/trial_{i:04d}" for i in first)
    started = f"trials {first[0]}, {first[1]} stay resumable in {dirs}"
    waiting = f"trials {later[0]}, {later[1]} had not started"
    assert f"interrupted: {started}; {waiting}; start the sweep again" in output, output
    assert all(0 < len(read_metrics(sweep / f"trial_{i:04d}")) < 8 for i in first)
    assert not any((sweep / f"trial_{i:04d}" / "metrics.csv").exists() for i in later)

    proc = run_command(args, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "one fused job" in proc.stdout + proc.stderr  # the retries, again as groups
    trials = load_study(sweep, "mlp").trials
    assert [t.state for t in trials[4:]] == [TrialState.COMPLETE] * 4
    assert all(len(read_metrics(sweep / f"trial_{i:04d}")) == 8 for i in range(4))
