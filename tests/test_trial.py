"""run_trial end to end on composed configs: files, resume, checkpoints, failures."""

import math

import pandas as pd
import pytest
import torch

from hpsweep.data import load_splits
from hpsweep.errors import CheckpointError
from hpsweep.job import TrainingDiverged, evaluate, load_checkpoint, make_criterion, run_trial
from hpsweep.job import _trial as trial
from hpsweep.models import MLP
from hpsweep.record import Status, TrialFiles, TrialResult
from tests.conftest import Interrupted, compose_config, interrupt_after, read_metrics, read_result

# Small and quick, but exercising every RNG stream: dropout (global RNG) and shuffling.
DATA = ("data.train_size=2000", "data.val_size=500")
SMALL = (*DATA, "model.hidden_sizes=32", "model.dropout=0.2")


def assert_same_run(dir_a, dir_b):
    a, b = TrialFiles(dir_a), TrialFiles(dir_b)
    ckpt_a, ckpt_b = load_checkpoint(a.last), load_checkpoint(b.last)
    assert ckpt_a["epoch"] == ckpt_b["epoch"]
    for name, tensor in ckpt_a["model"].items():
        assert torch.equal(tensor, ckpt_b["model"][name]), name
    metrics_a = pd.read_csv(a.metrics).drop(columns="seconds")
    metrics_b = pd.read_csv(b.metrics).drop(columns="seconds")
    pd.testing.assert_frame_equal(metrics_a, metrics_b, check_exact=True)
    result_a, result_b = read_result(dir_a), read_result(dir_b)
    for key in ("value", "best_epoch", "test_acc", "test_loss", "epochs_run"):
        assert getattr(result_a, key) == getattr(result_b, key), key


def test_trial_writes_consistent_files(tmp_path):
    cfg = compose_config(*SMALL, "epochs=4")
    result = run_trial(cfg, tmp_path)
    files = TrialFiles(tmp_path)
    for path in (files.metrics, files.result, files.curves, files.last, files.best):
        assert path.stat().st_size > 0, path

    rows = files.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    best_row = max(rows, key=lambda r: (r["val_acc"], -r["epoch"]))  # ties: earliest epoch
    assert result == TrialResult.from_json(files.result.read_text())
    assert result.best_epoch == best_row["epoch"]
    assert result.value == result.best_val_acc == best_row["val_acc"]
    assert result.status is Status.COMPLETE and result.epochs_run == 4
    assert result.num_params == 784 * 32 + 32 + 32 * 10 + 10

    # best.pt holds the best epoch, and evaluating it on the test set gives the logged numbers
    best = load_checkpoint(files.best)
    assert best["epoch"] == result.best_epoch
    assert best["config"]["model"]["hidden_sizes"] == 32
    splits = load_splits("mnist_mini", val_size=500, train_size=2000)
    model = MLP(splits.input_shape, 10, hidden_sizes=32, dropout=0.2)
    model.load_state_dict(best["model"])
    assert tuple(evaluate(model, make_criterion(10), splits.test).values()) == (
        result.test_loss,
        result.test_acc,
    )


@pytest.mark.parametrize(
    ("overrides", "interrupt_at"),
    [
        ((), 2),
        (("checkpoint_every=2",), 3),  # last.pt is from epoch 2: epoch 3 is redone
        (("scheduler=cosine", "optimizer=sgd"), 1),
        (("model=cnn", "model.channels=4", "model.batch_norm=true", "data.task=lt3"), 2),
    ],
)
def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path, overrides, interrupt_at):
    model = () if "model=cnn" in overrides else SMALL[len(DATA) :]
    cfg = compose_config(*DATA, *model, "epochs=4", *overrides)
    run_trial(cfg, tmp_path / "straight")
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "resumed", on_epoch_end=interrupt_after(interrupt_at))
    assert not TrialFiles(tmp_path / "resumed").result.exists()
    run_trial(cfg, tmp_path / "resumed")
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_more_epochs_continue_a_finished_trial(tmp_path):
    run_trial(compose_config(*SMALL, "epochs=2"), tmp_path / "a")
    run_trial(compose_config(*SMALL, "epochs=3"), tmp_path / "a")
    run_trial(compose_config(*SMALL, "epochs=3"), tmp_path / "b")
    assert_same_run(tmp_path / "a", tmp_path / "b")


