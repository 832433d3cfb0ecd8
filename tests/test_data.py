import gzip
import re
import shutil
from pathlib import Path

import pytest
import torch

from hpsweep.data import (
    MNIST_MINI_DIR,
    Split,
    iterate_batches,
    load_raw,
    load_splits,
    read_idx,
)
from hpsweep.data import _splits as data
from hpsweep.data.make_mnist_mini import build
from hpsweep.errors import ConfigError


def test_mnist_mini_sizes_and_normalization():
    splits = load_splits("mnist_mini", val_size=2000)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (8000, 2000, 2000)
    assert splits.input_shape == (1, 28, 28)
    assert splits.num_outputs == 10
    # normalized with the training split's own statistics
    assert abs(splits.train.x.mean().item()) < 1e-4
    assert splits.train.x.std().item() == pytest.approx(1.0, abs=1e-4)
    assert splits.train.y.dtype == torch.long
    assert set(splits.train.y.unique().tolist()) == set(range(10))


def test_split_depends_on_split_seed_not_on_anything_else():
    a = load_splits("mnist_mini", val_size=500, train_size=1000)
    b = load_splits("mnist_mini", val_size=500, train_size=1000)
    c = load_splits("mnist_mini", val_size=500, train_size=1000, split_seed=1)
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.val.x, c.val.x)


def test_train_and_validation_images_are_disjoint():
    splits = load_splits("mnist_mini", val_size=2000)
    train_rows = {row.numpy().tobytes() for row in splits.train.x.flatten(1)}
    overlap = sum(row.numpy().tobytes() in train_rows for row in splits.val.x.flatten(1))
    # MNIST has a handful of exact duplicate images; a leaky split would share ~all 2000
    assert overlap <= 5


def test_lt3_task_is_binary_digit_below_three():
    splits = load_splits("mnist_mini", val_size=2000, task="lt3")
    labels = load_raw("mnist_mini")[3].long()
    assert splits.num_outputs == 1
    assert splits.test.y.shape == (2000, 1) and splits.test.y.dtype == torch.float32
    assert torch.equal(splits.test.y.squeeze(1), (labels < 3).float())
    assert 0.25 < splits.train.y.mean().item() < 0.35  # about 3 digits in 10


def test_shuffled_batches_cover_every_sample_once_in_a_new_order_each_epoch():
    split = Split(torch.arange(100).float().unsqueeze(1), torch.arange(100))
    gen = torch.Generator().manual_seed(0)
    epoch1 = torch.cat([y for _, y in iterate_batches(split, 32, gen)])
    epoch2 = torch.cat([y for _, y in iterate_batches(split, 32, gen)])
    assert sorted(epoch1.tolist()) == list(range(100)) == sorted(epoch2.tolist())
    assert not torch.equal(epoch1, epoch2)
    assert not torch.equal(epoch1, torch.arange(100))
    again = torch.cat([y for _, y in iterate_batches(split, 32, torch.Generator().manual_seed(0))])
    assert torch.equal(again, epoch1)
    sizes = [len(y) for _, y in iterate_batches(split, 32)]
    assert sizes == [32, 32, 32, 4]


def test_read_idx_rejects_a_truncated_file(tmp_path):
    raw = gzip.decompress((MNIST_MINI_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "labels").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "labels")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"val_size": 10_000}, "data.val_size"),
        ({"val_size": 0}, "data.val_size"),
        ({"val_size": 2000, "train_size": 8001}, "data.train_size"),
        ({"task": "parity"}, "data.task"),
    ],
)
def test_load_splits_rejects_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_splits("mnist_mini", **kwargs)
    assert info.value.key == key


def test_missing_full_dataset_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_splits("mnist", root=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "HPSWEEP_DATA_ROOT" in message and "data.download=true" in message


def test_fashion_mnist_falls_back_to_debian_layout(tmp_path, monkeypatch):
    # Debian's dataset-fashion-mnist ships flat *-ubyte.gz files, like our embedded set
    debian = tmp_path / "debian"
    shutil.copytree(MNIST_MINI_DIR, debian)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", debian)
    load_raw.cache_clear()
    try:
        splits = load_splits("fashion_mnist", root=str(tmp_path / "empty"), val_size=1000)
        assert (len(splits.train), len(splits.test)) == (9000, 2000)
    finally:
        load_raw.cache_clear()


def test_make_mnist_mini_reproduces_the_shipped_files(tmp_path, data_root):
    written = build(Path(data_root) / "MNIST" / "raw", tmp_path)
    assert len(written) == 4
    for path in written:
        assert path.read_bytes() == (MNIST_MINI_DIR / path.name).read_bytes(), path.name
    shipped = sum(p.stat().st_size for p in MNIST_MINI_DIR.iterdir())
    assert shipped < 3_000_000


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_full_datasets_load_from_data_root(dataset, data_root):
    splits = load_splits(dataset, root=data_root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert abs(splits.train.x.mean().item()) < 1e-4


def copy_mini(folder):
    """mnist_mini's four gzipped IDX files as <folder>/MNIST/raw: the torchvision layout."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in MNIST_MINI_DIR.iterdir():
        shutil.copy(path, raw / path.name)
    return raw


def test_a_folder_of_gzipped_idx_files_is_read_as_it_is(tmp_path):
    copy_mini(tmp_path)
    full = load_raw("mnist", str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(full, load_raw("mnist_mini"), strict=True))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x01")),
         "train-images-idx3-ubyte.gz is not an unsigned-byte IDX file"),
        (lambda raw: (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip"),
         "t10k-labels-idx1-ubyte.gz: Not a gzipped file"),
        (lambda raw: (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + bytes(5))),
         "labels (5,): expected N images of H x W and N labels"),
    ],
    ids=["bad magic number", "not gzip", "labels of the wrong length"],
)  # fmt: skip
def test_a_damaged_idx_file_is_refused_naming_it(tmp_path, damage, message):
    damage(copy_mini(tmp_path))
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        load_raw("mnist", str(tmp_path))
    assert refused.value.key == "data.root"
