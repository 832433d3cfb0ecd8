"""examples/own_project as the README runs it: a project beside hpsweep (its own model class,
a CSV table with a regression target, its own conf/ and sweep preset), started with the
hpsweep-train console script from the project's folder."""

import os
import shutil
import sys
from pathlib import Path

from hpsweep.results import load_curves, load_trials
from tests.conftest import REPO
from tests.warm_start import run_command

EXAMPLE = REPO / "examples" / "own_project"
HPSWEEP = [sys.executable, "-m", "hpsweep.cli"]
# the console script, not `python -m hpsweep.train`: it must find houses.py in the folder too
HPSWEEP_TRAIN = str(Path(sys.executable).parent / "hpsweep-train")


def run(command, cwd):
    proc = run_command(command, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_readmes_own_project_sweeps_compares_plots_and_reproduces(tmp_path):
    work = tmp_path / "own_project"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("multirun", "outputs"))
    sweep = ["--config-dir", "conf", "-m", "sweep=houses", "epochs=4"]
    run([HPSWEEP_TRAIN, *sweep, "hydra.sweeper.n_trials=4"], work)
    folder = work / "multirun" / "houses"
    table = load_trials(folder)
    assert len(table) == 4 and table["problem"].isna().all()
    assert set(table["objective"]) == {"val_mse"} and set(table["direction"]) == {"minimize"}
    complete = table[table["state"] == "COMPLETE"]
    assert complete["value"].is_monotonic_increasing and len(complete) >= 2
    assert (complete["best_val_r2"] > 0.5).all()  # learnable: R2 well above 0
    assert table["num_params"].notna().all()  # houses.PriceNet, built from the project's module

    compare = run([*HPSWEEP, "compare", str(folder)], work).splitlines()
    assert compare[0].split()[:3] == ["number", "state", "value"] and "test_mse" in compare[0]
    assert compare[1].split()[0] == str(complete["number"].iloc[0])  # lowest val_mse first
    best = run([*HPSWEEP, "best", str(folder)], work)
    assert f"reproduce: hpsweep-train --config-dir {work / 'conf'} sweep=houses" in best
    plots = run([*HPSWEEP, "plot", str(folder)], work).split()
    assert len(plots) == 4 and all(os.path.getsize(p) > 10_000 for p in plots)
    curves = load_curves(folder)
    assert {"mse", "r2"} <= set(curves[curves["split"] == "val"]["metric"])
    reproduced = run([*HPSWEEP, "reproduce", str(folder)], tmp_path)  # from elsewhere
    assert "reproduced exactly: 4 epochs, every metric equal" in reproduced