def test_truncated_last_checkpoint_falls_back_to_best(tmp_path, caplog):
    cfg = compose_config(*SMALL, "epochs=3")
    run_trial(cfg, tmp_path / "straight")
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "broken", on_epoch_end=interrupt_after(2))
    files = TrialFiles(tmp_path / "broken")
    data = files.last.read_bytes()
    files.last.write_bytes(data[: len(data) // 2])

    run_trial(cfg, tmp_path / "broken")
    assert "last.pt" in caplog.text and "truncated or corrupt" in caplog.text
    assert (files.checkpoints / "last.pt.corrupt").stat().st_size == len(data) // 2
    assert_same_run(tmp_path / "straight", tmp_path / "broken")


def test_truncated_checkpoint_without_fallback_is_an_error_that_changes_nothing(tmp_path):
    cfg = compose_config(*SMALL, "epochs=2")
    run_trial(cfg, tmp_path)
    files = TrialFiles(tmp_path)
    files.best.unlink()
    files.last.write_bytes(files.last.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in (files.metrics, files.result, files.last)}
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*no best\.pt"):
        run_trial(cfg, tmp_path)
    assert before == {p: p.read_bytes() for p in before}


def test_resume_with_another_config_is_refused(tmp_path):
    run_trial(compose_config(*SMALL, "epochs=1"), tmp_path)
    with pytest.raises(CheckpointError, match=r"optimizer\.lr: 0\.001 -> 0\.01"):
        run_trial(compose_config(*SMALL, "epochs=2", "optimizer.lr=0.01"), tmp_path)
    assert len(read_metrics(tmp_path)) == 1


def test_overfit_one_batch_reaches_full_training_accuracy(tmp_path):
    # One batch per epoch, so epochs are steps. 64 images memorized well within 100 steps;
    # the epoch budget is far above that, so the stop is the hook's, not the budget's.
    cfg = compose_config(
        "overfit_batches=1", "epochs=1000", "checkpoint_every=1000", "data.val_size=500"
    )

    def stop_when_perfect(epoch, row):
        return Status.COMPLETE if row["train_acc"] == 1.0 else None

    result = run_trial(cfg, tmp_path, on_epoch_end=stop_when_perfect)
    rows = read_metrics(tmp_path)
    assert result.status is Status.COMPLETE and result.reason.startswith("stopped early")
    assert rows[-1]["train_acc"] == 1.0 and len(rows) <= 100
    assert rows[0]["train_acc"] < 0.5  # it learned: one step does not memorize the batch
    assert read_result(tmp_path) == result


def test_epoch_hook_returning_anything_but_a_status_fails_the_trial(tmp_path):
    with pytest.raises(TypeError, match="an epoch hook returned True"):
        run_trial(compose_config(*SMALL, "epochs=2"), tmp_path, on_epoch_end=lambda e, r: True)
    assert read_result(tmp_path).status is Status.FAIL


def test_diverging_loss_fails_the_trial_with_the_reason(tmp_path):
    cfg = compose_config(*SMALL, "epochs=3", "optimizer=sgd", "optimizer.lr=1e6")
    with pytest.raises(TrainingDiverged, match=r"lower optimizer\.lr"):
        run_trial(cfg, tmp_path)
    result = read_result(tmp_path)
    assert result.status is Status.FAIL
    assert "TrainingDiverged" in result.reason
    assert result.value is None or math.isfinite(result.value)


@pytest.mark.parametrize("objective", ["val_acc", "val_loss"])
def test_best_epoch_follows_the_objective_direction(tmp_path, objective):
    result = run_trial(compose_config(*SMALL, "epochs=3", f"objective={objective}"), tmp_path)
    rows = read_metrics(tmp_path)
    values = [r[objective] for r in rows]
    target = max(values) if objective == "val_acc" else min(values)
    assert result.value == target
    assert result.best_epoch == rows[values.index(target)]["epoch"]
    assert result.direction == ("maximize" if objective == "val_acc" else "minimize")


def test_final_report_tests_the_best_epochs_weights_not_the_last(tmp_path, monkeypatch):
    real_evaluate = trial.evaluate
    # validation: epoch 2 is the best
    scripted = iter(
        [{"loss": 1.0, "acc": 0.5}, {"loss": 0.5, "acc": 0.9}, {"loss": 0.8, "acc": 0.6}]
    )

    def evaluate(model, criterion, split, **progress):
        is_val = len(split) == 500  # SMALL's validation split; the test split has 2,000
        return next(scripted) if is_val else real_evaluate(model, criterion, split, **progress)

    monkeypatch.setattr(trial, "evaluate", evaluate)
    result = run_trial(compose_config(*SMALL, "epochs=3"), tmp_path)
    assert result.best_epoch == 2 and result.value == 0.9

    files = TrialFiles(tmp_path)
    splits = load_splits("mnist_mini", val_size=500, train_size=2000)
    model = MLP(splits.input_shape, 10, hidden_sizes=32, dropout=0.2)
    scores = {}
    for name, path in (("best", files.best), ("last", files.last)):
        model.load_state_dict(load_checkpoint(path)["model"])
        scores[name] = tuple(real_evaluate(model, make_criterion(10), splits.test).values())
    assert scores["best"] == (result.test_loss, result.test_acc)
    assert scores["last"] != scores["best"]  # so the test above tells the two apart


@pytest.mark.parametrize("test_pruned", [False, True])
def test_a_pruned_trial_is_scored_on_the_test_set_only_on_request(tmp_path, test_pruned):
    cfg = compose_config(*SMALL, "epochs=3", f"test_pruned={test_pruned}")
    pruned = run_trial(cfg, tmp_path / "pruned", lambda e, r: Status.PRUNED if e == 2 else None)
    assert pruned.status is Status.PRUNED and pruned.epochs_run == 2
    # early stopping ends a trial as complete: scored, as every complete trial is
    stopped = run_trial(cfg, tmp_path / "stopped", lambda e, r: Status.COMPLETE if e == 2 else None)
    assert stopped.status is Status.COMPLETE and 0.5 < stopped.test_acc <= 1
    # the same two epochs: the same best.pt, so the same test score when there is one
    assert TrialFiles(tmp_path / "pruned").read_result() == pruned
    if test_pruned:
        assert (pruned.test_acc, pruned.test_loss) == (stopped.test_acc, stopped.test_loss)
        assert pruned.scores["test_acc"] == pruned.test_acc
    else:
        assert pruned.test_acc is pruned.test_loss is None
        assert not any(k.startswith("test_") for k in pruned.scores)


def test_training_batches_are_shuffled_anew_every_epoch(tmp_path, monkeypatch):
    first_batches = []
    real_iterate = trial.iterate_batches

    def iterate_batches(split, batch_size, generator=None, **where):
        batches = real_iterate(split, batch_size, generator, **where)
        x, y = next(batches)
        first_batches.append(y.clone())
        yield x, y
        yield from batches

    monkeypatch.setattr(trial, "iterate_batches", iterate_batches)
    run_trial(compose_config(*SMALL, "epochs=2"), tmp_path)
    train_y = load_splits("mnist_mini", val_size=500, train_size=2000).train.y
    unshuffled = train_y[: len(first_batches[0])]
    assert not torch.equal(first_batches[0], unshuffled)
    assert not torch.equal(first_batches[0], first_batches[1])


def test_a_one_cycle_schedule_steps_after_every_batch_and_resumes_where_it_was(tmp_path):
    cfg = compose_config(*SMALL, "scheduler=onecycle", "epochs=3", "batch_size=100")
    run_trial(cfg, tmp_path / "straight")
    lrs = [row["lr"] for row in read_metrics(tmp_path / "straight")]  # at each epoch's start
    # 60 steps, the peak after 30% of them (step 18): up within epoch 1, then down
    assert lrs[0] == pytest.approx(0.01 / 25)
    assert lrs[1] > 0.009 > lrs[2]
    scheduler = load_checkpoint(TrialFiles(tmp_path / "straight").last)["scheduler"]
    assert scheduler["last_epoch"] == 3 * 2000 // 100  # one step per batch
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "resumed", on_epoch_end=interrupt_after(1))
    run_trial(cfg, tmp_path / "resumed")
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


def test_a_checkpoint_that_no_longer_fits_the_model_is_refused_and_left_alone(tmp_path):
    # the same config, but a model class changed in code since: another weight shape
    cfg = compose_config(*SMALL, "epochs=1")
    run_trial(cfg, tmp_path)
    files = TrialFiles(tmp_path)
    state = load_checkpoint(files.last)
    state["model"]["1.weight"] = torch.zeros(7, 784)
    torch.save(state, files.last)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=r"does not fit the model.*size mismatch"):
        run_trial(compose_config(*SMALL, "epochs=2"), tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
