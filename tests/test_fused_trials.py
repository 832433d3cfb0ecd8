"""run_fused_trials: a fused group leaves each trial the files run_trial leaves, with the same
numbers (within float tolerance), and trials that are pruned or diverge leave the group."""

import shutil
from unittest.mock import Mock

import pytest
import torch
from omegaconf import ListConfig, OmegaConf

from hpsweep.fused import _trials as fused_trials
from hpsweep.fused import run_fused_trials
from hpsweep.job import build, evaluate, load_checkpoint, make_criterion, run_trial
from hpsweep.models import MLP
from hpsweep.record import Status, TrialFiles
from tests.conftest import FAST, compose_config, read_metrics, read_result

# Measured (4 trials x 3 epochs, Adam and SGD, with dropout, shared or per-seed batches): losses
# within 2.5e-7 of the unfused runs, accuracies identical. Asserted with margin: losses within
# 1e-5, accuracies within 2 images (2000 train, 500 val).
LOSS_TOL = 1e-5
ACC_TOL = {"train_acc": 2 / 2000, "val_acc": 2 / 500}

BASE = (*FAST, "epochs=3", "num_threads=1")
ADAM_GROUP = [
    ("model.hidden_sizes=32", "optimizer.lr=0.001"),
    ("model.hidden_sizes=64", "optimizer.lr=0.003", "model.dropout=0.2"),
    ("model.hidden_sizes=16", "optimizer.lr=0.01"),
    ("model.hidden_sizes=48", "optimizer.lr=0.0005", "optimizer.weight_decay=0.001"),
]
SGD = ("optimizer=sgd",)
SGD_GROUP = [
    (*SGD, "model.hidden_sizes=32", "optimizer.lr=0.05"),
    (*SGD, "model.hidden_sizes=24", "optimizer.lr=0.02", "model.dropout=0.1"),
    (*SGD, "model.hidden_sizes=40", "optimizer.lr=0.1", "optimizer.momentum=0.0"),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def configs(group, *extra):
    return [compose_config(*BASE, *overrides, *extra) for overrides in group]


def assert_same_rows(got_dir, want_dir):
    got, want = read_metrics(got_dir), read_metrics(want_dir)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["lr"] == w["lr"]
        for key in ("train_loss", "val_loss"):
            assert abs(g[key] - w[key]) <= LOSS_TOL, (got_dir.name, g["epoch"], key)
        for key, tol in ACC_TOL.items():
            assert abs(g[key] - w[key]) <= tol, (got_dir.name, g["epoch"], key)


def assert_same_result(got_dir, want_dir):
    got, want = read_result(got_dir), read_result(want_dir)
    for key in ("status", "reason", "best_epoch", "epochs_run", "epochs", "num_params", "seed"):
        assert getattr(got, key) == getattr(want, key), key
    for key in ("value", "best_val_acc", "test_acc"):
        assert abs(getattr(got, key) - getattr(want, key)) <= 2 / 500, key
    for key in ("best_val_loss", "test_loss"):
        assert abs(getattr(got, key) - getattr(want, key)) <= LOSS_TOL, key


@pytest.fixture
def group_sizes(monkeypatch):
    """The number of trials the group trains, epoch by epoch."""
    sizes = []
    real = fused_trials.train_epoch

    def spy(model, *args, **kwargs):
        sizes.append(model.num_trials)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(fused_trials, "train_epoch", spy)
    return sizes


def test_build_leaves_the_global_rng_right_after_the_model_init():
    # What rng_after_init captures after prepare(): data loading draws nothing from it.
    cfg = compose_config(*BASE, "seed=7", "model.hidden_sizes=32")
    job = build(cfg)
    after_build = torch.get_rng_state()
    torch.manual_seed(7)
    MLP(job.splits.input_shape, 10, 32)
    assert torch.equal(after_build, torch.get_rng_state())


@pytest.mark.parametrize("seeds", ["same", "differ"])
def test_a_group_writes_each_trial_the_files_and_numbers_of_run_trial(tmp_path, seeds):
    extra = [()] * 4 if seeds == "same" else [(f"seed={s}",) for s in (0, 1, 2, 3)]
    cfgs = [compose_config(*BASE, *o, *e) for o, e in zip(ADAM_GROUP, extra, strict=True)]
    fused_dirs = [tmp_path / f"fused{k}" for k in range(4)]
    results = run_fused_trials(cfgs, fused_dirs)
    for k, cfg in enumerate(cfgs):
        alone = run_trial(cfg, tmp_path / f"alone{k}")
        files = TrialFiles(fused_dirs[k])
        for path in (files.metrics, files.result, files.curves, files.last, files.best):
            assert path.stat().st_size > 0, path
        assert results[k] == read_result(fused_dirs[k])
        assert results[k].status is Status.COMPLETE and results[k].epochs_run == 3
        assert results[k].wall_time_s > 0
        assert_same_rows(fused_dirs[k], tmp_path / f"alone{k}")
        assert_same_result(fused_dirs[k], tmp_path / f"alone{k}")
        assert alone.value > 0.7  # they learned
        # the same checkpoint layout as run_trial's, down to the optimizer's param_groups
        got, want = (
            load_checkpoint(files.last),
            load_checkpoint(TrialFiles(tmp_path / f"alone{k}").last),
        )
        assert got.keys() == want.keys() and got["config"] == want["config"]
        assert got["optimizer"]["param_groups"] == want["optimizer"]["param_groups"]
        assert got["rng"].keys() == want["rng"].keys()
        assert torch.equal(got["rng"]["shuffle"], want["rng"]["shuffle"])
        assert torch.equal(got["rng"]["torch"], want["rng"]["torch"])  # the dropout stream


def test_a_fused_checkpoint_is_a_normal_trials_checkpoint(tmp_path):
    cfgs = configs(ADAM_GROUP)
    run_fused_trials(cfgs, [tmp_path / f"fused{k}" for k in range(4)])
    job = build(cfgs[1])  # the dropout trial
    for k in range(4):
        model = MLP(
            job.splits.input_shape, 10, cfgs[k].model.hidden_sizes, dropout=cfgs[k].model.dropout
        )
        model.load_state_dict(load_checkpoint(TrialFiles(tmp_path / f"fused{k}").best)["model"])
        test_acc = evaluate(model, make_criterion(10), job.splits.test)["acc"]
        assert test_acc == read_result(tmp_path / f"fused{k}").test_acc

    # run_trial continues it to 5 epochs, as if it had run those 3 epochs itself
    shutil.copytree(tmp_path / "fused1", tmp_path / "continued")
    longer = compose_config(*BASE, *ADAM_GROUP[1], "epochs=5")
    result = run_trial(longer, tmp_path / "continued")
    assert result.epochs_run == 5
    rows = read_metrics(tmp_path / "continued")
    assert rows[:3] == read_metrics(tmp_path / "fused1")
    run_trial(longer, tmp_path / "alone")
    assert_same_rows(tmp_path / "continued", tmp_path / "alone")


def test_a_pruned_trial_stops_and_leaves_the_group(tmp_path, group_sizes):
    def prune_after_1(epoch, row):
        return Status.PRUNED if epoch == 1 else None

    cfgs = configs(SGD_GROUP)
    dirs = [tmp_path / f"group{k}" for k in range(3)]
    results = run_fused_trials(cfgs, dirs, [None, prune_after_1, None])
    assert group_sizes == [3, 2, 2]  # epochs 2 and 3 trained without it

    pruned = results[1]
    assert pruned.status is Status.PRUNED and pruned.reason == "pruned after epoch 1"
    assert pruned.epochs_run == 1 and len(read_metrics(dirs[1])) == 1
    assert pruned.test_acc is None and TrialFiles(dirs[1]).curves.exists()  # not scored
    assert load_checkpoint(TrialFiles(dirs[1]).last)["epoch"] == 1  # it can be continued

    group_sizes.clear()
    without = [tmp_path / "without0", tmp_path / "without2"]
    run_fused_trials([cfgs[0], cfgs[2]], without)
    assert group_sizes == [2, 2, 2]
    for k, other in zip((0, 2), without, strict=True):
        assert results[k].status is Status.COMPLETE and results[k].epochs_run == 3
        assert_same_rows(dirs[k], other)
        assert_same_result(dirs[k], other)


def test_a_diverging_trial_fails_alone(tmp_path, group_sizes):
    cfgs = configs([*SGD_GROUP, (*SGD, "model.hidden_sizes=32", "optimizer.lr=1e4")])
    dirs = [tmp_path / f"group{k}" for k in range(4)]
    results = run_fused_trials(cfgs, dirs)
    assert group_sizes == [4, 3, 3]

    with pytest.raises(Exception, match="train loss is nan"):
        run_trial(cfgs[3], tmp_path / "alone")
    failed, alone = results[3], read_result(tmp_path / "alone")
    assert failed == read_result(dirs[3])
    assert failed.status is Status.FAIL and failed.reason == alone.reason
    assert failed.reason.startswith("TrainingDiverged: train loss is nan in epoch 1")
    assert failed.epochs_run == alone.epochs_run == 0

    without = [tmp_path / f"without{k}" for k in range(3)]
    run_fused_trials(cfgs[:3], without)
    for k in range(3):
        assert results[k].status is Status.COMPLETE
        assert_same_rows(dirs[k], without[k])
        assert_same_result(dirs[k], without[k])


def test_overfit_batches_give_every_seed_the_same_batches(tmp_path):
    cfgs = configs(ADAM_GROUP[:2], "overfit_batches=3")
    cfgs[1].seed = 5
    run_fused_trials(cfgs, [tmp_path / "fused0", tmp_path / "fused1"])
    for k, cfg in enumerate(cfgs):
        run_trial(cfg, tmp_path / f"alone{k}")
        assert_same_rows(tmp_path / f"fused{k}", tmp_path / f"alone{k}")
        got = load_checkpoint(TrialFiles(tmp_path / f"fused{k}").last)["rng"]
        want = load_checkpoint(TrialFiles(tmp_path / f"alone{k}").last)["rng"]
        assert all(torch.equal(got[key], want[key]) for key in ("torch", "shuffle"))


def test_adamw_with_gradient_clipping_matches_run_trial(tmp_path):
    extra = (
        "optimizer._target_=torch.optim.AdamW",
        "optimizer.weight_decay=0.05",
        "grad_clip_norm=0.5",
    )
    cfgs = configs(ADAM_GROUP[1:3], *extra)
    run_fused_trials(cfgs, [tmp_path / "fused0", tmp_path / "fused1"])
    for k, cfg in enumerate(cfgs):
        run_trial(cfg, tmp_path / f"alone{k}")
        assert_same_rows(tmp_path / f"fused{k}", tmp_path / f"alone{k}")
        assert_same_result(tmp_path / f"fused{k}", tmp_path / f"alone{k}")


def test_two_trials_in_one_dir_are_refused(tmp_path):
    with pytest.raises(ValueError, match="distinct trial dir"):
        run_fused_trials(configs(ADAM_GROUP[:2]), [tmp_path / "a", tmp_path / "b" / ".." / "a"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("second", "key"),
    [
        (("batch_size=128",), "batch_size"),
        (("optimizer=sgd",), "optimizer._target_"),
        (("model=cnn",), "model._target_"),
        (("optimizer=rmsprop",), "optimizer._target_"),
        (("scheduler=cosine",), "scheduler"),
        (("model.hidden_sizes=[32,16]",), "model.hidden_sizes"),
        (("model.activation=tanh",), "model.activation"),
        (("epochs=4",), "epochs"),
        (("data.val_size=400",), "data.val_size"),
        (("augment=shift",), "augment.shift"),
        (("precision=bf16",), "precision"),
        (("label_smoothing=0.1",), "label_smoothing"),
    ],
)
def test_a_group_that_cannot_be_fused_is_refused_before_any_file(tmp_path, second, key):
    cfgs = [compose_config(*BASE), compose_config(*BASE, *second)]
    with pytest.raises(ValueError, match=f"cannot fuse these trials: {key} ") as caught:
        run_fused_trials(cfgs, [tmp_path / "a", tmp_path / "b"])
    value = OmegaConf.select(cfgs[1], key)
    if key == "scheduler":
        value = value._target_  # a group is named by its class
    assert repr(value if not isinstance(value, ListConfig) else list(value)) in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def killed_in_epoch(n, monkeypatch):
    """Make the group's n-th epoch of training raise KeyboardInterrupt (as SIGKILL, nothing
    after it runs: the checkpoints hold the epoch before)."""
    real, calls = fused_trials.train_epoch, []

    def train_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fused_trials, "train_epoch", train_epoch)


@pytest.mark.parametrize("group", [ADAM_GROUP, SGD_GROUP], ids=["adam", "sgd"])
def test_a_killed_group_resumes_bitwise_as_if_never_stopped(tmp_path, monkeypatch, group):
    def prune_after_1(epoch, row):
        return Status.PRUNED if epoch == 1 else None

    cfgs = configs(group)
    hooks = [None, prune_after_1, *[None] * (len(group) - 2)]
    whole = [tmp_path / f"whole{k}" for k in range(len(group))]
    run_fused_trials(cfgs, whole, hooks)

    dirs = [tmp_path / f"killed{k}" for k in range(len(group))]
    with monkeypatch.context() as patch:
        killed_in_epoch(3, patch)
        with pytest.raises(KeyboardInterrupt):
            run_fused_trials(cfgs, dirs, hooks)
    assert len(read_metrics(dirs[0])) == 2 and not TrialFiles(dirs[0]).result.exists()
    # the pruned trial ended in epoch 1; the others resume as one group after epoch 2
    survivors = [k for k in range(len(group)) if k != 1]
    run_fused_trials([cfgs[k] for k in survivors], [dirs[k] for k in survivors])
    for k in range(len(group)):
        got, want = read_metrics(dirs[k]), read_metrics(whole[k])
        drop_seconds = [{key: v for key, v in r.items() if key != "seconds"} for r in got]
        assert drop_seconds == [{key: v for key, v in r.items() if key != "seconds"} for r in want]
        got_model = load_checkpoint(TrialFiles(dirs[k]).last)["model"]
        want_model = load_checkpoint(TrialFiles(whole[k]).last)["model"]
        assert all(torch.equal(got_model[n], want_model[n]) for n in want_model)
        assert read_result(dirs[k]).test_acc == read_result(whole[k]).test_acc


def test_a_group_at_different_epochs_is_refused_before_any_file(tmp_path):
    cfgs = configs(ADAM_GROUP[:2], "epochs=2")
    run_trial(
        compose_config(*BASE, *ADAM_GROUP[0], "epochs=2", "checkpoint_every=1"), tmp_path / "a"
    )
    # a trial dir at epoch 2 of 2 next to a new one
    before = sorted(p.name for p in (tmp_path / "a").rglob("*"))
    with pytest.raises(
        ValueError,
        match="resumes after one epoch for all trials; these are a after epoch 2, b after epoch 0",
    ):
        run_fused_trials(cfgs, [tmp_path / "a", tmp_path / "b"])
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == before
    assert not (tmp_path / "b").exists()


def test_a_group_killed_in_a_final_report_resumes_by_epoch(tmp_path, monkeypatch):
    # Killed in trial a's final report: a stands after epoch 3 with no result, b after epoch 2.
    # They are at different epochs, so each resumes in a group of its epoch (here: alone).
    cfgs = configs(ADAM_GROUP[:2])
    dirs = [tmp_path / "a", tmp_path / "b"]
    with monkeypatch.context() as patch:
        patch.setattr(fused_trials, "final_report", Mock(side_effect=KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            run_fused_trials(cfgs, dirs)
    assert not TrialFiles(dirs[0]).result.exists()
    assert [len(read_metrics(d)) for d in dirs] == [3, 2]
    with pytest.raises(ValueError, match="a after epoch 3, b after epoch 2"):
        run_fused_trials(cfgs, dirs)

    results = [run_fused_trials([cfg], [d])[0] for cfg, d in zip(cfgs, dirs, strict=True)]
    assert [r.status for r in results] == [Status.COMPLETE] * 2
    assert [r.epochs_run for r in results] == [3, 3]
    assert all(TrialFiles(d).curves.exists() for d in dirs)
    for k, cfg in enumerate(cfgs):
        run_trial(cfg, tmp_path / f"alone{k}")
        assert_same_rows(dirs[k], tmp_path / f"alone{k}")
