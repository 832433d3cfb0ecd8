"""A user's own code, as config targets name it (`tests.own_code.X`): data targets that return
what the contract allows or refuses, and a model that takes neither input_shape nor
num_outputs."""

import torch
from torch import nn
from torch.utils.data import Dataset

from hpsweep.data import Split, Splits


def blobs(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs in 8 dimensions, one per class: learnable in an epoch or two."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 8, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, 8, generator=g), y


class PairDataset(Dataset):
    """A map-style Dataset of (input, label) pairs, with no `targets`: read item by item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def blob_datasets(classes: int = 4, workers: int = 0) -> dict:
    """A mapping with Splits' keys, of Datasets: taken as Splits."""
    parts = [PairDataset(*blobs(n, classes, seed)) for n, seed in ((600, 0), (200, 1), (200, 2))]
    return dict(zip(("train", "val", "test"), parts, strict=True)) | {"num_workers": workers}


def blob_tensors(classes: int = 4, device: str = "cpu") -> Splits:
    parts = [Split(*blobs(n, classes, seed)) for n, seed in ((600, 0), (200, 1), (200, 2))]
    return Splits(*parts)


def returns_a_list() -> list:
    return [1, 2, 3]


def returns_an_empty_split() -> Splits:
    x, y = blobs(100, 3, 0)
    return Splits(Split(x, y), Split(x[:0], y[:0]), Split(x, y))


def val_labels_beyond_train() -> Splits:
    """Three classes in training, a fourth in validation (the contract asks num_classes)."""
    x, y = blobs(300, 3, 0)
    return Splits(Split(x, y), Split(x[:10], torch.full((10,), 3)), Split(x, y))


class TinyNet(nn.Module):
    """Takes neither input_shape nor num_outputs: 8 inputs, `outputs` outputs."""

    def __init__(self, outputs: int = 4, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
