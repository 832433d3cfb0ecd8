"""What a user sees of one `hpsweep-train` run: the start line, progress inside epochs, Ctrl-C,
--help and the errors for a group option that does not exist."""

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from hpsweep.config import CONFIG_DIR, TrainConfig
from hpsweep.job import load_checkpoint
from hpsweep.record import Status, TrialFiles
from tests.conftest import FAST, TRAIN_CMD, compose_config, read_metrics, read_result, run_cli
from tests.warm_start import run_command

KEYS = [f.name for f in fields(TrainConfig)]
# HPSWEEP_PROGRESS unset: the choice is made by whether stderr is a terminal (here: a pipe)
AUTO = {"HPSWEEP_PROGRESS": ""}
LOG_LINE = re.compile(r"^\[[^]]*\]\[(?P<logger>[\w.]+)\]\[(?P<level>\w+)\] - (?P<message>.*)$")
PROGRESS = re.compile(
    r"(?P<label>.+): (?P<done>\d+)/(?P<total>\d+) samples \((?P<pct>\d+)%\), "
    r"(?P<rate>\d+) samples/s, (?:epoch )?ETA (?:\d+s|\d+m\d\ds|\d+h\d\dm)"
)


def messages(text: str) -> list[str]:
    return [m["message"] for line in text.splitlines() if (m := LOG_LINE.match(line))]


