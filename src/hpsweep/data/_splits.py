"""The data contract (Splits) and the image sets: read once per process, normalized, split.

Two paths for a batch. In memory: a whole split is one tensor on the training device, and a
batch is an index into it; on full MNIST several times faster than the classic `ToTensor` +
`DataLoader` pipeline (benchmarks/data_path.py). A torch Dataset: a DataLoader serves it, for
data that does not fit in memory or is decoded per sample.
"""

import functools
import gzip
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from hpsweep.data._task import Task, as_targets, infer_task, labels_of
from hpsweep.errors import ConfigError

MNIST_MINI_DIR = Path(__file__).parent / "mnist_mini"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = {"mnist_mini": "MNIST", "mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
# The image sets' tasks: their 10 classes, or lt3, the binary "digit < 3" (one logit).
TASKS = ("multiclass", "lt3")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Split:
    """A split held in memory: a batch is an index into these tensors (the fast path)."""

    x: Tensor  # inputs, e.g. float32 (N, C, H, W) images, normalized
    y: Tensor  # targets as data._task says: int64 (N,) labels, or float32 (N, outputs)

    def __len__(self) -> int:
        return len(self.y)


class MapDataset(Protocol):
    """A map-style torch Dataset (torch.utils.data.Dataset with a length): item i is an
    (input, target) pair."""

    def __getitem__(self, index: int) -> Any: ...

    def __len__(self) -> int: ...


# A split is in memory (Split) or a map-style Dataset served by a DataLoader (data that does not
# fit in memory, or is decoded per sample).
AnySplit = Split | MapDataset


@dataclass(frozen=True)
class Splits:
    """What a `data` target returns: three splits, and what the dataset says of its task."""

    train: AnySplit
    val: AnySplit
    test: AnySplit  # evaluated once, on the best checkpoint, never to decide
    task: str | None = None  # a data._task kind; None: from the training targets
    num_classes: int | None = None  # multiclass: None = the largest training label + 1
    blank: float = 0.0  # a black pixel, normalized: what a shift pads with (hpsweep.data.Augment)
    num_workers: int = 0  # DataLoader worker processes for Dataset splits (0: in the trial's)

    @functools.cached_property
    def inferred_task(self) -> Task:
        """The task, from the declaration and the training targets (read once)."""
        return infer_task(targets_of(self.train), self.task, self.num_classes)

    @property
    def num_outputs(self) -> int:
        return self.inferred_task.num_outputs

    @property
    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.train, Split):
            return tuple(self.train.x.shape[1:])
        return tuple(torch.as_tensor(self.train[0][0]).shape)


def targets_of(split: AnySplit) -> Tensor:
    """A split's targets as one tensor; a Dataset without `targets` is read item by item."""
    if isinstance(split, Split):
        return split.y
    labels = labels_of(split)
    if labels is not None:
        return labels
    return as_targets([torch.as_tensor(split[i][1]) for i in range(len(split))])  # type: ignore[arg-type]


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
    """The four IDX files, checked: images (N, H, W) with N labels each; ConfigError naming
    the file that is damaged, truncated or of the wrong length."""
    paths = [_idx_file(folder, name) for name in IDX_FILES.values()]
    tensors = []
    for path in paths:
        assert path is not None  # _has_idx_files said so
        try:
            tensors.append(read_idx(path))
        except (OSError, EOFError, ValueError) as e:  # gzip's errors are OSError and EOFError
            why = str(e) if str(path) in str(e) else f"{path}: {e}"  # gzip's say no path
            raise ConfigError("data.root", str(folder), why) from None
    for images, labels, image_path, label_path in (
        (tensors[0], tensors[1], paths[0], paths[1]),
        (tensors[2], tensors[3], paths[2], paths[3]),
    ):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(
                "data.root",
                str(folder),
                f"{image_path} holds images {tuple(images.shape)} and {label_path} labels "
                f"{tuple(labels.shape)}: expected N images of H x W and N labels",
            )
    return tuple(tensors)


def _has_idx_files(folder: Path) -> bool:
    return all(_idx_file(folder, name) for name in IDX_FILES.values())


