"""The data stage: what a `data` target returns (Splits: in-memory tensors or torch Datasets),
the task its targets make, shuffled batches drawn from the trial's own generator, and
augmentation on the batch tensor.

`load_splits` (the image sets), `load_table` (a CSV or Parquet table), `load_image_folder`
(class subfolders of images) and `load_torchvision` (a torchvision dataset by name) are
`_target_`s of the `data` config group; `Augment` that of
`augment`. A user's own data target returns `Splits`.
"""

from hpsweep.data._augment import Augment
from hpsweep.data._image_folder import load_image_folder, load_torchvision
from hpsweep.data._splits import (
    MNIST_MINI_DIR,
    AnySplit,
    Split,
    Splits,
    as_splits,
    iterate_batches,
    load_raw,
    load_splits,
    read_idx,
    split_device,
    targets_of,
)
from hpsweep.data._table import load_table
from hpsweep.data._task import TASK_KINDS, Task, as_targets, check_targets, infer_task

__all__ = [
    "MNIST_MINI_DIR",
    "TASK_KINDS",
    "AnySplit",
    "Augment",
    "Split",
    "Splits",
    "Task",
    "as_splits",
    "as_targets",
    "check_targets",
    "infer_task",
    "iterate_batches",
    "load_image_folder",
    "load_raw",
    "load_splits",
    "load_table",
    "load_torchvision",
    "read_idx",
    "split_device",
    "targets_of",
]
