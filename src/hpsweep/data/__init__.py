"""The data stage: datasets as in-memory tensors (read once per process, normalized, split),
shuffled batches drawn from the trial's own generator, and augmentation on the batch tensor.

`load_splits` is the `_target_` of the `data` config group; `Augment` that of `augment`.
"""

from hpsweep.data._augment import NO_FLIP_DATASETS, Augment
from hpsweep.data._splits import (
    MNIST_MINI_DIR,
    Split,
    Splits,
    iterate_batches,
    load_raw,
    load_splits,
    read_idx,
)

__all__ = [
    "MNIST_MINI_DIR",
    "NO_FLIP_DATASETS",
    "Augment",
    "Split",
    "Splits",
    "iterate_batches",
    "load_raw",
    "load_splits",
    "read_idx",
]