def progress_lines(text: str) -> list[tuple[str, int, int, int]]:
    found = []
    for message in messages(text):
        if (m := PROGRESS.fullmatch(message)) is not None:
            assert int(m["rate"]) > 0, message
            found.append((m["label"], int(m["done"]), int(m["total"]), int(m["pct"])))
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "how"),
    [(signal.SIGINT, "interrupted"), (signal.SIGUSR1, "stopped by SIGUSR1")],
    ids=["Ctrl-C", "SIGUSR1"],  # SIGUSR1: what SLURM sends before a preemption, if asked to
)
def test_ctrl_c_stops_with_one_line_and_its_command_continues_the_run(tmp_path, sig, how):
    epochs = 15  # far more than the moments between the first epoch and the signal
    proc = subprocess.Popen(
        [*TRAIN_CMD, "hydra.run.dir=run", *FAST, f"epochs={epochs}", "model.hidden_sizes=[64,32]"],
        cwd=tmp_path,
        env={**os.environ, **AUTO},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    files = TrialFiles(tmp_path / "run")
    deadline = time.monotonic() + 120
    while not files.metrics.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 128 + sig, stdout + stderr  # 130 for Ctrl-C, as a shell says
    assert "Traceback" not in stdout + stderr
    lines = [m for m in messages(stdout) if m.startswith(how)]
    assert len(lines) == 1, stdout
    match = re.fullmatch(
        rf"{how} in epoch (\d+) of {epochs}, resumable after epoch (\d+); "
        r"continue with: (.*)",
        lines[0],
    )
    assert match is not None, lines[0]
    in_epoch, resumable = int(match[1]), int(match[2])
    assert in_epoch == resumable + 1  # checkpoint_every=1: every finished epoch is in last.pt
    assert load_checkpoint(files.last)["epoch"] == resumable == len(read_metrics(files.dir))
    assert not files.result.exists()
    assert messages(files.dir.joinpath("train.log").read_text())[-1] == lines[0]

    # the printed command names the run's dir: it continues from any folder
    command = shlex.split(match[3])
    assert command[: len(TRAIN_CMD)] == TRAIN_CMD
    assert f"hydra.run.dir={files.dir}" in command
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = run_command(command, cwd=elsewhere, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {files.dir} after epoch {resumable}" in messages(resumed.stdout)
    assert [int(r["epoch"]) for r in read_metrics(files.dir)] == list(range(1, epochs + 1))
    result = read_result(files.dir)
    assert result.status is Status.COMPLETE and result.epochs_run == epochs
    assert list(elsewhere.iterdir()) == []


def test_start_line_and_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    # log_every_s tiny: a line after every batch but the last of each pass
    proc = run_cli(
        "hydra.run.dir=run",
        "data.train_size=2000",
        "data.val_size=1500",
        "epochs=2",
        "batch_size=500",
        "log_every_s=0.000001",
        cwd=tmp_path,
        env=AUTO,
    )
    assert proc.returncode == 0, proc.stderr
    log = messages(proc.stdout)
    assert re.fullmatch(
        r"run: device \S+, \d+ threads, fp32 \| "
        r"data mnist_mini \(multiclass, 10 classes\): 2000 train, 1500 val, 2000 test \| "
        rf"MLP, 101,770 params \| output {re.escape(str(tmp_path / 'run'))}",
        log[0],
    ), log[0]
    assert log[1].startswith("epoch 1/2: 500/2000 samples")
    expected = []
    for epoch in (1, 2):
        expected += [
            (f"epoch {epoch}/2", done, 2000, done * 100 // 2000) for done in (500, 1000, 1500)
        ]
        expected += [(f"epoch {epoch}/2 validation", 1024, 1500, 68)]  # evaluated 1024 at a time
    expected += [("test", 1024, 2000, 51)]
    assert progress_lines(proc.stdout) == expected
    train_log = (tmp_path / "run" / "train.log").read_text()
    assert messages(train_log) == log  # the file holds what the console showed
    assert "\r" not in proc.stderr + proc.stdout  # no bar


def test_hpsweep_progress_bar_shows_a_bar_even_without_a_terminal(tmp_path):
    proc = run_cli(
        "hydra.run.dir=run",
        *FAST,
        "epochs=1",
        "log_every_s=0.000001",
        cwd=tmp_path,
        env={"HPSWEEP_PROGRESS": "bar"},
    )
    assert proc.returncode == 0, proc.stderr
    assert progress_lines(proc.stdout) == []
    assert re.search(r"epoch 1/1: +\d+%\|.*\| \d+/2000 \[", proc.stderr), proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (
            ["experiment=nope"],
            {},
            "experiment=nope: there is no conf/experiment/nope.yaml; "
            "the options are fashion_cnn, fashion_vgg, pigeon",
        ),
        (["log_every_s=0"], {}, "log_every_s=0.0: must be > 0 (seconds)"),
        # a typo: `epochz=3` (test_cli) and `+epochz=3` give the same line
        (["+epochz=3"], {}, f"epochz=3: unknown key; the keys are {', '.join(KEYS)}"),
        # Hydra's hint for `model.hidden_size=3` is `+model.hidden_size=3`: refused by name too
        (
            ["+model.hidden_size=3"],
            {},
            "model.hidden_size=3: unknown key for hpsweep.models.MLP; its keys are input_shape, "
            "num_outputs, hidden_sizes, activation, dropout",
        ),
        (
            [],
            {"HPSWEEP_PROGRESS": "loud"},
            "HPSWEEP_PROGRESS='loud': must be one of bar, log, off "
            "(unset: bar on a terminal, else log)",
        ),
    ],
    ids=[
        "unknown experiment",
        "log_every_s",
        "typo with +",
        "group typo with +",
        "HPSWEEP_PROGRESS",
    ],
)
def test_refused_with_one_line_before_anything_is_written(tmp_path, args, env, expected):
    proc = run_cli("hydra.run.dir=run", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [expected]
    assert list(tmp_path.iterdir()) == []


def test_experiment_without_plus_composes_what_plus_experiment_did(tmp_path):
    # the command line still takes +experiment= (old commands, trials' overrides.yaml)
    proc = run_cli("+experiment=pigeon", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = compose_config("experiment=pigeon")
    assert OmegaConf.create(proc.stdout) == cfg
    for name in ("pigeon", "fashion_cnn", "fashion_vgg"):
        # an experiment's values win over train.yaml's and the groups' (it was appended last)
        cfg = OmegaConf.to_container(compose_config(f"experiment={name}"))
        preset = yaml.safe_load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text())
        for entry in preset.pop("defaults"):
            group, option = next(iter(entry.items()))
            group = group.removeprefix("override /")
            assert cfg[group] == OmegaConf.to_container(compose_config(f"{group}={option}"))[
                group
            ] | preset.get(group, {}), (name, group)
        for key, value in preset.items():
            if not isinstance(value, dict):
                assert cfg[key] == value, (name, key)


def test_help_describes_the_command_its_groups_and_every_run_level_key(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("hpsweep-train: train a PyTorch model")
    assert "powered by Hydra" not in proc.stdout
    for group in (
        "data",
        "model",
        "optimizer",
        "scheduler",
        "augment",
        "loss",
        "experiment",
        "sweep",
    ):
        options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in lines, group
    groups = {"data", "model", "optimizer", "scheduler", "augment", "loss"}
    for key in (f.name for f in fields(TrainConfig) if f.name not in groups):
        assert any(re.match(rf"{key} +\S", line) for line in lines), key
    for example in ("hpsweep-train experiment=pigeon ", "hpsweep-train -m sweep=mlp ", "--cfg job"):
        assert any(example in line for line in lines), example
    assert any(line.startswith("A run: outputs/<date>/<time>/") for line in lines)
    assert list(Path(tmp_path).iterdir()) == []
