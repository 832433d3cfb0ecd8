"""What a dataset asks of the model and the loss: the task, read from its training targets.

    multiclass   int64 labels (N,), K >= 2 classes      K logits, CrossEntropyLoss
    binary       float targets (N, 1) of 0 and 1        1 logit, BCEWithLogitsLoss
    multilabel   float targets (N, L) of 0 and 1, L > 1 L logits, BCEWithLogitsLoss
    regression   float targets (N, T), any values       T outputs, MSELoss

A dataset may declare its task (`Splits.task`) and its class count (`Splits.num_classes`, for
labels of which the training split misses the last classes); else both follow from the labels.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hpsweep.errors import ConfigError

TASK_KINDS = ("multiclass", "binary", "multilabel", "regression")
# A class (or a label's 0 or 1) this many times as frequent as the rarest one: accuracy alone
# would flatter a model that ignores the rare classes, so macro-F1 is logged too.
UNBALANCED = 1.5


@dataclass(frozen=True)
class Task:
    kind: str  # one of TASK_KINDS
    num_outputs: int  # classes, labels or regression targets; 1 for binary
    f1: bool = False  # macro-F1 logged beside accuracy (unbalanced classes, multi-label)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The names each split's scores take, `loss` first (metrics.csv: train_<name>, ...)."""
        if self.kind == "regression":
            return ("loss", "mse", "mae", "r2")
        return ("loss", "acc", "f1") if self.f1 else ("loss", "acc")

    def describe(self) -> str:
        n = self.num_outputs
        return {
            "multiclass": f"multiclass, {n} classes",
            "binary": "binary",
            "multilabel": f"multilabel, {n} labels",
            "regression": f"regression, {n} target{'s' if n > 1 else ''}",
        }[self.kind]


def infer_task(y: Tensor, declared: str | None = None, num_classes: int | None = None) -> Task:
    """The task of the training targets `y` (all of them), checked against what the dataset
    declares; ConfigError naming data.task when the targets cannot be that task."""
    if declared is not None and declared not in TASK_KINDS:
        raise ConfigError("data.task", declared, f"must be one of {', '.join(TASK_KINDS)}")
    if len(y) == 0:
        raise ConfigError("data", "train", "the training split is empty")
    floating = y.is_floating_point()
    kind = declared or _kind_of(y, floating)
    if kind == "multiclass":
        return _multiclass(y, floating, num_classes)
    if floating is False or y.ndim != 2:
        raise ConfigError(
            "data.task",
            kind,
            f"{kind} targets must be float32 of shape (N, outputs); got {_describe(y)}",
        )
    if kind == "regression":
        return Task("regression", y.shape[1])
    if not bool(((y == 0) | (y == 1)).all()):
        raise ConfigError("data.task", kind, f"{kind} targets must be 0 or 1; got other values")
    if kind == "binary" and y.shape[1] != 1:
        raise ConfigError("data.task", kind, f"binary targets are (N, 1); got {_describe(y)}")
    positives = y.sum(0)
    counts = torch.stack([positives, len(y) - positives])
    unbalanced = kind == "multilabel" or _unbalanced(counts.flatten())
    return Task(kind, y.shape[1], f1=unbalanced)


def _kind_of(y: Tensor, floating: bool) -> str:
    if not floating:
        return "multiclass"
    if y.ndim == 2 and bool(((y == 0) | (y == 1)).all()):
        return "binary" if y.shape[1] == 1 else "multilabel"
    return "regression"


def _multiclass(y: Tensor, floating: bool, num_classes: int | None) -> Task:
    if floating or y.ndim != 1:
        raise ConfigError(
            "data.task",
            "multiclass",
            f"class labels must be int64 of shape (N,); got {_describe(y)}",
        )
    low, high = int(y.min()), int(y.max())
    if low < 0:
        raise ConfigError("data", "labels", f"class labels must be >= 0; found {low}")
    k = num_classes if num_classes is not None else high + 1
    if high >= k:
        raise ConfigError(
            "data.num_classes", k, f"labels go up to {high}: the data has at least {high + 1}"
        )
    if k < 2:
        raise ConfigError("data", "labels", "the training labels hold one class only")
    return Task("multiclass", k, f1=_unbalanced(torch.bincount(y, minlength=k)))


def _unbalanced(counts: Tensor) -> bool:
    low = int(counts.min())
    return low == 0 or int(counts.max()) > UNBALANCED * low


def _describe(y: Tensor) -> str:
    return f"{str(y.dtype).removeprefix('torch.')} {tuple(y.shape)}"


def check_targets(y: Tensor, task: Task, split: str) -> None:
    """A validation or test split's targets fit the training split's task."""
    if task.kind == "multiclass":
        ok = not y.is_floating_point() and y.ndim == 1
        if ok and len(y) and (int(y.min()) < 0 or int(y.max()) >= task.num_outputs):
            raise ConfigError(
                "data",
                split,
                f"{split} labels go from {int(y.min())} to {int(y.max())}; the training labels "
                f"have {task.num_outputs} classes (0 to {task.num_outputs - 1}); declare "
                "num_classes if the training split misses some",
            )
    else:
        ok = y.is_floating_point() and y.ndim == 2 and y.shape[1] == task.num_outputs
    if not ok:
        raise ConfigError(
            "data",
            split,
            f"{split} targets are {_describe(y)}; the training split's are those of a "
            f"{task.kind} task with {task.num_outputs} output(s)",
        )


def labels_of(dataset: Any) -> Tensor | None:
    """All targets of a map-style Dataset without decoding its inputs, where it keeps them
    (`targets`, as torchvision's datasets do; a Subset of one); None when it does not."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        inner = labels_of(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    return as_targets(targets)


def as_targets(values: Tensor | Sequence[Any]) -> Tensor:
    """Targets as the task contract has them: ints as int64 (N,), floats as float32 (N, T)."""
    y = values if isinstance(values, Tensor) else torch.as_tensor(values)
    if y.is_floating_point():
        y = y.float()
        return y.unsqueeze(1) if y.ndim == 1 else y
    if y.dtype == torch.bool:
        return y.float().reshape(len(y), -1)
    return y.long()
