"""Your own data, model and loss: the task follows from the targets (head width, loss, scores),
tables and image folders are data options, and a torch Dataset feeds a trial through a
DataLoader that resumes exactly."""

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import nn

from hpsweep.data import Split, Task, iterate_batches, load_raw
from hpsweep.errors import ConfigError
from hpsweep.job import build, load_checkpoint, run_trial
from hpsweep.record import TrialFiles
from tests.conftest import Interrupted, compose_config, interrupt_after, read_metrics


def write_table(path, kind, n=1500, seed=0):
    """Two numeric columns and a text one; the target a function of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y"], n)}
    )
    score = 2 * frame.a - frame.b + np.where(frame.c == "x", 1.5, 0.0)
    if kind == "three":
        frame["label"] = np.select([score < -0.5, score < 1.2], ["cat", "dog"], "emu")
    elif kind == "two":
        frame["label"] = (score > 0.7).astype(int)
    else:
        frame["label"] = score + 0.1 * rng.normal(size=n)
    frame.to_csv(path, index=False)
    return path


def table_config(path, *overrides):
    return compose_config(
        "data=table", f"data.path={path}", "data.target=label", "model.hidden_sizes=32", *overrides
    )


@pytest.mark.parametrize(("kind", "classes"), [("three", 3), ("two", 2)])
def test_class_labels_set_the_head_width_and_train_with_cross_entropy(tmp_path, kind, classes):
    cfg = table_config(write_table(tmp_path / "t.csv", kind), "epochs=4", "optimizer.lr=0.01")
    job = build(cfg)
    assert job.task.kind == "multiclass" and job.task.num_outputs == classes
    assert type(job.criterion) is nn.CrossEntropyLoss
    assert job.model(job.splits.train.x[:5]).shape == (5, classes)
    assert job.splits.train.x.shape[1] == 4  # a, b and the text column one-hot (x, y)

    result = run_trial(cfg, tmp_path / "trial")
    assert result.task == f"multiclass, {classes} classes"
    assert result.best_val_acc > 0.85  # chance: 1/3 and about 1/2
    last_layer = load_checkpoint(TrialFiles(tmp_path / "trial").best)["model"]
    assert last_layer[max(k for k in last_layer if k.endswith("weight"))].shape[0] == classes


def test_a_float_target_is_regression_with_mse_and_its_r2_rises(tmp_path):
    cfg = table_config(
        write_table(tmp_path / "t.csv", "regression"),
        "objective=val_mse",
        "epochs=5",
        "optimizer.lr=0.01",
    )
    job = build(cfg)
    assert job.task == Task("regression", 1) and type(job.criterion) is nn.MSELoss
    result = run_trial(cfg, tmp_path / "trial")
    rows = read_metrics(tmp_path / "trial")
    assert set(rows[0]) >= {"train_mse", "train_mae", "train_r2", "val_mse", "val_mae", "val_r2"}
    assert "val_acc" not in rows[0] and result.best_val_acc is None
    r2 = [row["val_r2"] for row in rows]
    assert r2[-1] > 0.9 and r2[-1] > r2[0]
    assert result.direction == "minimize" and result.value == min(r["val_mse"] for r in rows)

    # the logged scores are those of the best checkpoint's predictions, computed another way
    model = build(cfg).model
    model.load_state_dict(load_checkpoint(TrialFiles(tmp_path / "trial").best)["model"])
    model.eval()
    val = job.splits.val
    with torch.no_grad():
        error = model(val.x) - val.y
    assert result.scores["val_mse"] == pytest.approx(error.square().mean().item(), rel=1e-5)
    assert result.scores["val_mae"] == pytest.approx(error.abs().mean().item(), rel=1e-5)
    spread = (val.y - val.y.mean()).square().sum()
    assert result.scores["val_r2"] == pytest.approx(
        1 - (error.square().sum() / spread).item(), rel=1e-4
    )


def test_an_objective_the_task_does_not_log_is_refused_naming_those_it_does(tmp_path):
    cfg = table_config(write_table(tmp_path / "t.csv", "regression"), "objective=val_acc")
    with pytest.raises(ConfigError, match="val_mse, val_mae, val_r2"):
        run_trial(cfg, tmp_path / "trial")
    assert not (tmp_path / "trial").exists()


def own(cfg, **nodes):
    """The config with groups replaced by nodes of a user's own targets."""
    with open_dict(cfg):
        for name, node in nodes.items():
            cfg[name] = OmegaConf.create(node)
    return cfg


