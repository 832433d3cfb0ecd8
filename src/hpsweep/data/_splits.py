"""Datasets as in-memory tensors: read once per process, normalize, split, serve batches.

No per-sample transforms and no DataLoader: a whole split is one float tensor on the training
device, and a batch is an index into it. On full MNIST this is several times faster than the
classic `ToTensor` + `DataLoader` pipeline (see benchmarks/data_path.py).
"""

import functools
import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from hpsweep.errors import ConfigError

MNIST_MINI_DIR = Path(__file__).parent / "mnist_mini"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = {"mnist_mini": "MNIST", "mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# task -> number of model outputs. lt3 is the binary "digit < 3" task: one logit.
TASKS = {"multiclass": 10, "lt3": 1}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Split:
    x: Tensor  # float32 (N, C, H, W), normalized
    y: Tensor  # int64 (N,) for multiclass, float32 (N, 1) for a binary task

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split
    test: Split  # the official test set: evaluated once, on the best checkpoint, never to decide
    task: str
    blank: float = 0.0  # a black pixel, normalized: what a shift pads with (hpsweep.data.Augment)

    @property
    def num_outputs(self) -> int:
        return TASKS[self.task]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def read_idx(path: Path) -> Tensor:
    """An IDX file (the MNIST format), gzipped or not, as a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * d : 8 + 4 * d], "big") for d in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != torch.Size(shape).numel():
        raise ValueError(f"{path} is truncated: header says {shape}, body has {len(body)} bytes")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(folder: Path) -> tuple[Tensor, ...]:
    paths = [_idx_file(folder, name) for name in IDX_FILES.values()]
    return tuple(read_idx(p) for p in paths if p is not None)


def _has_idx_files(folder: Path) -> bool:
    return all(_idx_file(folder, name) for name in IDX_FILES.values())


@functools.lru_cache(maxsize=4)
def load_raw(dataset: str, root: str | None = None, download: bool = False) -> tuple[Tensor, ...]:
    """(train images, train labels, test images, test labels) as uint8 tensors.

    Cached per process, so the trials of one sweep worker read the files once.
    """
    if dataset == "mnist_mini":
        return _read_idx_folder(MNIST_MINI_DIR)

    folder = DATASETS[dataset]
    base = Path(root or "data").expanduser()
    looked_in = [base / folder / "raw"]
    if download or _has_idx_files(base / folder / "raw"):
        from torchvision import datasets  # ~0.5 s import, only needed for the full sets

        cls = getattr(datasets, folder)
        try:
            train = cls(str(base), train=True, download=download)
            test = cls(str(base), train=False, download=download)
        except (OSError, RuntimeError) as e:
            raise ConfigError(
                "data.download",
                download,
                f"reading or downloading {folder} into {base} failed: {e}",
            ) from e
        return train.data, train.targets.to(torch.uint8), test.data, test.targets.to(torch.uint8)

    if dataset == "fashion_mnist":
        looked_in.append(DEBIAN_FASHION_MNIST)
        if _has_idx_files(DEBIAN_FASHION_MNIST):
            return _read_idx_folder(DEBIAN_FASHION_MNIST)

    fixes = (
        f"Point HPSWEEP_DATA_ROOT (or data.root) at a folder holding {folder}/raw/*-ubyte "
        "(torchvision layout), or set data.download=true when online"
    )
    if dataset == "fashion_mnist":
        fixes += ", or `apt-get install dataset-fashion-mnist`"
    where = ", ".join(str(p.absolute()) for p in looked_in)
    raise ConfigError("data.root", root, f"{folder} not found; looked in {where}. {fixes}.")


# Cached too: a sweep worker's trials (a fused group's above all, which builds each of its
# trials) share one copy, read-only, instead of normalizing the images again for each.
@functools.lru_cache(maxsize=1)
def load_splits(
    dataset: str,
    root: str | None = None,
    download: bool = False,
    val_size: int = 10_000,
    train_size: int | None = None,
    task: str = "multiclass",
    split_seed: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """Train/validation split of the official training set, plus the official test set.

    The split depends on `split_seed` only, not on the run's seed, so every trial of a sweep is
    validated on the same images. Inputs are normalized with the training split's mean and std.
    """
    if dataset not in DATASETS:
        raise ConfigError("data.dataset", dataset, f"must be one of {', '.join(DATASETS)}")
    if task not in TASKS:
        raise ConfigError("data.task", task, f"must be one of {', '.join(TASKS)}")
    train_images, train_labels, test_images, test_labels = load_raw(dataset, root, download)

    n = len(train_images)
    if not 1 <= val_size < n:
        raise ConfigError(
            "data.val_size", val_size, f"must be in [1, {n}): {dataset} has {n} training images"
        )
    available = n - val_size
    if train_size is None:
        train_size = available
    if not 1 <= train_size <= available:
        raise ConfigError(
            "data.train_size",
            train_size,
            f"must be in [1, {available}] or null: {n} training images minus val_size={val_size}",
        )

    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size : val_size + train_size]

    # Statistics in [0, 1] units, the familiar ones (MNIST: mean 0.1307, std 0.3081).
    x_train = train_images[train_idx].float().div_(255)
    mean, std = x_train.mean(), x_train.std()
    del x_train

    def prepare(images: Tensor, labels: Tensor) -> Split:
        x = images.float().div_(255).sub_(mean).div_(std).unsqueeze(1)
        y = labels.long() if task == "multiclass" else (labels < 3).float().unsqueeze(1)
        return Split(x.to(device), y.to(device))

    return Splits(
        train=prepare(train_images[train_idx], train_labels[train_idx]),
        val=prepare(train_images[val_idx], train_labels[val_idx]),
        test=prepare(test_images, test_labels),
        task=task,
        blank=float(-mean / std),
    )


def iterate_batches(
    split: Split, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `split`, in a fresh random order per call when `generator` is given.

    The permutation is drawn on the CPU from the trial's own generator, whose state goes into
    every checkpoint, so a resumed run sees exactly the batches an uninterrupted one would.
    """
    n = len(split)
    if generator is None:
        for start in range(0, n, batch_size):
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.x[idx], split.y[idx]


def num_batches(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)
