"""load_trials reads each trial's .hydra/ files with libyaml and builds only what it uses (#16):
the table must be the one the reader before it built, from the whole composed configs."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hpsweep.record import TrialFileError, TrialFiles
from hpsweep.results import HYDRA_KEYS, load_trials
from hydra_plugins.hpsweep_sweeper import load_sweep_study
from tests.conftest import FAST, every_state_preset, run_cli, write_preset

PRESET = every_state_preset("scale")
HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scale")
    searchpath = write_preset(
        root, "scale", PRESET, defaults=("/hydra/sweeper/pruner: median", "/optimizer: sgd")
    )
    proc = run_cli("-m", "sweep=scale", searchpath, *FAST, cwd=root)
    assert proc.returncode == 0, proc.stderr
    sweep = root / "multirun" / "scale"
    states = {t.state.name for t in load_sweep_study(sweep, "scale").trials}
    assert {"COMPLETE", "PRUNED", "FAIL"} <= states
    return sweep


@pytest.fixture
def files_only(sweep, tmp_path) -> Path:
    """The sweep without its journal, trial_0002 holding a retry: trial 2's worker died and
    trial 5 resumed in its dir (what its hydra.yaml then says)."""
    copy = tmp_path / "scale"
    shutil.copytree(sweep, copy)
    (copy / "optuna.journal").unlink()
    hydra_yaml = copy / "trial_0002" / ".hydra" / "hydra.yaml"
    text = hydra_yaml.read_text()
    assert text.count("    num: 2\n") == 1
    hydra_yaml.write_text(text.replace("    num: 2\n", "    num: 5\n"))
    return copy


def from_whole_configs(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` as the reader before #16 made it, from OmegaConf's load of every trial's
    config.yaml and hydra.yaml: the number is hydra.yaml's job.num (files alone), and
    params_<key> the composed config's value (a config group's: its option in runtime.choices)."""
    expected = trials.copy()
    params = [c for c in trials.columns if c.startswith("params_")]
    assert params
    for index, row in trials.iterrows():
        hydra_dir = Path(row["trial_dir"]) / ".hydra"
        config = OmegaConf.load(hydra_dir / "config.yaml")
        hydra = OmegaConf.load(hydra_dir / "hydra.yaml").hydra
        expected.at[index, "number"] = hydra.job.num
        for column in params:
            key = column[len("params_") :]
            choices = hydra.runtime.choices
            value = choices[key] if key in choices else OmegaConf.select(config, key)
            expected.at[index, column] = value
    return expected


def test_table_is_the_one_the_whole_configs_give(files_only):
    trials = load_trials(files_only)

    pd.testing.assert_frame_equal(trials, from_whole_configs(trials))
    assert {"COMPLETE", "PRUNED", "FAIL"} <= set(trials["state"])
    retry = trials[trials["trial_dir"].str.endswith("trial_0002")].iloc[0]
    assert retry["number"] == 5 and retry["retry_of"] == 2
    assert pd.api.types.is_float_dtype(trials["params_optimizer.lr"])
    assert pd.api.types.is_integer_dtype(trials["params_batch_size"])
    assert sorted(trials["params_optimizer.lr"].dropna().unique()) == [1e-6, 0.03, 0.05, 1e4]


def test_with_the_study_the_table_is_the_files_table(sweep):
    trials = load_trials(sweep)

    pd.testing.assert_frame_equal(trials, from_whole_configs(trials))


def test_fast_reader_reads_what_omegaconf_reads(sweep):
    for trial_dir in sorted(sweep.glob("trial_*")):
        files = TrialFiles(trial_dir)
        for name in HYDRA_FILES:
            whole = OmegaConf.to_container(files.read_hydra_file(name), resolve=False)
            assert files.read_hydra_data(name) == whole, (trial_dir.name, name)
        choices = files.read_hydra_data("hydra.yaml")["runtime"]["choices"]
        assert files.read_hydra_data("hydra.yaml", HYDRA_KEYS) == {
            "mode": "MULTIRUN",
            "job": {"num": int(trial_dir.name[-4:])},
            "runtime": {"choices": choices},
        }


# name -> text written into each .hydra file in turn
DAMAGED = {
    "empty": "",
    "not yaml": "model: [1,\n",
    "duplicate key": "hydra:\n  mode: RUN\nhydra:\n  mode: RUN\n",
    "a list": "- 1\n- 2\n",
    "a scalar": "hello\n",
    "a float where overrides are": "- 1e-3\n",
    "hydra as a list": "hydra:\n- 1\n",
    "garbage bytes": b"\x89PNG\r\n\x1a\n\x00\xff",
}


@pytest.mark.parametrize("name", HYDRA_FILES)
@pytest.mark.parametrize("damage", list(DAMAGED))
def test_fast_reader_refuses_a_damaged_file_as_omegaconfs_does(tmp_path, name, damage):
    (tmp_path / ".hydra").mkdir()
    text = DAMAGED[damage]
    path = tmp_path / ".hydra" / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    files = TrialFiles(tmp_path)
    keys = HYDRA_KEYS if name == "hydra.yaml" else None
    try:
        before = OmegaConf.to_container(files.read_hydra_file(name), resolve=False)
    except TrialFileError as e:
        with pytest.raises(TrialFileError) as raised:
            files.read_hydra_data(name, keys)
        assert str(raised.value) == str(e)
    else:
        assert files.read_hydra_data(name) == before
