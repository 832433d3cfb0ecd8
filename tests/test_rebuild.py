"""`hpsweep rebuild`: the study of a sweep written anew from its trial dirs alone, which the
sweep command then continues."""

import fcntl
import shutil
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsweep.cli import main as hpsweep
from hydra_plugins.hpsweep_sweeper import _study, load_sweep_study
from tests.conftest import FAST, every_state_preset, run_cli, write_preset

PRESET = every_state_preset("rebuild")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A sweep with every state a finished trial can have, run once for this module: two
    complete, one pruned (lr 1e-6 after the median), one failed (lr 1e4 diverges), one sampled.
    Returns the sweep dir and the sweep command's arguments."""
    root = tmp_path_factory.mktemp("rebuild")
    searchpath = write_preset(
        root, "rebuild", PRESET, defaults=("/hydra/sweeper/pruner: median", "/optimizer: sgd")
    )
    args = ["-m", "sweep=rebuild", searchpath, *FAST]
    proc = run_cli(*args, cwd=root)
    assert proc.returncode == 0, proc.stderr
    sweep = root / "multirun" / "rebuild"
    states = {t.state for t in load_sweep_study(sweep, "rebuild").trials}
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= states
    return sweep, args


@pytest.fixture
def copy(sweep, tmp_path) -> Path:
    """The sweep copied to <tmp>/multirun/rebuild, without its journal: files alone."""
    target = tmp_path / "multirun" / "rebuild"
    shutil.copytree(sweep[0], target)
    (target / "optuna.journal").unlink()
    return target


