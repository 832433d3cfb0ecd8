"""Image datasets as Splits: a folder of class subfolders (torchvision's ImageFolder layout),
or any torchvision dataset class by name; decoded once into memory when the images fit (the
fast path), else a Dataset that a DataLoader decodes batch by batch.

    data=image_folder data.root=photos/train data.test_root=photos/test data.size=[64,64]
    data=torchvision data.name=CIFAR10 data.root=~/datasets data.download=true
"""

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from hpsweep.data._splits import Split, Splits
from hpsweep.errors import ConfigError

# Decoded float32 images up to this size go into memory (in_memory=null): a few seconds of
# decoding once per process, then batches are tensor indexing, several times faster.
MAX_IN_MEMORY_BYTES = 2 * 1024**3
# The normalization's mean and std come from at most this many training images, evenly spread:
# exact enough, and the same whichever path serves the batches.
STATS_IMAGES = 1000


def load_image_folder(
    root: str,
    test_root: str | None = None,
    size: Sequence[int] | None = None,
    grayscale: bool = False,
    val_size: float = 0.2,
    test_size: float = 0.2,
    split_seed: int = 0,
    in_memory: bool | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """Validation images are `val_size` of `root`'s, drawn by `split_seed` only; test images
    are `test_root`'s (same class names), or `test_size` of `root`'s without one. Images are
    resized to `size` ([height, width]; None: all must share one size), and normalized with
    one mean and std of the training images."""
    decode = _decoder(size, grayscale)
    folder = _image_folder(root, "data.root")
    test_folder = None if test_root is None else _test_folder(test_root, folder, root)
    return image_splits(
        folder, test_folder, decode, val_size, test_size, split_seed, in_memory, num_workers, device
    )


def load_torchvision(
    name: str,
    root: str | None = None,
    download: bool = False,
    size: Sequence[int] | None = None,
    grayscale: bool = False,
    val_size: float = 0.1,
    split_seed: int = 0,
    in_memory: bool | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """A torchvision image dataset by class name (CIFAR10, KMNIST, SVHN, ...), read from
    `root` in torchvision's layout, downloaded there only when `download` is true: its test
    split for testing, `val_size` of its training split for validation."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        raise ConfigError(
            "data.name", name, "is not a torchvision dataset class (e.g. CIFAR10, FashionMNIST)"
        )
    base = str(Path(root or "data").expanduser())
    params = inspect.signature(cls).parameters
    parts: list[dict[str, Any]]
    if "train" in params:
        parts = [{"train": True}, {"train": False}]
    elif "split" in params:
        parts = [{"split": "train"}, {"split": "test"}]
    else:
        raise ConfigError("data.name", name, "takes neither train= nor split=: not supported")
    try:
        train, test = (cls(base, download=download, **part) for part in parts)
    except (RuntimeError, OSError) as e:  # "Dataset not found. You can use download=True ..."
        raise ConfigError(
            "data.root",
            root,
            f"{name} not found or not readable in {base} ({e}); set data.download=true when "
            "online, or data.root to a folder holding it",
        ) from None
    decode = _decoder(size, grayscale)
    return image_splits(
        train, test, decode, val_size, 0.0, split_seed, in_memory, num_workers, device
    )


def image_splits(
    images: Any,
    test_images: Any | None,
    decode: Any,
    val_size: float,
    test_size: float,
    split_seed: int,
    in_memory: bool | None,
    num_workers: int,
    device: str | torch.device,
) -> Splits:
    """Splits of an image dataset (a torchvision one: item i is (image, label)) and its test
    set (None: `test_size` of `images`), decoded by `decode` into uint8 (C, H, W) tensors."""
    from torch.utils.data import Subset
    from torchvision import transforms

    for dataset in (images, test_images):
        if dataset is not None:
            dataset.transform = decode
    indices = _split_indices(
        len(images), val_size, None if test_images is not None else test_size, split_seed
    )
    shape = tuple(images[0][0].shape)  # (channels, height, width) after the decode steps
    mean, std = _stats(images, indices["train"])
    test_source = (test_images, range(len(test_images))) if test_images is not None else None
    sources = [  # train, val, test: the dataset and the indices of each
        (images, indices["train"]),
        (images, indices["val"]),
        test_source or (images, indices["test"]),
    ]
    classes = len(images.classes) if hasattr(images, "classes") else None
    blank = float(-mean / std)
    fits = len(images) * int(torch.Size(shape).numel()) * 4 <= MAX_IN_MEMORY_BYTES
    if in_memory if in_memory is not None else fits:
        train, val, test = (_decode(d, list(i), shape, mean, std, device) for d, i in sources)
        return Splits(train, val, test, num_classes=classes, blank=blank)
    normalize = transforms.Normalize([mean] * shape[0], [std] * shape[0])
    as_float = transforms.ConvertImageDtype(torch.float32)  # uint8 / 255
    for dataset in {id(d): d for d, _ in sources}.values():
        dataset.transform = transforms.Compose([decode, as_float, normalize])
    train_set, val_set, test_set = (Subset(d, list(i)) for d, i in sources)
    return Splits(
        train_set, val_set, test_set, num_classes=classes, blank=blank, num_workers=num_workers
    )


def _decoder(size: Sequence[int] | None, grayscale: bool) -> Any:
    """PIL image -> uint8 (C, H, W) tensor, gray and resized as asked."""
    from torchvision import transforms

    steps: list[Any] = [transforms.Grayscale()] if grayscale else []
    if size is not None:
        steps.append(transforms.Resize(list(size)))
    return transforms.Compose([*steps, transforms.PILToTensor()])


def _image_folder(root: str, key: str) -> Any:
    from torchvision.datasets import ImageFolder

    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(key, root, f"no such folder (looked in {path.absolute().parent})")
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as e:  # no class folders, or no images in them
        raise ConfigError(
            key, root, f"is not a folder of class subfolders of images: {e}"
        ) from None


def _test_folder(test_root: str, folder: Any, root: str) -> Any:
    test_folder = _image_folder(test_root, "data.test_root")
    if test_folder.classes != folder.classes:
        raise ConfigError(
            "data.test_root",
            test_root,
            f"has classes {test_folder.classes}; {root} has {folder.classes}",
        )
    return test_folder


def _split_indices(
    n: int, val_size: float, test_size: float | None, seed: int
) -> dict[str, Tensor]:
    drawn = {"val": val_size} | ({} if test_size is None else {"test": test_size})
    for split, fraction in drawn.items():
        if not 0 < fraction < 1:
            raise ConfigError(f"data.{split}_size", fraction, "must be a fraction in (0, 1)")
    if sum(drawn.values()) >= 1:
        raise ConfigError("data.val_size", val_size, "val_size + test_size must be < 1")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    indices, start = {}, 0
    for split, fraction in drawn.items():
        count = round(fraction * n)
        indices[split] = order[start : start + count]
        start += count
    indices["train"] = order[start:]
    for split, idx in indices.items():
        if len(idx) == 0:
            raise ConfigError(
                f"data.{split}_size", drawn.get(split), f"leaves no {split} images of {n}"
            )
    return indices


def _stats(images: Any, train: Tensor) -> tuple[float, float]:
    """One mean and std over the pixels (in [0, 1]) of up to STATS_IMAGES training images."""
    step = max(1, len(train) // STATS_IMAGES)
    pixels = torch.cat([images[int(i)][0].flatten().float() for i in train[::step]]).div_(255)
    return float(pixels.mean()), float(pixels.std())


def _decode(
    folder: Any, idx: list[int], shape: tuple[int, ...], mean: float, std: float, device: Any
) -> Split:
    images = torch.empty((len(idx), *shape), dtype=torch.uint8)
    labels = torch.empty(len(idx), dtype=torch.long)
    for row, i in enumerate(idx):
        image, label = folder[int(i)]
        if tuple(image.shape) != shape:
            path = folder.samples[int(i)][0] if hasattr(folder, "samples") else f"image {i}"
            raise ConfigError(
                "data.size",
                None,
                f"{path} is {tuple(image.shape)}, the first image {shape}: set data.size=[h,w]",
            )
        images[row], labels[row] = image, label
    x = images.float().div_(255).sub_(mean).div_(std)
    return Split(x.to(device), labels.to(device))
