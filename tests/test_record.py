"""The trial record: result.json and metrics.csv through hpsweep.record only."""

import json
import os

import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hpsweep.record import METRIC_COLUMNS, Status, TrialFiles, TrialResult
from hpsweep.record import _files as record
from hpsweep.record._yaml_text import yaml_text
from tests.conftest import compose_config

RESULT = TrialResult(
    status=Status.PRUNED,
    reason="pruned after epoch 2",
    objective="val_loss",
    direction="minimize",
    value=0.1 + 0.2,  # not a short decimal: must survive the round trip bit for bit
    best_epoch=2,
    best_val_acc=0.93,
    best_val_loss=0.30000000000000004,
    test_acc=0.91,
    test_loss=0.33,
    epochs_run=2,
    epochs=5,
    wall_time_s=1.5,
    num_params=25450,
    seed=3,
    torch_version="2.14.1",
    device="cpu",
    num_threads=2,
)


def test_result_round_trips_through_its_file_exactly(tmp_path):
    files = TrialFiles(tmp_path)
    assert files.read_result() is None  # no result.json yet: a running trial
    files.write_result(RESULT)
    assert files.read_result() == RESULT
    assert '"status": "PRUNED"' in files.result.read_text()  # the word on disk


def test_status_words_are_optunas_state_names():
    for status in Status:
        assert status.to_optuna() == TrialState[status.value]


@pytest.mark.parametrize(
    ("old", "new"),
    [("complete", "COMPLETE"), ("stopped", "COMPLETE"), ("pruned", "PRUNED"), ("failed", "FAIL")],
)
def test_results_written_by_version_0_1_still_read(old, new):
    fields = json.loads(RESULT.to_json()) | {"status": old, "obsolete_key": 1}
    del fields["num_threads"]  # failed trials of 0.1 had no device and num_threads
    result = TrialResult.from_json(json.dumps(fields))
    assert result.status is Status(new) and result.num_threads is None
    assert result.value == RESULT.value


def test_metrics_round_trip_with_exact_floats(tmp_path):
    rows = [
        {c: (e if c == "epoch" else e / 3 + i * 1e-17) for i, c in enumerate(METRIC_COLUMNS)}
        for e in (1, 2)
    ]
    files = TrialFiles(tmp_path)
    files.write_metrics(rows)
    assert files.read_metrics() == rows
    assert files.metrics.read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)


def test_a_write_that_dies_midway_leaves_the_old_file_whole(tmp_path, monkeypatch):
    files = TrialFiles(tmp_path)
    files.write_result(RESULT)
    before = files.result.read_bytes()

    def crash(fd):  # the process dies after writing some bytes, before they are in place
        raise OSError("killed")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="killed"):
        files.write_result(TrialResult.from_json(RESULT.to_json().replace("PRUNED", "FAIL")))
    assert files.result.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temp file left


def test_a_result_is_written_once_the_files_it_is_about_are_on_disk(tmp_path, monkeypatch):
    """Checkpoints, metrics.csv and the .hydra record are written unsynced as a trial goes:
    result.json, which says the trial ended, is synced after all of them are."""
    files = TrialFiles(tmp_path)
    files.checkpoints.mkdir()
    (tmp_path / ".hydra").mkdir()
    for path in (files.last, files.best, *files.hydra_files):
        record.atomic_write_bytes(path, b"x", sync=False)
    files.write_metrics([{c: 1.0 for c in METRIC_COLUMNS}])
    synced = []
    fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or fsync(fd)
    )
    files.write_result(RESULT)
    on_disk = {files.metrics, files.last, files.best, *files.hydra_files}
    assert set(synced[:-1]) == {str(p) for p in on_disk} and len(synced) == len(on_disk) + 1
    assert synced[-1] == str(tmp_path / f".result.json.tmp{os.getpid()}")  # then renamed
    assert files.read_result() == RESULT


def test_is_better_follows_the_objectives_direction():
    assert record.is_better(0.9, 0.8, "val_acc") and not record.is_better(0.8, 0.9, "val_acc")
    assert record.is_better(0.2, 0.3, "val_loss") and not record.is_better(0.3, 0.2, "val_loss")
    assert not record.is_better(0.5, 0.5, "val_acc")  # a tie keeps the earlier epoch
    assert record.is_better(0.1, None, "val_loss")


def test_the_records_yaml_is_omegaconfs_from_trial_to_trial():
    """yaml_text reuses the text of sections that did not change since the last call: each
    text must still be OmegaConf.to_yaml's, when values change in type but not in ==
    (1, 1.0, True), in key order, or turn into what YAML would misread."""
    hard = {
        "long": "a sentence " * 12,  # wrapped at 80 columns
        "lines": "first\nsecond\n",
        "looks_like": ["1e-3", "null", "yes", "0x10", "~", ""],
        "unicode": "é→✓",
        "empty": {},
        "none": None,
        "nested": [{"a": [1, {"b": None}]}, []],
    }
    variants = [
        {"x": 1}, {"x": 1.0}, {"x": True}, {"x": "1"}, {"x": float("nan")},
        {"x": {"a": 1, "b": 2}}, {"x": {"b": 2, "a": 1}}, {"x": [1, 2]}, {"x": hard},
    ]  # fmt: skip
    composed = compose_config(return_hydra_config=True)
    OmegaConf.set_struct(composed, False)  # room for `extra`
    seen = 0
    for lr in (0.1, 0.1, 1, 0.25):
        for variant in variants:
            config = OmegaConf.merge(composed, {"optimizer": {"lr": lr}, "extra": variant})
            config.hydra.job.num = seen
            seen += 1
            for node in (OmegaConf.masked_copy(config, "hydra"), config, config.hydra.runtime):
                assert yaml_text(node) == OmegaConf.to_yaml(node)
    assert yaml_text(OmegaConf.create({"hydra": {}})) == "hydra: {}\n"
    assert yaml_text(OmegaConf.create([1, "x"])) == OmegaConf.to_yaml(OmegaConf.create([1, "x"]))