def rebuild(copy: Path, capsys) -> tuple[int, str, str]:
    code = hpsweep(["rebuild", str(copy)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def by_dir(study) -> dict[str, object]:
    return {t.user_attrs["trial_dir"]: t for t in study.trials if "trial_dir" in t.user_attrs}


def test_rebuilt_study_has_the_trials_states_values_and_epochs_of_the_original(sweep, copy, capsys):
    code, out, err = rebuild(copy, capsys)

    assert code == 0 and err == ""
    assert f"rebuilt study rebuild in {copy / 'optuna.journal'}: " in out
    assert "continue it: hpsweep-train -m sweep=rebuild" in out
    # a copy: the command continues it where it is now, not in the dir it was copied from
    [command] = [line for line in out.splitlines() if line.startswith("continue it: ")]
    assert command.endswith(f" hydra.sweep.dir={copy.absolute()}")
    original, rebuilt = load_sweep_study(sweep[0], "rebuild"), load_sweep_study(copy, "rebuild")
    assert rebuilt.directions == original.directions
    assert rebuilt.user_attrs["search_space"] == original.user_attrs["search_space"]
    old, new = by_dir(original), by_dir(rebuilt)
    assert new.keys() == old.keys() and len(new) == 5
    for name, trial in old.items():
        again = new[name]
        assert again.number == trial.number, name  # the sweeper names new dirs by number
        assert again.state == trial.state, name
        assert again.values == trial.values, name
        assert again.intermediate_values == trial.intermediate_values, name
        assert again.params == trial.params and again.distributions == trial.distributions
        for attr in ("overrides", "fail_reason"):
            assert again.user_attrs.get(attr) == trial.user_attrs.get(attr), (name, attr)


def test_sweep_command_continues_the_rebuilt_study(sweep, copy, capsys):
    trial_files = {p: p.read_bytes() for p in copy.glob("trial_*/**/*") if p.is_file()}
    assert rebuild(copy, capsys)[0] == 0

    proc = run_cli(*sweep[1], "hydra.sweeper.n_trials=7", cwd=copy.parent.parent)

    assert proc.returncode == 0, proc.stderr
    assert "7 trials (5 there already)" in proc.stdout
    study = load_sweep_study(copy, "rebuild")
    assert [t.number for t in study.trials] == list(range(7))
    assert {t.user_attrs["trial_dir"] for t in study.trials[5:]} == {"trial_0005", "trial_0006"}
    assert all((copy / f"trial_000{n}" / "result.json").is_file() for n in (5, 6))
    assert {p: p.read_bytes() for p in trial_files} == trial_files  # none ran again


def test_rebuild_moves_a_journal_that_is_there_aside(sweep, copy, capsys):
    journal = copy / "optuna.journal"
    shutil.copyfile(sweep[0] / "optuna.journal", journal)
    original = journal.read_bytes()

    code, out, _ = rebuild(copy, capsys)
    assert code == 0
    [first] = copy.glob("optuna.journal.bak-*")
    assert f"moved the old journal to {first}" in out
    assert first.read_bytes() == original

    code, out, _ = rebuild(copy, capsys)  # again: the first backup stays as it is
    assert code == 0
    assert len(list(copy.glob("optuna.journal.bak-*"))) == 2
    assert first.read_bytes() == original
    assert len(load_sweep_study(copy, "rebuild").trials) == 5


def test_a_trial_dir_that_is_gone_keeps_its_number_as_a_failed_trial_taking_no_slot(copy, capsys):
    shutil.rmtree(copy / "trial_0001")

    code, _, err = rebuild(copy, capsys)

    assert code == 0
    assert err.splitlines() == [
        "hpsweep rebuild: trial 1: no trial dir holds it; rebuilt as FAIL, taking no slot"
    ]
    trials = load_sweep_study(copy, "rebuild").trials
    assert trials[1].state == TrialState.FAIL and "trial_dir" not in trials[1].user_attrs
    # the sweep runs one more trial in its place: n_trials counts trials whose files tell
    assert trials[1].user_attrs["never_started"] is True
    assert _study.budget_used(trials) == 4
    assert 1 not in {t.number for t in _study.failures(trials)}
    assert {t.user_attrs.get("trial_dir") for t in trials} == {
        None,
        *(f"trial_000{n}" for n in (0, 2, 3, 4)),
    }
    assert all(t.user_attrs["trial_dir"] == f"trial_000{t.number}" for t in trials if t.number != 1)


def test_a_retry_is_rebuilt_after_the_trial_it_continues(copy, capsys):
    # trial_0002 as a retry leaves it: trial 2 lost its worker and trial 5 resumed in its dir
    hydra_yaml = copy / "trial_0002" / ".hydra" / "hydra.yaml"
    text = hydra_yaml.read_text()
    assert text.count("    num: 2\n") == 1
    hydra_yaml.write_text(text.replace("    num: 2\n", "    num: 5\n"))
    shutil.rmtree(copy / "trial_0004")  # and 4, the number then free, is not held at all

    assert rebuild(copy, capsys)[0] == 0

    trials = load_sweep_study(copy, "rebuild").trials
    assert [t.user_attrs.get("trial_dir") for t in trials] == [
        "trial_0000",
        "trial_0001",
        "trial_0002",
        "trial_0003",
        None,
        "trial_0002",
    ]
    superseded, retry = trials[2], trials[5]
    assert superseded.state == TrialState.FAIL and superseded.params == retry.params
    assert retry.user_attrs["retry_of"] == 2
    assert _study.superseded(trials) == {2}
    # the retry is one trial with the one it continues, and trial 4, held by no dir, takes no slot
    assert _study.budget_used(trials) == 4


def test_a_damaged_trial_is_rebuilt_failed_with_why(copy, capsys):
    (copy / "trial_0000" / "result.json").write_text("{")

    code, _, err = rebuild(copy, capsys)

    assert code == 0
    assert err.splitlines() == [
        "hpsweep rebuild: trial_0000: result.json: not JSON (line 1); rebuilt as FAIL"
    ]
    trial = load_sweep_study(copy, "rebuild").trials[0]
    assert trial.state == TrialState.FAIL
    assert (
        trial.user_attrs["fail_reason"] == "rebuilt from its files: result.json: not JSON (line 1)"
    )


def test_rebuild_refuses_while_a_trial_runs(copy, capsys):
    with open(copy / "trial_0003" / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        code, out, err = rebuild(copy, capsys)

    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("hpsweep rebuild: trial_0003 is running") and "stop the sweep" in line
    assert not (copy / "optuna.journal").exists()


def test_rebuild_needs_the_sweeps_multirun_yaml(copy, capsys):
    (copy / "multirun.yaml").unlink()

    code, out, err = rebuild(copy, capsys)

    assert code == 2 and out == ""
    missing = copy / "multirun.yaml"
    why = "the search space and the study's name are in it"
    assert err.splitlines() == [f"hpsweep rebuild: {missing} is missing: {why}"]
    assert not (copy / "optuna.journal").exists()


def test_a_grid_sweeps_rebuilt_trials_keep_their_grid_points(tmp_path, capsys):
    searchpath = write_preset(
        tmp_path,
        "grid",
        """\
        epochs: 1
        hydra:
          sweeper:
            study_name: grid
            n_trials: 3
            params:
              model.hidden_sizes: choice(16, 32)
              batch_size: range(64, 257, 64)
        """,
        defaults=("/hydra/sweeper/sampler: grid",),
    )
    proc = run_cli("-m", "sweep=grid", searchpath, *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "grid"
    original = load_sweep_study(sweep, "grid")
    (sweep / "optuna.journal").rename(tmp_path / "original.journal")

    assert rebuild(sweep, capsys)[0] == 0

    # without its grid point a trial is unvisited to the grid sampler, which runs it again
    rebuilt = load_sweep_study(sweep, "grid")
    for trial, again in zip(original.trials, rebuilt.trials, strict=True):
        assert again.system_attrs["grid_id"] == trial.system_attrs["grid_id"]
        assert again.system_attrs["search_space"] == trial.system_attrs["search_space"]


def test_rebuild_into_a_database_never_replaces_a_study_there(copy, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert hpsweep(["rebuild", str(copy), "--storage", url]) == 0
    assert f"rebuilt study rebuild in {url}: " in capsys.readouterr().out

    code = hpsweep(["rebuild", str(copy), "--storage", url])

    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"hpsweep rebuild: study rebuild exists in {url}: delete it")
    assert len(load_sweep_study(copy, "rebuild", storage=url).trials) == 5
