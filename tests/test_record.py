"""The trial record: result.json and metrics.csv through hpsweep.record only."""

import json
import os

import pytest
from optuna.trial import TrialState

from hpsweep.record import METRIC_COLUMNS, Status, TrialFiles, TrialResult
from hpsweep.record import _files as record

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


def test_is_better_follows_the_objectives_direction():
    assert record.is_better(0.9, 0.8, "val_acc") and not record.is_better(0.8, 0.9, "val_acc")
    assert record.is_better(0.2, 0.3, "val_loss") and not record.is_better(0.3, 0.2, "val_loss")
    assert not record.is_better(0.5, 0.5, "val_acc")  # a tie keeps the earlier epoch
    assert record.is_better(0.1, None, "val_loss")