@functools.lru_cache(maxsize=4)
def load_raw(dataset: str, root: str | None = None, download: bool = False) -> tuple[Tensor, ...]:
    """(train images, train labels, test images, test labels) as uint8 tensors.

    Cached per process, so the trials of one sweep worker read the files once. The IDX files
    (gzipped or not) are read here; torchvision only downloads them, when asked.
    """
    if dataset == "mnist_mini":
        return _read_idx_folder(MNIST_MINI_DIR)

    folder = DATASETS[dataset]
    base = Path(root or "data").expanduser()
    raw = base / folder / "raw"
    looked_in = [raw]
    if download and not _has_idx_files(raw):
        from torchvision import datasets  # ~0.5 s import, only needed to download

        try:
            for train in (True, False):
                getattr(datasets, folder)(str(base), train=train, download=True)
        except (OSError, RuntimeError) as e:
            raise ConfigError(
                "data.download", download, f"downloading {folder} into {base} failed: {e}"
            ) from e
    if _has_idx_files(raw):
        return _read_idx_folder(raw)

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
        task="multiclass" if task == "multiclass" else "binary",
        num_classes=10 if task == "multiclass" else None,
        blank=float(-mean / std),
    )


def iterate_batches(
    split: AnySplit,
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    num_workers: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of `split`, in a fresh random order per call when `generator` is given.

    The order is drawn on the CPU from the trial's own generator, whose state goes into every
    checkpoint, so a resumed run sees exactly the batches an uninterrupted one would. A
    Dataset split goes through a DataLoader that draws from the same generator (its order and
    its workers' seeds); its batches are moved to `device`.
    """
    if not isinstance(split, Split):
        yield from _loader_batches(split, batch_size, generator, device, num_workers)
        return
    n = len(split)
    if generator is None:
        for start in range(0, n, batch_size):
            yield split.x[start : start + batch_size], split.y[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield split.x[idx], split.y[idx]


def _loader_batches(
    dataset: MapDataset,
    batch_size: int,
    generator: torch.Generator | None,
    device: torch.device | None,
    num_workers: int,
) -> Iterator[tuple[Tensor, Tensor]]:
    device = device or torch.device("cpu")
    loader: DataLoader = DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=generator is not None,
        # Its workers' seeds are drawn from this generator too: an evaluation's own, so that
        # it leaves the global RNG (dropout's) as it found it.
        generator=generator if generator is not None else torch.Generator(),
        num_workers=num_workers,
        pin_memory=device.type == "cuda",  # page-locked: the copy below overlaps compute
    )
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise ValueError(
                f"a Dataset item must be an (input, target) pair; its batches came as "
                f"{type(batch).__name__}"
            )
        x, y = batch
        yield x.to(device, non_blocking=True), as_targets(y).to(device, non_blocking=True)


def split_device(split: AnySplit) -> torch.device | None:
    """Where a split's tensors are; None for a Dataset (its batches go where the model is)."""
    return split.x.device if isinstance(split, Split) else None


KEY = "data._target_"  # what a refused data target is named by
CONTRACT = (
    "hpsweep.data.Splits(train=..., val=..., test=...), each split a hpsweep.data.Split of "
    "tensors or a map-style torch Dataset of (input, target) pairs"
)


def as_splits(value: Any, target: str) -> Splits:
    """What a `data` target returned, as Splits, checked; ConfigError naming the target, what
    it returned and what is expected. A mapping with the same keys is taken as Splits, and a
    DataLoader as its Dataset (its batch size and order are the trial's to choose)."""
    if isinstance(value, Mapping) and {"train", "val", "test"} <= set(value):
        try:
            value = Splits(**value)
        except TypeError as e:
            raise ConfigError(KEY, target, f"returned a mapping Splits refuses: {e}") from None
    if not isinstance(value, Splits):
        raise ConfigError(KEY, target, f"returned {_what(value)}; expected {CONTRACT}")
    workers, parts = value.num_workers, {}
    for name in ("train", "val", "test"):
        split = getattr(value, name)
        if isinstance(split, DataLoader):
            workers = max(workers, split.num_workers)
            split = split.dataset
        _check_split(split, name, target)
        parts[name] = split
    return replace(value, **parts, num_workers=workers)


def _check_split(split: Any, name: str, target: str) -> None:
    if isinstance(split, Split):
        if not isinstance(split.x, Tensor) or not isinstance(split.y, Tensor):
            raise ConfigError(KEY, target, f"its {name} Split must hold two tensors, x and y")
        if len(split.x) != len(split.y):
            raise ConfigError(
                KEY,
                target,
                f"its {name} split has {len(split.x)} inputs and {len(split.y)} targets",
            )
    elif not (hasattr(split, "__getitem__") and hasattr(split, "__len__")):
        raise ConfigError(
            KEY, target, f"its {name} split is {_what(split)}; expected a Split or {CONTRACT}"
        )
    if len(split) == 0:
        raise ConfigError(KEY, target, f"its {name} split is empty")


def _what(value: Any) -> str:
    if value is None:
        return "None"
    kind = type(value)
    module = "" if kind.__module__ == "builtins" else f"{kind.__module__}."
    return f"a {module}{kind.__qualname__}"
