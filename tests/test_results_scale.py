"""load_trials reads each trial's .hydra/ files with libyaml and builds only what it uses, and
only when they changed since it last read them (#16): the table must be the one the reader
before it built, from the whole composed configs, and a changed file must be read again."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hpsweep.record import TrialFileError, TrialFiles
from hpsweep.results import HYDRA_KEYS, load_trials
from hpsweep.results import _read_cache as read_cache
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


# The read cache (hpsweep.results._read_cache): a sweep read again is not parsed again, and
# any change to a file it was read from is read anew.


def fresh_process(monkeypatch) -> dict[str, int]:
    """As if in a new process (the cache file read again, nothing in memory), counting the
    parses of each trial file from here on."""
    monkeypatch.setattr(read_cache, "_OPEN", {})
    parses = {"hydra": 0, "result": 0, "metrics": 0}
    for method, kind in [
        ("read_hydra_data", "hydra"),
        ("read_result", "result"),
        ("read_metrics", "metrics"),
    ]:
        real = getattr(TrialFiles, method)

        def counted(self, *args, _real=real, _kind=kind, **kwargs):
            parses[_kind] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(TrialFiles, method, counted)
    return parses


@pytest.mark.parametrize("with_study", [True, False])
def test_a_sweep_read_again_is_not_parsed_again(sweep, tmp_path, monkeypatch, with_study):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    if not with_study:
        (copy / "optuna.journal").unlink()
    first = load_trials(copy)
    parses = fresh_process(monkeypatch)

    again = load_trials(copy)

    pd.testing.assert_frame_equal(again, first)
    assert parses == {"hydra": 0, "result": 0, "metrics": 0}
    assert len(list(read_cache.cache_dir().glob("sweep-*.pickle"))) >= 1


def rewrite_same_size_and_mtime(path: Path, new: bytes) -> None:
    """An edit in place that keeps the size and puts the mtime back: only ctime tells."""
    before = path.stat()
    assert len(new) == before.st_size
    path.write_bytes(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


# file of trial_0000 -> how it is changed -> what the table must then say of that trial
CHANGES = {
    "result.json damaged, same size and mtime": (
        "result.json",
        lambda p: rewrite_same_size_and_mtime(p, b"{" * p.stat().st_size),
        lambda row: row["problem"].startswith("result.json: not JSON"),
    ),
    "config.yaml value changed, same size and mtime": (
        ".hydra/config.yaml",
        lambda p: rewrite_same_size_and_mtime(
            p, p.read_bytes().replace(b"batch_size: 64", b"batch_size: 32")
        ),
        lambda row: row["params_batch_size"] == 32 and row["problem"] is None,
    ),
    "hydra.yaml emptied": (
        ".hydra/hydra.yaml",
        lambda p: p.write_text(""),
        lambda row: ".hydra/hydra.yaml: empty" in row["problem"],
    ),
    "metrics.csv cut short": (
        "metrics.csv",
        lambda p: p.write_bytes(p.read_bytes()[:-40]),
        lambda row: "metrics.csv" in row["problem"],
    ),
    "best.pt deleted": (
        "checkpoints/best.pt",
        lambda p: p.unlink(),
        lambda row: pd.isna(row["best_checkpoint"]),
    ),
    "overrides.yaml deleted": (
        ".hydra/overrides.yaml",
        lambda p: p.unlink(),
        lambda row: ".hydra/overrides.yaml" in row["problem"],
    ),
}


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """The values alone: a column of None turns str when a row of the table has a string."""
    return table.astype(object).where(table.notna(), None).reset_index(drop=True)


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_file_changed_since_the_last_read_is_read_again(sweep, tmp_path, monkeypatch, change):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    (copy / "optuna.journal").unlink()  # files alone: the study would fill some cells in
    before = load_trials(copy)
    row_of = lambda table: table[table["trial_dir"].str.endswith("trial_0000")].iloc[0]  # noqa: E731
    assert row_of(before)["problem"] is None and row_of(before)["best_checkpoint"]
    name, damage, shows = CHANGES[change]
    damage(copy / "trial_0000" / name)
    parses = fresh_process(monkeypatch)

    after = load_trials(copy)

    assert shows(row_of(after)), row_of(after).to_dict()
    others = after[~after["trial_dir"].str.endswith("trial_0000")]
    expected = before[~before["trial_dir"].str.endswith("trial_0000")]
    pd.testing.assert_frame_equal(cells(others), cells(expected))
    assert parses["result"] <= 1  # trial_0000's alone


@pytest.mark.parametrize("cache_file", ["garbage", "cut short", "a folder"])
def test_a_damaged_cache_is_a_cold_read(sweep, tmp_path, monkeypatch, cache_file):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    first = load_trials(copy)
    (kept,) = [c.file for c in read_cache._OPEN.values() if c.sweep == str(copy.resolve())]
    if cache_file == "garbage":
        kept.write_bytes(b"\x80\x05not a pickle")
    elif cache_file == "cut short":
        kept.write_bytes(kept.read_bytes()[:100])
    else:
        kept.unlink()
        kept.mkdir()  # cannot be read nor replaced
    parses = fresh_process(monkeypatch)

    pd.testing.assert_frame_equal(load_trials(copy), first)
    assert parses["result"] == len(first.dropna(subset=["trial_dir"]))


def test_reading_writes_nothing_into_the_sweep_and_off_writes_nothing(sweep, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    files_before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    monkeypatch.setenv("HPSWEEP_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(read_cache, "_OPEN", {})
    first = load_trials(copy)
    assert not (tmp_path / "xdg").exists()
    monkeypatch.setenv("HPSWEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(read_cache, "_OPEN", {})

    pd.testing.assert_frame_equal(load_trials(copy), first)

    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == files_before
    (kept,) = (tmp_path / "cache").iterdir()
    assert kept.name.startswith("sweep-") and kept.suffix == ".pickle"


OLD_SWEEP = Path(__file__).parent / "data" / "sweep_0c047b8"


@pytest.mark.parametrize("variant", ["with_study", "files_only_with_retry"])
def test_a_sweep_written_before_the_change_gives_the_table_it_gave(tmp_path, variant):
    copy = tmp_path / OLD_SWEEP.name
    shutil.copytree(OLD_SWEEP, copy)
    if variant == "files_only_with_retry":  # as the table was made: see tests/data/README.md
        (copy / "optuna.journal").unlink()
        hydra_yaml = copy / "trial_0002" / ".hydra" / "hydra.yaml"
        hydra_yaml.write_text(hydra_yaml.read_text().replace("    num: 2\n", "    num: 5\n"))
    expected = json.loads(OLD_SWEEP.with_suffix(".tables.json").read_text())[variant]

    for _ in ("first read", "read again"):
        trials = load_trials(copy)

        assert {c: str(t) for c, t in trials.dtypes.items()} == expected["dtypes"]
        rows = cells(trials).to_dict("records")
        for row in rows:
            for column in ("trial_dir", "best_checkpoint"):
                if row[column] is not None:
                    row[column] = str(Path(row[column]).relative_to(copy))
        assert rows == expected["rows"]
    assert {"COMPLETE", "PRUNED", "FAIL"} <= set(trials["state"])


def test_a_row_read_again_has_the_path_as_this_call_spells_it(sweep, tmp_path, monkeypatch):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    monkeypatch.chdir(tmp_path)
    relative = load_trials("copy")
    assert all(p.startswith("copy") for p in relative["trial_dir"])
    parses = fresh_process(monkeypatch)

    absolute = load_trials(copy)

    assert parses["result"] == 0  # the rows came from the cache
    assert all(p.startswith(str(copy)) for p in absolute["trial_dir"])
    assert all(p.startswith(str(copy)) for p in absolute["best_checkpoint"].dropna())


def test_with_a_study_its_word_on_a_retry_wins_over_the_files(sweep, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sweep, copy)
    hydra_yaml = copy / "trial_0002" / ".hydra" / "hydra.yaml"  # files alone: a retry (5 of 2)
    hydra_yaml.write_text(hydra_yaml.read_text().replace("    num: 2\n", "    num: 5\n"))

    trials = load_trials(copy)

    row = trials[trials["trial_dir"].str.endswith("trial_0002")].iloc[0]
    assert row["number"] == 2 and pd.isna(row["retry_of"])  # the study ran trial 2 there, once
