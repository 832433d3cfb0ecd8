"""The `hpsweep-train` command as a user runs it: fresh processes, from an unrelated folder."""

import pytest
from omegaconf import OmegaConf

from hpsweep.record import Status, TrialFiles
from tests.conftest import read_result, run_cli


def test_defaults_train_on_embedded_data_and_write_all_trial_files(tmp_path):
    proc = run_cli("hydra.run.dir=trial", cwd=tmp_path, env={"HPSWEEP_DATA_ROOT": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    files = TrialFiles(tmp_path / "trial")
    for path in (files.metrics, files.result, files.curves, files.last, files.best):
        assert path.stat().st_size > 0, path
    assert (files.dir / ".hydra" / "config.yaml").is_file()
    assert "epoch 3/3" in (files.dir / "train.log").read_text()
    result = files.read_result()
    assert result.epochs_run == 3 and result.status is Status.COMPLETE
    assert result.best_val_acc >= 0.90
    assert result.test_acc >= 0.85


def test_pigeon_experiment_learns_digit_below_three(tmp_path):
    proc = run_cli("+experiment=pigeon", "hydra.run.dir=trial", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = read_result(tmp_path / "trial")
    assert result.num_params == 784 * 30 + 30 + 30 * 1 + 1  # 784-30-1, one logit
    assert result.epochs == 10  # the experiment's value, not train.yaml's
    assert result.best_val_acc >= 0.90
    rows = TrialFiles(tmp_path / "trial").read_metrics()
    assert rows[0]["train_acc"] < rows[-1]["train_acc"]


def test_cfg_job_prints_the_composed_config_from_any_folder(tmp_path):
    proc = run_cli("--cfg", "job", "model=cnn", "optimizer=rmsprop", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "_target_: hpsweep.models.CNN" in proc.stdout
    assert "_target_: torch.optim.RMSprop" in proc.stdout
    assert not (tmp_path / "outputs").exists()


BAD_INPUTS = [
    # (override, what the message must contain)
    ("optimizer.lr=-1", ["optimizer.lr=-1:", "must be > 0"]),
    ("optimizer.lr=0", ["optimizer.lr=0", "must be > 0"]),
    ("optimizer.lr=inf", ["optimizer.lr=inf", "must be a finite number"]),
    ("model.dropout=nan", ["model.dropout=nan", "must be a finite number"]),
    ("optimizer=sgd optimizer.momentum=-0.5", ["optimizer.momentum=-0.5", "must be >= 0"]),
    ("batch_size=0", ["batch_size=0", "must be >= 1"]),
    ("epochs=0", ["epochs=0", "must be >= 1"]),
    ("data.val_size=10000", ["data.val_size=10000", "10000 training images"]),
    ("data.task=parity", ["data.task='parity'", "multiclass, lt3"]),
    ("device=tpu", ["device='tpu'", "auto, cpu, cuda, cuda:N"]),
    ("device=cuda:99", ["device='cuda:99'"]),
    (
        "objective=test_acc",
        ["objective='test_acc'", "must be val_ or train_ and a metric: loss, acc"],
    ),
    ("model.activation=swish", ["model.activation='swish'", "relu"]),
    ("data=mnist", ["data.root=", "MNIST not found", "HPSWEEP_DATA_ROOT"]),
    ("overfit_batches=1000", ["overfit_batches=1000", "8000 training images"]),
    # caught by Hydra at composition: unknown key, wrong type, unknown group option
    ("epochz=3", ["epochz"]),
    ("epochs=three", ["epochs", "three"]),
    ("optimizer=lbfgs", ["optimizer/lbfgs", "adagrad", "adam", "rmsprop", "sgd"]),
]


@pytest.mark.parametrize(("override", "expected"), BAD_INPUTS, ids=[o for o, _ in BAD_INPUTS])
def test_bad_input_is_rejected_before_any_work_with_a_clear_message(tmp_path, override, expected):
    proc = run_cli(
        *override.split(),
        "hydra.run.dir=trial",
        cwd=tmp_path,
        env={"HPSWEEP_DATA_ROOT": str(tmp_path)},
    )
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "trial").exists()  # not even .hydra/ or an empty train.log


@pytest.mark.parametrize(
    "refused",
    [
        pytest.param(("epochs=2", "optimizer.lr=-1"), marks=pytest.mark.slow, id="bad value"),
        pytest.param(("epochs=2", "optimizer.lr=0.01"), id="resume with another lr"),
        pytest.param(("model=cnn",), marks=pytest.mark.slow, id="resume with another model"),
    ],
)
def test_refused_run_leaves_an_existing_trial_dir_byte_identical(tmp_path, refused):
    assert run_cli("hydra.run.dir=trial", "epochs=1", cwd=tmp_path).returncode == 0
    files = sorted(p for p in (tmp_path / "trial").rglob("*") if p.is_file())
    assert len(files) >= 9  # .hydra/ (3), train.log, metrics, result, curves, last, best
    before = {p: p.read_bytes() for p in files}
    proc = run_cli("hydra.run.dir=trial", *refused, cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert sorted(p for p in (tmp_path / "trial").rglob("*") if p.is_file()) == files
    assert before == {p: p.read_bytes() for p in files}


def test_truncated_checkpoint_is_reported_clearly(tmp_path):
    assert run_cli("hydra.run.dir=trial", "epochs=1", cwd=tmp_path).returncode == 0
    files = TrialFiles(tmp_path / "trial")
    files.best.unlink()
    files.last.write_bytes(files.last.read_bytes()[:5000])
    proc = run_cli("hydra.run.dir=trial", "epochs=2", cwd=tmp_path)
    assert proc.returncode != 0
    assert "last.pt is unreadable (truncated or corrupt)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(files.read_metrics()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "min_val_acc"), [("mnist", 0.9), ("fashion_mnist", 0.75)])
def test_full_dataset_trains_one_epoch(tmp_path, data_root, dataset, min_val_acc):
    proc = run_cli(
        f"data={dataset}",
        "epochs=1",
        "hydra.run.dir=trial",
        cwd=tmp_path,
        env={"HPSWEEP_DATA_ROOT": data_root},
    )
    assert proc.returncode == 0, proc.stderr
    result = read_result(tmp_path / "trial")
    assert result.epochs_run == 1
    assert result.best_val_acc >= min_val_acc
    assert result.test_acc >= min_val_acc - 0.05  # the 10,000 official test images


@pytest.mark.slow
def test_fashion_cnn_experiment_builds_the_benchmarks_cnn_and_learns(tmp_path, data_root):
    proc = run_cli(
        "+experiment=fashion_cnn",
        "epochs=1",
        "hydra.run.dir=trial",
        cwd=tmp_path,
        env={"HPSWEEP_DATA_ROOT": data_root},
    )
    assert proc.returncode == 0, proc.stderr
    config = OmegaConf.load(tmp_path / "trial" / ".hydra" / "config.yaml")
    assert config.data.dataset == "fashion_mnist" and config.model.batch_norm is True
    result = read_result(tmp_path / "trial")
    assert result.best_val_acc >= 0.85  # one epoch; ten reach about 0.918


@pytest.mark.slow
def test_the_fashion_sweep_preset_runs_as_a_user_starts_it(tmp_path, data_root):
    # the preset's own settings but for size: 3 trials of 2 epochs on 2,000 images
    proc = run_cli(
        "-m",
        "sweep=fashion",
        "epochs=2",
        "data.train_size=2000",
        "data.val_size=500",
        "hydra.sweeper.n_trials=3",
        cwd=tmp_path,
        env={"HPSWEEP_DATA_ROOT": data_root},
    )
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "multirun" / "fashion"
    results = [read_result(sweep / f"trial_{i:04d}") for i in range(3)]
    assert all(r.status in (Status.COMPLETE, Status.PRUNED) for r in results)
    assert any(r.status is Status.COMPLETE and r.best_val_acc > 0.5 for r in results)
    config = OmegaConf.load(sweep / "trial_0000" / ".hydra" / "config.yaml")
    assert config.augment.hflip and config.precision == "bf16" and config.channels_last
    assert config.model._target_ == "hpsweep.models.VGG"
    log = (sweep / "trial_0000" / "train.log").read_text()
    assert "bf16, channels-last | augment shift 2, flips" in log


@pytest.mark.slow
def test_fashion_vgg_experiment_learns_in_three_epochs(tmp_path, data_root):
    proc = run_cli(
        "experiment=fashion_vgg",
        "epochs=3",  # the schedule in small: warm-up, the peak learning rate, decay
        "data.train_size=10000",
        "data.val_size=2000",  # scored on 2,000 images each epoch, not 10,000
        "hydra.run.dir=trial",
        cwd=tmp_path,
        env={"HPSWEEP_DATA_ROOT": data_root},
    )
    assert proc.returncode == 0, proc.stderr
    result = read_result(tmp_path / "trial")
    assert result.num_params == 72_666
    losses = [row["train_loss"] for row in TrialFiles(tmp_path / "trial").read_metrics()]
    assert losses[0] > losses[1] > losses[2]
    # 0.80 here, from 10,000 images; 27 epochs of 50,000 reach 0.938
    assert result.best_val_acc >= 0.75


def test_multirun_writes_one_complete_trial_dir_per_combination(tmp_path):
    proc = run_cli(
        "-m",
        "optimizer=sgd,adam",
        "model.hidden_sizes=16,64",
        "epochs=1",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    results = {
        p.parent.name: read_result(p.parent) for p in (tmp_path / "sweep").glob("*/result.json")
    }
    assert sorted(results) == ["0", "1", "2", "3"]
    assert all(r.status is Status.COMPLETE and r.best_val_acc > 0.8 for r in results.values())
    params = {r.num_params for r in results.values()}
    assert params == {784 * h + h + h * 10 + 10 for h in (16, 64)}
