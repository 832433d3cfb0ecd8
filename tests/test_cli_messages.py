"""What a user sees from `hpsweep`: one clear line for every wrong path or option, readable
tables and exact data, folders of single runs, the default sweep, reproducing pruned trials,
killed trials and their retries. Every command runs as a user runs it, in a fresh process."""

import csv
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from hpsweep.job import compare_metrics, reproduce, run_trial
from hpsweep.record import Status, TrialFiles
from hpsweep.results import load_trials
from hydra_plugins.hpsweep_sweeper import load_sweep_study
from tests.conftest import FAST, TRAIN_CMD, compose_config, read_metrics, write_preset
from tests.warm_start import run_command

CLI = [sys.executable, "-m", "hpsweep.cli"]

# 3 trials, one of each ending: lr 0.01 completes, 1e-5 is pruned after epoch 2 (median pruning
# against the first trial, none before epoch 2), 1e4 diverges and fails
STOP_PRESET = """\
epochs: 3
hydra:
  sweeper:
    study_name: stop
    n_trials: 3
    max_failure_rate: 1.0
    pruner: {n_startup_trials: 1, n_warmup_steps: 2}
    params:
      optimizer.lr: choice(0.01, 0.00001, 10000.0)
    enqueue:
      - {optimizer.lr: 0.01}
      - {optimizer.lr: 0.00001}
      - {optimizer.lr: 10000.0}
"""


def hpsweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_command([*CLI, *args], cwd=cwd, timeout=300)


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*TRAIN_CMD, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """multirun/stop/ (a COMPLETE, a PRUNED and a FAIL trial) and outputs/day/, a folder of two
    single runs; made once, in parallel. Tests that change files work on copies."""
    root = tmp_path_factory.mktemp("messages")
    searchpath = write_preset(
        root, "stop", STOP_PRESET, defaults=("/hydra/sweeper/pruner: median", "/optimizer: sgd")
    )
    jobs = [start(["-m", "sweep=stop", searchpath, "num_threads=1", *FAST], root)]
    for name, lr in (("10-00-00", "0.01"), ("10-00-05", "0.001")):
        run = ["epochs=1", f"optimizer.lr={lr}", f"hydra.run.dir=outputs/day/{name}"]
        run += ["num_threads=1", *FAST]
        jobs.append(start(run, root))
    for job in jobs:
        output, _ = job.communicate(timeout=600)
        assert job.returncode == 0, output
    states = [t.state.name for t in load_sweep_study(root / "multirun" / "stop", "stop").trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL"]
    return root


def one_line(proc: subprocess.CompletedProcess) -> str:
    """The stderr of a refused command: exactly one line, no traceback, nothing on stdout."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- options ---------------------------------------------------------------------------------


def test_unknown_sort_column_names_sort_and_lists_the_columns(ws):
    line = one_line(hpsweep("compare", "multirun/stop", "--sort=-nope", cwd=ws))
    assert line.startswith("hpsweep compare: --sort: no column 'nope'; columns are: number, ")
    assert "params_optimizer.lr" in line and "retry_of" in line
    line = one_line(hpsweep("compare", "multirun/stop", "--columns", "number,nope", cwd=ws))
    assert line.startswith("hpsweep compare: --columns: no column 'nope'; columns are: ")


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_negative_top_is_refused_in_one_line(ws, command):
    line = one_line(hpsweep(command, "multirun/stop", "--top", "-2", cwd=ws))
    assert line == (
        f"hpsweep {command}: error: argument --top: must be a whole number >= 0, not '-2' "
        f"(see hpsweep {command} --help)"
    )


EMPTY = [
    # (options, format, the whole stdout)
    (["--state", "running"], "table", "no trials match --state RUNNING ({})\n"),
    (["--state", "running"], "markdown", "no trials match --state RUNNING ({})\n"),
    (["--top", "0"], "table", "--top 0 shows no rows ({})\n"),
    (
        ["--state", "running"],
        "csv",
        "number,state,value,params_optimizer.lr,best_epoch,test_acc,epochs_run,wall_time_s\n",
    ),
    (["--top", "0"], "json", "[]\n"),
]


@pytest.mark.parametrize(("options", "fmt", "expected"), EMPTY)
def test_an_empty_selection_says_so_and_exits_0(ws, options, fmt, expected):
    proc = hpsweep("compare", "multirun/stop", *options, "--format", fmt, cwd=ws)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == expected.format("3 trials: 1 COMPLETE, 1 PRUNED, 1 FAIL")


def test_json_and_csv_are_exact_and_human_formats_round(ws):
    trials = load_trials(ws / "multirun" / "stop")
    columns = [c for c in trials.columns if c not in ("trial_dir", "best_checkpoint")]
    args = ("compare", "multirun/stop", "--columns", ",".join(columns))
    rows = json.loads(hpsweep(*args, "--format", "json", cwd=ws).stdout)
    text = hpsweep(*args, "--format", "csv", cwd=ws).stdout
    cells = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(cells) == len(trials) == 3
    for expected, row, cell in zip(trials.to_dict(orient="records"), rows, cells, strict=True):
        assert list(row) == columns
        for column in columns:
            value = expected[column]
            if pd.isna(value):
                assert row[column] is None and cell[column] == "", column
            else:
                assert row[column] == value, column  # a float read back is the same float
                parsed = float(cell[column]) if isinstance(value, float) else cell[column]
                assert parsed == (value if isinstance(value, float) else str(value)), column
    wall = [r["wall_time_s"] for r in rows]
    assert any(len(repr(w)) > 8 for w in wall)  # else rounding would not show

    markdown = hpsweep(*args, "--format", "markdown", cwd=ws).stdout.splitlines()
    header = [c.strip() for c in markdown[0].strip("|").split("|")]
    for line, row in zip(markdown[2:], rows, strict=True):
        shown = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        assert shown["wall_time_s"] == f"{row['wall_time_s']:.4g}"
        assert shown["test_loss"] == ("" if row["test_loss"] is None else f"{row['test_loss']:.4g}")
    table = hpsweep(*args, cwd=ws).stdout
    assert f"{wall[0]:.4g}" in table and repr(wall[0]) not in table


def test_version_is_the_packages(ws):
    proc = hpsweep("--version", cwd=ws)
    assert proc.returncode == 0
    assert proc.stdout == f"hpsweep {version('hpsweep')}\n"


def test_help_describes_each_command_in_one_line_and_reproduce_its_out(ws):
    proc = hpsweep("--help", cwd=ws)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for command in ("compare", "best", "reproduce", "plot", "rebuild"):
        listed = [line for line in lines if line.startswith(f"  {command} ")]
        assert len(listed) == 1 and len(listed[0].split()) > 3, command
    assert one_line(hpsweep(cwd=ws)) == (
        "hpsweep: error: a command is required: compare, best, reproduce, plot or rebuild "
        "(see hpsweep --help)"
    )
    text = " ".join(hpsweep("reproduce", "--help", cwd=ws).stdout.split())
    assert "--out OUT an empty or new folder for the re-run" in text
    assert "SWEEP_DIR/reproduce/<trial dir>" in text


# -- paths -----------------------------------------------------------------------------------

COMMANDS = ["compare", "best", "reproduce", "plot", "rebuild"]
RUN = "outputs/day/10-00-05"  # the second single run: trial 1 of its folder
WRONG = {
    "missing": ("nowhere", "nowhere is not a folder: it does not exist"),
    "a file": (f"{RUN}/result.json", f"{RUN}/result.json is not a folder but a file"),
    "empty folder": ("empty", "empty is an empty folder, not a sweep dir"),
    "a single run": (
        RUN,
        f"{RUN} is a single run (hpsweep-train without -m), not a sweep dir; its folder "
        "outputs/day holds it as trial 1",
    ),
    "a folder of folders of runs": (
        "outputs",
        "outputs is not a sweep dir; it holds 1 folder(s) of trials, pass one: outputs/day",
    ),
    "a sweep's trial dir": (
        "multirun/stop/trial_0001",
        "multirun/stop/trial_0001 is a trial dir, not a sweep dir; its sweep multirun/stop "
        "holds it as trial 1",
    ),
}
HINTS = {"a single run": "outputs/day", "a sweep's trial dir": "multirun/stop"}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(WRONG))
def test_a_wrong_path_gets_one_line_saying_what_it_is(ws, command, kind):
    (ws / "empty").mkdir(exist_ok=True)
    path, message = WRONG[kind]
    expected = f"hpsweep {command}: {message}"
    if kind in HINTS and command != "rebuild":
        expected += f"; try: hpsweep {command} {HINTS[kind]}"
        expected += " --trial 1" if command == "reproduce" else ""
    assert one_line(hpsweep(command, path, cwd=ws)) == expected


def test_rebuild_of_single_runs_says_they_have_no_study(ws):
    assert one_line(hpsweep("rebuild", "outputs/day", cwd=ws)) == (
        "hpsweep rebuild: outputs/day holds single runs (hpsweep-train without -m): they have "
        "no study to rebuild"
    )


@pytest.mark.slow
def test_a_folder_of_single_runs_compares_like_a_sweep(ws, tmp_path):
    day = tmp_path / "day"
    shutil.copytree(ws / "outputs" / "day", day)
    proc = hpsweep(
        "compare",
        str(day),
        "--format",
        "json",
        "--sort",
        "number",
        "--columns",
        "number,trial_dir,params_*,state",
        cwd=ws,
    )
    assert proc.returncode == 0, proc.stderr
    # numbered in the order the runs started; params_* for the override that differs only
    assert json.loads(proc.stdout) == [
        {
            "number": 0,
            "trial_dir": f"{day}/10-00-00",
            "params_optimizer.lr": 0.01,
            "state": "COMPLETE",
        },
        {
            "number": 1,
            "trial_dir": f"{day}/10-00-05",
            "params_optimizer.lr": 0.001,
            "state": "COMPLETE",
        },
    ]
    best = load_trials(day).iloc[0]
    proc = hpsweep("best", str(day), cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"best trial {best['number']} ({best['trial_dir']}): val_acc")
    assert f"optimizer.lr={best['params_optimizer.lr']}" in proc.stdout

    proc = hpsweep("plot", str(day), cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == f"{day}/plot_curves.png"
    assert (day / "plot_curves.png").stat().st_size > 0

    proc = hpsweep("reproduce", str(day), "--trial", "1", cwd=ws)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "reproduced exactly: 1 epoch, every metric equal"
    assert (day / "reproduce" / "10-00-05" / "result.json").is_file()
    assert len(load_trials(day)) == 2  # what plot and reproduce add is no run of the folder


# -- the default sweep, reproduce ------------------------------------------------------------


def set_trial_times(sweep: Path, when: float) -> None:
    for path in [
        sweep / "optuna.journal",
        *sweep.glob("trial_*/*"),
        *sweep.glob("trial_*/.hydra/*"),
    ]:
        os.utime(path, (when, when))


@pytest.mark.slow
def test_default_sweep_is_the_one_whose_trials_wrote_last(ws, tmp_path):
    """Re-running and plotting an old sweep adds files to it, and does not make it the newest;
    its pruned trial is re-run to the epoch the pruner stopped it after."""
    for name, age in (("old", 7200), ("new", 3600)):
        shutil.copytree(ws / "multirun" / "stop", tmp_path / "multirun" / name)
        set_trial_times(tmp_path / "multirun" / name, time.time() - age)

    assert hpsweep("plot", "multirun/old", cwd=tmp_path).returncode == 0
    proc = hpsweep("reproduce", "multirun/old", "--trial", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == (
        "reproduced exactly: 2 epochs, every metric equal (the original was pruned after "
        "epoch 2; the re-run stopped there too)"
    )
    rerun = TrialFiles(tmp_path / "multirun" / "old" / "reproduce" / "trial_0001")
    result = rerun.read_result()
    assert result.status is Status.PRUNED and result.epochs_run == 2 and result.epochs == 3
    assert len(rerun.read_metrics()) == 2

    proc = hpsweep("best", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("best trial 0 (multirun/new/trial_0000)")


def test_reproduce_refuses_a_failed_trial_saying_why(ws, tmp_path):
    line = one_line(hpsweep("reproduce", "multirun/stop", "--trial", "2", "--out", "x", cwd=ws))
    assert line.startswith(
        "hpsweep reproduce: trial 2 (multirun/stop/trial_0002) failed, so there is no run to "
        "compare with: TrainingDiverged: train loss is "
    )
    assert line.endswith("; only COMPLETE and PRUNED trials can be reproduced")
    assert not (ws / "x").exists()


def test_reproduce_stops_an_early_stopped_trial_where_it_stopped(tmp_path):
    """An epoch hook may end a trial early as COMPLETE (run_trial's early stopping); the re-run
    ends after the same epoch, with everything else as configured."""
    config = compose_config("epochs=3", "scheduler=cosine", *FAST)
    original = run_trial(config, tmp_path / "a", on_epoch_end=lambda e, _: Status.COMPLETE)
    assert original.epochs_run == 1 and original.reason == "stopped early after epoch 1"
    (tmp_path / "a" / ".hydra").mkdir()
    OmegaConf.save(config, tmp_path / "a" / ".hydra" / "config.yaml")  # as the job saves it
    rows = reproduce(tmp_path / "a", tmp_path / "b")
    assert len(rows) == 1
    again = TrialFiles(tmp_path / "b").read_result()
    assert again.status is Status.COMPLETE and again.reason == "stopped early after epoch 1"
    assert compare_metrics(read_metrics(tmp_path / "a"), rows) == []


# -- killed trials and their retries ---------------------------------------------------------


def kill_trial_after(copy: Path, study: optuna.Study, epochs: int) -> tuple[int, Path]:
    """A RUNNING trial whose worker died after `epochs` epochs, as the study and its dir are
    then: its dir holds .hydra/, the lock (free), checkpoints, metrics.csv so far; no result."""
    trial = study.ask()
    name = f"trial_{trial.number:04d}"
    trial.set_user_attr("trial_dir", name)
    shutil.copytree(copy / "trial_0000", copy / name)
    files = TrialFiles(copy / name)
    files.result.unlink()
    files.write_metrics(files.read_metrics()[:epochs])
    for row in files.read_metrics():
        trial.report(row["val_acc"], step=int(row["epoch"]))
    return trial.number, copy / name


@pytest.mark.slow
def test_a_trial_whose_worker_died_shows_its_progress_and_then_its_retry(ws, tmp_path):
    copy = tmp_path / "sweep"
    shutil.copytree(ws / "multirun" / "stop", copy)
    study = load_sweep_study(copy, "stop")
    number, trial_dir = kill_trial_after(copy, study, epochs=2)
    metrics = read_metrics(trial_dir)
    columns = "number,state,value,best_epoch,epochs_run,trial_dir,retry_of,fail_reason,problem"

    def rows() -> tuple[dict, list[str]]:
        proc = hpsweep("compare", str(copy), "--columns", columns, "--format", "json", cwd=ws)
        assert proc.returncode == 0, proc.stderr
        return {r["number"]: r for r in json.loads(proc.stdout)}, proc.stderr.splitlines()

    # its worker alive (it holds the trial dir's lock): running, nothing to say yet
    with open(trial_dir / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        running, err = rows()
    assert running[number]["state"] == "RUNNING" and running[number]["problem"] is None
    assert running[number]["epochs_run"] == 0 and err == []

    # its worker gone: its progress so far, and what happens next
    before, err = rows()
    assert before[number] == {
        "number": number,
        "state": "RUNNING",
        "value": max(r["val_acc"] for r in metrics),
        "best_epoch": max(metrics, key=lambda r: r["val_acc"])["epoch"],
        "epochs_run": 2,
        "trial_dir": str(trial_dir),
        "retry_of": None,
        "fail_reason": None,
        "problem": "worker gone after epoch 2: the next start of the sweep runs it again",
    }
    assert err == [
        f"hpsweep compare: the worker of trial(s) {number} is gone; the problem column says "
        "after which epoch"
    ]
    line = one_line(hpsweep("reproduce", str(copy), "--trial", str(number), cwd=ws))
    assert line.endswith(
        "cannot be re-run: worker gone after epoch 2: the next start of the sweep runs it again"
    )

    # the next start: the sweeper fails it and runs a retry in its dir, which completes there
    from hydra_plugins.hpsweep_sweeper._study import requeue_abandoned

    assert requeue_abandoned(study, copy) == [number]
    retry = study.ask()
    shutil.copy(copy / "trial_0000" / "result.json", trial_dir / "result.json")
    shutil.copy(copy / "trial_0000" / "metrics.csv", trial_dir / "metrics.csv")
    value = TrialFiles(trial_dir).read_result().value
    study.tell(retry, value)
    after, err = rows()
    assert err == []
    assert len(after) == len(study.trials) == 5  # every trial of the study, the failed one too
    failed, retried = after[number], after[retry.number]
    assert failed["state"] == "FAIL" and failed["trial_dir"] == str(trial_dir)
    assert failed["fail_reason"] == "its worker died (its trial dir is no longer locked)"
    assert failed["epochs_run"] == 2 and failed["value"] is None and failed["retry_of"] is None
    assert retried["state"] == "COMPLETE" and retried["trial_dir"] == str(trial_dir)
    assert retried["retry_of"] == number and retried["value"] == value
    assert [r["retry_of"] for n, r in after.items() if n != retry.number] == [None] * 4


@pytest.mark.slow
def test_a_sweep_killed_mid_trial_then_continued_through_the_cli(tmp_path):
    args = ["-m", "sweep=mlp", "hydra.sweeper.n_trials=2", "epochs=20", "batch_size=32"]
    args += ["hydra/sweeper/pruner=none", "num_threads=1", *FAST]
    sweep = tmp_path / "multirun" / "mlp"
    victim = subprocess.Popen(
        [*TRAIN_CMD, *args],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = sweep / "trial_0000" / "metrics.csv"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(read_metrics(metrics.parent)) >= 2):
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.02)
    time.sleep(0.02)  # into the next epoch's training, past the report of the last one
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    epochs = len(read_metrics(metrics.parent))
    # the kill may land after an epoch's metrics.csv row and before its report to the study
    [first] = load_sweep_study(sweep, "mlp").trials
    reported = len(first.intermediate_values)
    assert reported in (epochs - 1, epochs)
    columns = "number,state,epochs_run,best_epoch,retry_of,fail_reason,problem"

    proc = hpsweep("compare", "--columns", columns, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [row] = json.loads(proc.stdout)
    assert row["state"] == "RUNNING" and row["epochs_run"] == epochs and row["best_epoch"]
    assert row["problem"] == (
        f"worker gone after epoch {epochs}: the next start of the sweep runs it again"
    )

    proc = run_command([*TRAIN_CMD, *args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = hpsweep("compare", "--columns", columns, "--format", "json", cwd=tmp_path)
    rows = {r["number"]: r for r in json.loads(proc.stdout)}
    assert sorted(rows) == [0, 1, 2]
    # the failed attempt: what its study knew (its dir now holds the retry's files)
    assert rows[0]["state"] == "FAIL" and rows[0]["epochs_run"] == reported
    assert rows[0]["fail_reason"].startswith("its worker died")
    assert rows[1] == rows[1] | {"state": "COMPLETE", "epochs_run": 20, "retry_of": 0}
    assert rows[2]["state"] == "COMPLETE" and rows[2]["retry_of"] is None