def test_own_datasets_and_an_own_model_without_the_shape_arguments_train(tmp_path):
    cfg = own(
        compose_config("epochs=3", "optimizer.lr=0.01"),
        data={"_target_": "tests.own_code.blob_datasets"},
        model={"_target_": "tests.own_code.TinyNet", "outputs": 4},
    )
    job = build(cfg)
    assert not isinstance(job.splits.train, Split)  # a Dataset: served by a DataLoader
    assert job.task == Task("multiclass", 4)
    result = run_trial(cfg, tmp_path / "trial")
    assert result.best_val_acc > 0.9 and result.test_acc > 0.9


def test_a_model_of_the_wrong_width_is_refused_before_training(tmp_path):
    cfg = own(
        compose_config(),
        data={"_target_": "tests.own_code.blob_tensors", "classes": 3},
        model={"_target_": "tests.own_code.TinyNet", "outputs": 10},
    )
    with pytest.raises(ConfigError, match=r"outputs \(2, 10\).*needs \(2, 3\)"):
        run_trial(cfg, tmp_path / "trial")
    assert not (tmp_path / "trial").exists()


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_a_dataset_split_resumes_bitwise_like_an_uninterrupted_run(tmp_path, workers):
    cfg = own(
        compose_config("epochs=3", "model.hidden_sizes=16"),
        data={"_target_": "tests.own_code.blob_datasets", "workers": workers},
    )
    run_trial(cfg, tmp_path / "straight")
    with pytest.raises(Interrupted):
        run_trial(cfg, tmp_path / "resumed", on_epoch_end=interrupt_after(1))
    run_trial(cfg, tmp_path / "resumed")
    straight, resumed = (TrialFiles(tmp_path / d) for d in ("straight", "resumed"))
    a, b = load_checkpoint(straight.last)["model"], load_checkpoint(resumed.last)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.read_metrics()]
    assert drop == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.read_metrics()]


def write_pngs(root, images, labels):
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.numpy()).save(folder / f"{i}.png")


def test_an_image_folder_learns_as_the_tensor_path_in_memory_and_as_a_dataset(tmp_path):
    train_images, train_labels, test_images, test_labels = load_raw("mnist_mini")
    write_pngs(tmp_path / "train", train_images[:3000], train_labels[:3000])
    write_pngs(tmp_path / "test", test_images[:1000], test_labels[:1000])
    folder = ("data=image_folder", f"data.root={tmp_path / 'train'}", "data.grayscale=true")
    folder += (f"data.test_root={tmp_path / 'test'}",)
    runs = {
        "memory": compose_config(*folder, "epochs=2"),
        "dataset": compose_config(*folder, "data.in_memory=false", "epochs=2"),
        "tensors": compose_config("data.train_size=2400", "data.val_size=600", "epochs=2"),
    }
    memory, dataset = build(runs["memory"]), build(runs["dataset"])
    assert isinstance(memory.splits.train, Split) and memory.train.x.shape[1:] == (1, 28, 28)
    assert not isinstance(dataset.splits.train, Split)
    assert len(memory.train) == len(dataset.train) == 2400 and len(dataset.splits.test) == 1000
    acc = {name: run_trial(cfg, tmp_path / name).best_val_acc for name, cfg in runs.items()}
    assert min(acc.values()) > 0.85, acc
    assert abs(acc["memory"] - acc["dataset"]) < 0.03, acc  # the same images, two paths
    assert abs(acc["memory"] - acc["tensors"]) < 0.04, acc  # other images of the same digits


def test_a_parquet_table_reads_as_its_csv(tmp_path):
    csv = write_table(tmp_path / "t.csv", "three")
    pd.read_csv(csv).to_parquet(tmp_path / "t.parquet")
    a, b = (build(table_config(tmp_path / name)).splits for name in ("t.csv", "t.parquet"))
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert torch.equal(getattr(a, split).y, getattr(b, split).y)


