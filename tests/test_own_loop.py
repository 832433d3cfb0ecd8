"""A user's own training loop: hpsweep.loop.TrialRecord keeps the trial record that
hpsweep-train keeps, so a sweep of the loop is compared, plotted and reproduced as
hpsweep-train's are; the Lightning callback does the same for a LightningModule."""

import os
import shutil
import sys

import pytest

from hpsweep.loop import TrialRecord
from hpsweep.record import REPRODUCE_UNTIL, Status, TrialFiles
from hpsweep.results import load_curves, load_trials
from tests.conftest import REPO
from tests.warm_start import run_command

EXAMPLE = REPO / "examples" / "own_loop"
HPSWEEP = [sys.executable, "-m", "hpsweep.cli"]


def test_the_record_tracks_the_best_epoch_of_an_own_metric_and_fails_with_the_loop(tmp_path):
    with pytest.raises(ValueError, match="direction='maximize' or 'minimize'"):
        TrialRecord("val_dice", trial_dir=tmp_path)
    with pytest.raises(RuntimeError), TrialRecord("val_dice", "maximize", tmp_path) as record:
        assert record.log_epoch(train_loss=1.0, val_dice=0.5)
        assert not record.log_epoch(train_loss=0.8, val_dice=0.4)
        assert record.log_epoch(train_loss=0.7, val_dice=0.7)
        with pytest.raises(ValueError, match="no val_dice"):
            record.log_epoch(train_loss=0.6)
        raise RuntimeError("out of memory")
    files = TrialFiles(tmp_path)
    rows = files.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3] and list(rows[0])[:3] == [
        "epoch",
        "train_loss",
        "val_dice",
    ]
    result = files.read_result()
    assert result.status is Status.FAIL and result.reason == "RuntimeError: out of memory"
    assert result.best_epoch == 3 and result.value == 0.7 and result.direction == "maximize"


def test_a_resumed_record_goes_on_from_its_checkpoint(tmp_path, monkeypatch):
    record = TrialRecord("val_loss", trial_dir=tmp_path, epochs=3)
    for loss in (0.9, 0.5):
        record.log_epoch(val_loss=loss)
        record.save_checkpoint({"step": loss})
    record.log_epoch(val_loss=0.7)  # logged, then killed before its checkpoint
    again = TrialRecord("val_loss", trial_dir=tmp_path, epochs=3)
    assert again.resume() == {"step": 0.5} and again.epochs_done == 2
    assert len(TrialFiles(tmp_path).read_metrics()) == 2  # epoch 3 runs again
    monkeypatch.setenv(REPRODUCE_UNTIL, "3")  # as `hpsweep reproduce` of a trial pruned there
    with pytest.raises(Exception, match="pruned after epoch 3") as stopped:
        again.log_epoch(val_loss=0.4)
    assert type(stopped.value).__name__ == "TrialPruned"
    assert TrialFiles(tmp_path).read_result().status is Status.PRUNED


def run(command, cwd):
    proc = run_command(command, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def check_own_sweep(tmp_path, script, study, trials, lost_and_continued=False):
    """The example's sweep, then compare, best, plot and reproduce on it, as a user runs them;
    `lost_and_continued`: then its study is rebuilt in a copy, and the same command again
    continues it."""
    work = tmp_path / "project"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("multirun", "outputs"))
    sweep = [sys.executable, script, "-m", "epochs=4", f"hydra.sweeper.n_trials={trials}"]
    run(sweep, work)
    folder = work / "multirun" / study
    table = load_trials(folder)
    assert len(table) == trials and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    complete = table[table["state"] == "COMPLETE"]
    assert complete["value"].is_monotonic_increasing  # val_loss: lowest first
    assert table["problem"].isna().all()

    compare = run([*HPSWEEP, "compare", str(folder)], work).splitlines()
    assert compare[1].split()[0] == str(complete["number"].iloc[0])  # best first
    best = run([*HPSWEEP, "best", str(folder)], work)
    assert f"reproduce: python {work / script}" in best
    plots = run([*HPSWEEP, "plot", str(folder)], work).split()
    assert len(plots) == 4 and all(os.path.getsize(p) > 10_000 for p in plots)
    curves = load_curves(folder)
    assert set(curves["trial"]) == set(table["number"])
    assert {"loss", "acc"} <= set(curves[curves["split"] == "val"]["metric"])
    reproduced = run([*HPSWEEP, "reproduce", str(folder)], work)
    assert "reproduced exactly: 4 epochs, every metric equal" in reproduced
    if not lost_and_continued:
        return

    # its study lost: rebuilt from the trial dirs, with the loop's own command to continue it
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "optuna.journal").unlink()
    rebuilt = run([*HPSWEEP, "rebuild", str(copy)], work)
    assert f"continue it: python {work / script} -m " in rebuilt
    assert load_trials(copy)["number"].iloc[0] == complete["number"].iloc[0]

    run([*sweep[:-1], f"hydra.sweeper.n_trials={trials + 1}"], work)
    again = load_trials(folder)
    assert len(again) == trials + 1 and set(table["number"]) < set(again["number"])


# slow: three fresh interpreters (the sweep, the re-run); the default tier runs
# examples/own_project end to end, and the record's own tests above
@pytest.mark.slow
def test_an_own_loop_sweep_is_compared_plotted_and_reproduced(tmp_path):
    check_own_sweep(tmp_path, "spiral.py", "spiral", trials=4)


@pytest.fixture
def lightning():
    """The `lightning` extra: CI installs it, so there it must be there."""
    try:
        import lightning
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip('pip install "hpsweep[lightning]" for the Lightning callback tests')
    return lightning


@pytest.mark.slow
def test_a_lightning_sweep_is_compared_plotted_and_reproduced(tmp_path, lightning):
    check_own_sweep(
        tmp_path, "spiral_lightning.py", "spiral_lightning", trials=3, lost_and_continued=True
    )


@pytest.mark.slow
def test_an_own_loop_sweep_is_rebuilt_with_its_command_and_continued(tmp_path):
    check_own_sweep(tmp_path, "spiral.py", "spiral", trials=3, lost_and_continued=True)


RECORDLESS = """\
import hydra

@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> float:
    return (cfg.x - 0.5) ** 2  # writes nothing of its own: only the study knows

if __name__ == "__main__":
    main()
"""
RECORDLESS_CONFIG = """\
defaults:
  - override hydra/sweeper: hpsweep
  - _self_
x: 0.0
hydra:
  sweeper:
    study_name: parabola
    direction: minimize
    n_trials: 6
    sampler: {seed: 0}
    params:
      x: interval(-2.0, 2.0)
"""


@pytest.mark.slow
def test_a_task_that_keeps_no_record_is_compared_from_its_study(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text(RECORDLESS_CONFIG)
    (tmp_path / "parabola.py").write_text(RECORDLESS)
    run([sys.executable, "parabola.py", "-m"], tmp_path)
    folder = tmp_path / "multirun" / "parabola"  # the study's dir, not Hydra's timestamped one
    table = load_trials(folder)
    assert len(table) == 6 and (table["state"] == "COMPLETE").all()
    assert table["problem"].isna().all()  # no "result.json: missing"
    assert table["value"].is_monotonic_increasing  # minimized: lowest first
    best = run([*HPSWEEP, "best", str(folder)], tmp_path)
    assert f"best trial {table['number'].iloc[0]} " in best
    assert f"value = {table['value'].iloc[0]}" in best
