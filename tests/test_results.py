"""Comparing trials: hpsweep.results, the `hpsweep` CLI, plots, reproduce."""

import io
import json
import shutil

import pandas as pd
import pytest
import yaml
from matplotlib.image import imread
from omegaconf import OmegaConf

from hpsweep.cli import main as hpsweep
from hpsweep.results import best_config, best_trial, load_curves, load_trials
from hydra_plugins.hpsweep_sweeper import load_sweep_study as load_study
from tests.conftest import FAST, read_result, run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """An 8-trial sweep with pruning, run once for this module's tests (which only read it,
    or copy it)."""
    root = tmp_path_factory.mktemp("results")
    proc = run_cli("-m", "sweep=mlp", "hydra.sweeper.n_trials=8", "epochs=3", *FAST, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "multirun" / "mlp"


def test_load_trials_has_a_typed_row_per_trial_matching_study_and_files(sweep):
    trials = load_trials(sweep)
    study = load_study(sweep, "mlp")
    assert len(trials) == 8
    assert pd.api.types.is_float_dtype(trials["params_optimizer.lr"])
    assert pd.api.types.is_integer_dtype(trials["params_batch_size"])
    assert pd.api.types.is_integer_dtype(trials["params_model.hidden_sizes"])
    by_number = {t.number: t for t in study.trials}
    for row in trials.itertuples():
        trial = by_number[row.number]
        assert row.state == trial.state.name
        result = read_result(sweep / trial.user_attrs["trial_dir"])
        assert row.value == result.value
        assert trials.loc[row.Index, "params_optimizer.lr"] == trial.params["optimizer.lr"]
    complete = trials[trials["state"] == "COMPLETE"]["value"]
    assert list(complete) == sorted(complete, reverse=True)  # best first (maximize)


def test_files_alone_give_the_same_table(sweep, tmp_path):
    copy = tmp_path / "copied"
    shutil.copytree(sweep, copy)
    (copy / "optuna.journal").unlink()
    with_study = load_trials(sweep).drop(columns=["trial_dir", "best_checkpoint"])
    files_only = load_trials(copy).drop(columns=["trial_dir", "best_checkpoint"])
    pd.testing.assert_frame_equal(with_study, files_only)


def test_curves_are_long_form_with_every_epoch_of_every_trial(sweep):
    curves = load_curves(sweep)
    trials = load_trials(sweep)
    assert list(curves.columns) == ["trial", "epoch", "metric", "split", "value"]
    assert set(curves["metric"]) == {"loss", "acc"} and set(curves["split"]) == {"train", "val"}
    assert len(curves) == 4 * trials["epochs_run"].sum()
    best = best_trial(sweep)
    val_acc = curves.query("trial == @best.number and metric == 'acc' and split == 'val'")
    assert val_acc["value"].max() == best["value"]


def test_best_config_is_the_best_trials_composed_config(sweep):
    best = best_trial(sweep)
    config = best_config(sweep)
    assert config.optimizer.lr == best["params_optimizer.lr"]
    assert config.batch_size == best["params_batch_size"]
    report = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert report["best_trial"] == best["number"]


def test_compare_prints_the_top_trials_and_csv_round_trips(sweep, capsys):
    assert hpsweep(["compare", str(sweep), "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert len(table.strip().splitlines()) == 4 and "params_optimizer.lr" in table

    assert hpsweep(["compare", str(sweep), "--format", "csv", "--top", "8"]) == 0
    parsed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    trials = load_trials(sweep)
    for column in ("number", "value", "params_optimizer.lr", "params_batch_size"):
        assert list(parsed[column]) == list(trials[column]), column


def test_compare_filters_sorts_and_formats(sweep, capsys):
    assert (
        hpsweep(
            [
                "compare",
                str(sweep),
                "--state",
                "complete",
                "--sort=-wall_time_s",
                "--columns",
                "number,wall_time_s,state",
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["state"] == "COMPLETE" for r in rows)
    assert [r["wall_time_s"] for r in rows] == sorted(
        (r["wall_time_s"] for r in rows), reverse=True
    )
    assert hpsweep(["compare", str(sweep), "--format", "markdown", "--top", "2"]) == 0
    markdown = capsys.readouterr().out.splitlines()
    assert markdown[0].startswith("| number | state | value |") and len(markdown) == 4


def test_best_prints_the_command_that_reproduces_it(sweep, capsys):
    assert hpsweep(["best", str(sweep)]) == 0
    out = capsys.readouterr().out
    best = best_trial(sweep)
    assert f"best trial {best['number']}" in out
    assert f"optimizer.lr={float(best['params_optimizer.lr'])!r}" in out
    # the sweep ran in `root`, not where this test runs: the command goes there first
    root = sweep.parent.parent
    assert f"reproduce: cd {root} && hpsweep-train sweep=mlp epochs=3" in out
    assert f"hpsweep reproduce {sweep}" in out


def test_reproduce_matches_exactly_and_catches_a_changed_config(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert hpsweep(["reproduce", str(copy)]) == 0
    assert "reproduced exactly: 3 epochs" in capsys.readouterr().out

    best = best_trial(copy)
    config_path = copy / best["trial_dir"].split("/")[-1] / ".hydra" / "config.yaml"
    config = OmegaConf.load(config_path)
    config.optimizer.lr = config.optimizer.lr * 1.5
    OmegaConf.save(config, config_path)
    code = hpsweep(["reproduce", str(copy), "--out", str(tmp_path / "again")])
    out = capsys.readouterr().out
    assert code == 1
    assert "NOT reproduced" in out and "val_acc" in out


def test_plot_writes_readable_images(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert hpsweep(["plot", str(copy)]) == 0
    names = {"plot_curves.png", "plot_params.png", "plot_history.png", "plot_importances.png"}
    assert {p.name for p in copy.glob("plot_*.png")} == names
    for name in names:
        image = imread(copy / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0.01, name  # not a blank canvas


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "{tmp}/nowhere"], "is not a folder"),
        (["compare", "{tmp}"], "not a sweep dir"),
        (["best", "{empty}"], "an empty sweep"),
        (["reproduce", "{sweep}", "--trial", "99"], "no trial 99 in this sweep"),
        (["compare", "{sweep}", "--columns", "nope"], "no column 'nope'"),
    ],
)
def test_clear_errors(sweep, tmp_path, capsys, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "multirun.yaml").write_text("hydra: {}\n")
    args = [a.format(tmp=tmp_path, sweep=sweep, empty=empty) for a in args]
    assert hpsweep(args) == 2
    assert message in capsys.readouterr().err


def test_plain_hydra_multirun_loads_with_group_choices(tmp_path):
    proc = run_cli(
        "-m", "optimizer=sgd,adam", "epochs=1", *FAST, "hydra.sweep.dir=grid", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    trials = load_trials(tmp_path / "grid")
    assert sorted(trials["params_optimizer"]) == ["adam", "sgd"]
    assert set(trials["state"]) == {"COMPLETE"}  # no study here: states from result.json
    assert not list((tmp_path / "grid").glob("*.journal"))


@pytest.mark.slow
def test_notebook_runs_end_to_end(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    from tests.conftest import REPO

    notebook = nbformat.read(REPO / "notebooks" / "compare_trials.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "0 differences" in printed
    assert len(load_trials(tmp_path / "multirun" / "notebook")) == 8