def test_dataset_batches_come_in_a_new_order_each_epoch_from_the_trials_generator():
    from tests.own_code import PairDataset, blobs

    dataset = PairDataset(*blobs(64, 3, 0))
    generator = torch.Generator().manual_seed(0)
    epochs = [torch.cat([y for _, y in iterate_batches(dataset, 16, generator)]) for _ in "ab"]
    assert not torch.equal(epochs[0], epochs[1])
    assert not torch.equal(epochs[0], dataset.y)  # not the stored order
    again = torch.Generator().manual_seed(0)
    assert torch.equal(torch.cat([y for _, y in iterate_batches(dataset, 16, again)]), epochs[0])


def macro_f1(truth, predicted, classes):
    """Macro-F1 the textbook way: per class precision and recall, absent classes score 0."""
    scores = []
    for c in range(classes):
        tp = ((predicted == c) & (truth == c)).sum().item()
        fp = ((predicted == c) & (truth != c)).sum().item()
        fn = ((predicted != c) & (truth == c)).sum().item()
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(scores) / classes


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel"])
def test_scores_of_a_split_equal_the_textbook_formulas_however_it_is_batched(kind):
    from hpsweep.job._metrics import Scores

    g = torch.Generator().manual_seed(0)
    if kind == "multiclass":
        task = Task("multiclass", 4, f1=True)
        outputs = torch.randn(100, 4, generator=g)
        y = torch.randint(0, 4, (100,), generator=g)
        acc = (outputs.argmax(1) == y).float().mean().item()
        f1 = macro_f1(y, outputs.argmax(1), 4)
    else:
        labels = 1 if kind == "binary" else 3
        task = Task(kind, labels, f1=True)
        outputs = torch.randn(100, labels, generator=g)
        y = (torch.rand(100, labels, generator=g) < 0.3).float()
        predicted = (outputs > 0).long()
        acc = (predicted == y.long()).float().mean().item()
        if kind == "binary":  # both classes, as sklearn's f1_score(average="macro")
            f1 = macro_f1(y.long().flatten(), predicted.flatten(), 2)
        else:  # each label's F1 of its positives, averaged over the labels
            f1 = (
                sum(
                    2
                    * ((predicted[:, j] == 1) & (y[:, j] == 1)).sum().item()
                    / (predicted[:, j].sum().item() + y[:, j].sum().item())
                    for j in range(labels)
                )
                / labels
            )
    for batch in (100, 7):
        scores = Scores(task, torch.device("cpu"))
        for start in range(0, 100, batch):
            part = slice(start, start + batch)
            scores.add(torch.tensor(0.5), outputs[part], y[part])
        result = scores.result()
        assert result["acc"] == pytest.approx(acc)
        assert result["f1"] == pytest.approx(f1)
        assert result["loss"] == pytest.approx(0.5)


@pytest.mark.slow
def test_a_torchvision_dataset_by_name_holds_the_images_of_the_built_in_option(data_root):
    splits = build(
        compose_config(
            "data=torchvision", "data.name=FashionMNIST", f"data.root={data_root}", "epochs=1"
        )
    ).splits
    raw_train, _, raw_test, raw_test_labels = load_raw("fashion_mnist", data_root)
    assert len(splits.train) + len(splits.val) == len(raw_train) == 60_000
    assert len(splits.val) == 6_000 and len(splits.test) == 10_000
    # the test split is the dataset's own, in order: the same pixels, normalized
    assert torch.equal(splits.test.y, raw_test_labels.long())
    # in float64: a float32 sum over 7.8 million pixels drifts past the 5th digit
    pixels = torch.stack([splits.test.x[:, 0].flatten(), raw_test.flatten()]).double()
    assert torch.corrcoef(pixels)[0, 1] > 0.99999


def test_a_torchvision_dataset_that_is_not_there_says_how_to_get_it(tmp_path):
    cfg = compose_config("data=torchvision", "data.name=KMNIST", f"data.root={tmp_path}")
    with pytest.raises(ConfigError, match=r"KMNIST not found.*data\.download=true"):
        build(cfg)
    with pytest.raises(ConfigError, match=r"data\.name='Kmnist': is not a torchvision dataset"):
        build(compose_config("data=torchvision", "data.name=Kmnist", f"data.root={tmp_path}"))
