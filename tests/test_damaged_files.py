"""Damaged trial files are shown, not fatal: `hpsweep compare | best | plot | reproduce` mark a
trial whose files are missing or cannot be read, say which file and why, go on with the rest,
and change no file that was there."""

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from hpsweep.cli import main as hpsweep
from hpsweep.results import load_trials
from tests.conftest import FAST, run_cli


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def set_json_key(path: Path, key: str, value: object) -> None:
    fields = json.loads(path.read_text())
    path.write_text(json.dumps(fields | {key: value}))


def into_a_folder(path: Path) -> None:
    # Unreadable for root too, whom chmod 000 does not stop (tests may run as root)
    path.unlink()
    path.mkdir()


def header_only(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


# name -> (what is done to the trial dir, what its `problem` says)
DAMAGES: dict[str, tuple[Callable[[Path], object], str]] = {
    "result truncated": (lambda d: cut(d / "result.json", 60), "result.json: not JSON (line "),
    "result garbage": (
        lambda d: (d / "result.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff"),
        "result.json: not UTF-8 text (byte 0)",
    ),
    "result empty": (lambda d: (d / "result.json").write_text(""), "result.json: empty"),
    "result wrong types": (
        lambda d: set_json_key(d / "result.json", "value", "high"),
        "result.json: \"value\": 'high' is not a number",
    ),
    "result unreadable": (
        lambda d: into_a_folder(d / "result.json"),
        "result.json: unreadable (Is a directory)",
    ),
    "metrics truncated mid-row": (
        lambda d: cut(d / "metrics.csv", -9),
        "metrics.csv: cut short in line 3",
    ),
    "metrics garbage": (
        lambda d: (d / "metrics.csv").write_text("lorem ipsum\ndolor sit amet\n"),
        "metrics.csv: line 1 is not a header with epoch",
    ),
    "metrics header only": (
        lambda d: header_only(d / "metrics.csv"),
        "metrics.csv: 0 epoch rows, result.json has epochs_run=2",
    ),
    "metrics missing": (lambda d: (d / "metrics.csv").unlink(), "metrics.csv: missing"),
    "config missing": (
        lambda d: (d / ".hydra" / "config.yaml").unlink(),
        ".hydra/config.yaml: missing",
    ),
    "config not yaml": (
        lambda d: (d / ".hydra" / "config.yaml").write_text("model: [1,\n"),
        ".hydra/config.yaml: not YAML (line 2)",
    ),
    "config unreadable": (
        lambda d: into_a_folder(d / ".hydra" / "config.yaml"),
        ".hydra/config.yaml: unreadable (Is a directory)",
    ),
    "overrides missing": (
        lambda d: (d / ".hydra" / "overrides.yaml").unlink(),
        ".hydra/overrides.yaml: missing",
    ),
    "hydra missing": (
        lambda d: (d / ".hydra" / "hydra.yaml").unlink(),
        ".hydra/hydra.yaml: missing",
    ),
    "trial dir deleted": (lambda d: shutil.rmtree(d), "trial dir missing"),
}


def damages() -> list:
    return [pytest.param(name, id=name) for name in DAMAGES]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 6-trial sweep, run once for this module; each test damages a copy of it."""
    root = tmp_path_factory.mktemp("damaged")
    proc = run_cli("-m", "sweep=mlp", "hydra.sweeper.n_trials=6", "epochs=2", *FAST, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "multirun" / "mlp"


@pytest.fixture(scope="module")
def whole(sweep) -> pd.DataFrame:
    """The sweep's table before any damage, best first."""
    trials = load_trials(sweep)
    assert trials["problem"].isna().all()
    assert (trials["state"] == "COMPLETE").sum() >= 2  # so a best is left when one is damaged
    return trials


@pytest.fixture
def copy(sweep, tmp_path) -> Path:
    target = tmp_path / "mlp"
    shutil.copytree(sweep, target)
    return target


def damage_best(copy: Path, whole: pd.DataFrame, name: str) -> tuple[int, str]:
    """Damage the best trial of the copy; returns its number and what its problem says."""
    best = whole[whole["state"] == "COMPLETE"].iloc[0]
    how, problem = DAMAGES[name]
    how(copy / Path(best["trial_dir"]).name)
    return int(best["number"]), problem


def snapshot(root: Path) -> dict[str, object]:
    """Every file under `root`: its bytes, or for one that cannot be read, its stat."""
    files: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            readable = os.access(path, os.R_OK)
            files[str(path.relative_to(root))] = (
                path.read_bytes() if readable else (stat.st_mode, stat.st_size, stat.st_mtime_ns)
            )
    return files


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = hpsweep(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.mark.parametrize("name", damages())
def test_compare_shows_a_damaged_trial_with_its_problem(copy, whole, capsys, name):
    number, problem = damage_best(copy, whole, name)
    before = snapshot(copy)

    code, out, err = run(["compare", str(copy), "--format", "csv", "--top", "100"], capsys)

    assert code == 0
    table = pd.read_csv(io.StringIO(out))
    assert sorted(table["number"]) == sorted(whole["number"])  # every trial, a gone dir's too
    row = table[table["number"] == number].iloc[0]
    assert problem in row["problem"]
    assert row["state"] == "COMPLETE"  # the study's word: it ended, whatever its files say
    assert table[table["number"] != number]["problem"].isna().all()
    assert err.splitlines() == [
        f"hpsweep compare: damaged or missing files in trial(s) {number}; "
        "the problem column says which and why"
    ]
    assert snapshot(copy) == before


@pytest.mark.parametrize("name", damages())
def test_best_never_picks_a_damaged_trial(copy, whole, capsys, name):
    number, problem = damage_best(copy, whole, name)
    runner_up = whole[(whole["state"] == "COMPLETE") & (whole["number"] != number)].iloc[0]
    before = snapshot(copy)

    code, out, err = run(["best", str(copy)], capsys)

    assert code == 0
    assert out.startswith(f"best trial {runner_up['number']} ")
    [line] = err.splitlines()
    assert line.startswith(f"hpsweep best: left out trial {number} (trial_{number:04d}): ")
    assert problem in line
    assert snapshot(copy) == before


@pytest.mark.parametrize("name", damages())
def test_plot_leaves_out_a_damaged_trial_with_a_warning(copy, whole, capsys, name):
    number, problem = damage_best(copy, whole, name)
    before = snapshot(copy)

    code, out, err = run(["plot", str(copy)], capsys)

    assert code == 0
    assert len(out.splitlines()) == 4  # curves, params, history, importances
    [line] = err.splitlines()
    assert line.startswith(f"hpsweep plot: left out trial {number} ") and problem in line
    after = snapshot(copy)
    assert {k: after[k] for k in before} == before
    assert {Path(k).name for k in after.keys() - before.keys()} == {
        "plot_curves.png",
        "plot_params.png",
        "plot_history.png",
        "plot_importances.png",
    }


@pytest.mark.parametrize("name", damages())
def test_reproduce_of_a_damaged_trial_says_why_in_one_line(copy, whole, capsys, name):
    number, problem = damage_best(copy, whole, name)
    before = snapshot(copy)

    code, out, err = run(["reproduce", str(copy), "--trial", str(number)], capsys)

    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"hpsweep reproduce: trial {number} (") and problem in line
    assert "cannot be re-run" in line
    assert snapshot(copy) == before  # no reproduce/ dir either


def test_without_the_study_an_unreadable_result_leaves_the_state_unknown(copy, whole, capsys):
    (copy / "optuna.journal").unlink()
    number, problem = damage_best(copy, whole, "result truncated")

    code, out, _ = run(["compare", str(copy), "--format", "csv", "--top", "100"], capsys)

    assert code == 0
    row = pd.read_csv(io.StringIO(out)).set_index("number").loc[number]
    assert pd.isna(row["state"]) and pd.isna(row["value"])  # not COMPLETE: nothing says so
    assert problem in row["problem"]
    code, out, _ = run(["best", str(copy)], capsys)
    assert code == 0 and not out.startswith(f"best trial {number} ")


def test_without_the_study_a_deleted_trial_dir_is_simply_gone(copy, whole, capsys):
    (copy / "optuna.journal").unlink()
    number, _ = damage_best(copy, whole, "trial dir deleted")

    code, out, err = run(["compare", str(copy), "--format", "csv", "--top", "100"], capsys)

    assert code == 0 and err == ""
    table = pd.read_csv(io.StringIO(out))
    assert number not in set(table["number"]) and len(table) == len(whole) - 1
