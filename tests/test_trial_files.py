"""Every trial dir holds its files when the command returns: curves.png is drawn by the
command's drawer process (hpsweep.record's start_drawing) while the next trial trains, the
same picture the trial would draw itself; a drawer that dies, or a sweep killed before its
figures were drawn, leaves them to the command or to the sweep's next start."""

import dataclasses
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hpsweep.job import run_trial
from hpsweep.plots import draw_stale_curves, draw_trial_curves
from hpsweep.record import Status, TrialFiles, draw_later, finish_drawing, start_drawing
from hpsweep.record import _drawing as drawing
from hydra_plugins.hpsweep_sweeper import NEVER_STARTED, TRIAL_DIR
from hydra_plugins.hpsweep_sweeper import load_sweep_study as load_study
from tests.conftest import (
    FAST,
    TRAIN_CMD,
    compose_config,
    read_metrics,
    read_result,
    run_cli,
    start_sweep,
)

PNG = b"\x89PNG\r\n\x1a\n"
RECORD = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log")
RECORD += ("metrics.csv", "result.json", "checkpoints/last.pt", "checkpoints/best.pt")


def assert_whole(trial_dir: Path, state: TrialState) -> None:
    """The files a finished trial's dir holds, consistent with each other and the study."""
    for name in RECORD:
        assert (trial_dir / name).is_file(), f"{trial_dir.name}: no {name}"
    result = read_result(trial_dir)
    assert result.status.name == state.name
    assert len(read_metrics(trial_dir)) == result.epochs_run
    curves = trial_dir / "curves.png"
    assert curves.read_bytes().startswith(PNG), f"{trial_dir.name}: no curves.png"
    assert curves.stat().st_mtime >= (trial_dir / "result.json").stat().st_mtime


def same(png: bytes, other: bytes) -> bool:
    """Byte for byte (a bool: pytest's diff of two PNGs' bytes would take minutes)."""
    return png == other


def redrawn(trial_dir: Path, into: Path) -> bytes:
    """The trial's curves.png drawn again from its files, in a copy of its dir."""
    copy = into / trial_dir.parent.name / trial_dir.name  # the same title
    shutil.copytree(trial_dir, copy)
    (copy / "curves.png").unlink()
    draw_trial_curves(copy)
    return (copy / "curves.png").read_bytes()


@pytest.fixture
def trial(tmp_path):
    """A finished trial, its curves.png drawn by itself (no drawer in this process)."""
    cfg = compose_config(*FAST, "epochs=2", "label_smoothing=0.1", "model.hidden_sizes=16")
    trial_dir = tmp_path / "sweep" / "trial_0000"
    assert run_trial(cfg, trial_dir).status is Status.COMPLETE
    (trial_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, trial_dir / ".hydra" / "config.yaml")  # as hpsweep-train records it
    return trial_dir


def test_the_drawer_draws_the_figure_the_trial_draws(trial, tmp_path):
    drawn_by_trial = (trial / "curves.png").read_bytes()
    (trial / "curves.png").unlink()
    start_drawing()
    try:
        assert draw_later(trial, label_smoothing=0.1)
    finally:
        finish_drawing()  # waits for it
    assert same((trial / "curves.png").read_bytes(), drawn_by_trial)  # label smoothing and all
    assert same(redrawn(trial, tmp_path / "again"), drawn_by_trial)


def test_figures_a_dead_drawer_left_are_drawn_by_the_command(trial, tmp_path):
    sweep = trial.parent
    other = sweep / "trial_0001"
    shutil.copytree(trial, other)
    for trial_dir in (trial, other):
        (trial_dir / "curves.png").unlink()
    start_drawing(sweep)
    drawer = drawing._current
    assert drawer is not None
    drawer.process.kill()  # before it drew anything
    drawer.process.wait()
    assert not draw_later(other)  # it is gone: the trial draws its own
    assert drawer.broken
    finish_drawing(sweep)  # it failed: what it may have left is drawn here
    for trial_dir in (trial, other):
        assert (trial_dir / "curves.png").read_bytes().startswith(PNG)
    # a failed trial has no figure, and an up-to-date one is not drawn again
    TrialFiles(other).write_result(dataclasses.replace(read_result(other), status=Status.FAIL))
    (other / "curves.png").unlink()
    assert draw_stale_curves(sweep) == 0
    assert not (other / "curves.png").exists()


def test_every_trial_dir_holds_its_files_when_the_sweep_returns(tmp_path):
    args = ["-m", "sweep=mlp", "hydra.sweeper.n_trials=6", "hydra.sweeper.n_jobs=2", "epochs=2"]
    proc = run_cli(*args, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "mlp"
    study = load_study(sweep, "mlp")
    assert len(study.trials) == 6
    for t in study.trials:
        assert_whole(sweep / t.user_attrs["trial_dir"], t.state)
    best = sweep / study.best_trial.user_attrs["trial_dir"]
    assert same((best / "curves.png").read_bytes(), redrawn(best, tmp_path / "again"))


@pytest.mark.slow
def test_every_trial_dir_holds_its_files_after_a_sigkill_and_a_restart(tmp_path):
    args = [*TRAIN_CMD, "-m", "sweep=mlp", "hydra.sweeper.n_trials=8", "hydra.sweeper.n_jobs=2"]
    args += ["epochs=3", *FAST]
    sweep = tmp_path / "multirun" / "mlp"
    proc = start_sweep(args, tmp_path)
    deadline = time.monotonic() + 120
    while len(list(sweep.glob("trial_*/result.json"))) < 3:  # mid-sweep: trials running too
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its workers and its drawer, at once
    proc.communicate()
    finished = sorted(p.parent for p in sweep.glob("trial_*/result.json"))
    # a figure its drawer had not drawn yet (which the kill may or may not have left)
    (finished[0] / "curves.png").unlink(missing_ok=True)

    again = run_cli(*args[len(TRAIN_CMD) :], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = load_study(sweep, "mlp")
    # a trial the kill cut off is retried in its dir (the retry resumes it): the dir's files
    # are its last attempt's
    last_attempt = {t.user_attrs[TRIAL_DIR]: t for t in study.trials if TRIAL_DIR in t.user_attrs}
    assert len(last_attempt) >= 8
    # a trial the kill caught between its ask and its claim has no dir: closed as never started
    no_dir = [t for t in study.trials if TRIAL_DIR not in t.user_attrs]
    assert all(t.state == TrialState.FAIL and NEVER_STARTED in t.user_attrs for t in no_dir)
    for trial_dir, t in last_attempt.items():
        assert_whole(sweep / trial_dir, t.state)
    assert same((finished[0] / "curves.png").read_bytes(), redrawn(finished[0], tmp_path / "x"))
