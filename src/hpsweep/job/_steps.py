"""Train and evaluate steps: plain PyTorch, explicit arguments, numbers out."""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hpsweep.data import AnySplit, Task, iterate_batches, split_device
from hpsweep.job._metrics import Scores

EVAL_BATCH_SIZE = 1024  # no gradients kept: large batches are cheaper per sample
Batches = Iterable[tuple[Tensor, Tensor]]
# precision -> the dtype forward passes autocast to (None: plain float32). Weights, gradients
# and optimizer state stay float32 either way; bf16 needs no loss scaling.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def make_criterion(task: Task | int, label_smoothing: float = 0.0) -> nn.Module:
    """The task's loss (an int: the old spelling by output count, 1 for binary). Each takes raw
    logits or outputs: softmax and sigmoid happen inside, in a numerically stable form."""
    kind = _task(task).kind
    if kind == "regression":
        return nn.MSELoss()
    if kind in ("binary", "multilabel"):
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def _task(task: Task | int | None, outputs: Tensor | None = None) -> Task:
    """A Task as given, or the classification task of an output width (callers without data:
    one logit is binary, more are classes)."""
    if isinstance(task, Task):
        return task
    width = task if isinstance(task, int) else 1 if outputs is None else outputs.shape[1]
    return Task("binary", 1) if width == 1 else Task("multiclass", width)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    batches: Batches,
    grad_clip_norm: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    task: Task | None = None,
    on_step: Callable[[], object] | None = None,
) -> dict[str, float]:
    """One pass over `batches`; returns the pass's scores (`loss`, then the task's metrics).
    `task` None: classification, from the output width. `on_step`: called after each
    optimizer step (a per-batch learning-rate schedule's step)."""
    model.train()
    device = next(model.parameters()).device
    scores = None
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, autocast_dtype):
            outputs = model(x)
            loss = criterion(outputs, y)
        loss.backward()
        if grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()
        if on_step is not None:
            on_step()

        if scores is None:
            scores = Scores(_task(task, outputs), device)
        scores.add(loss, outputs, y)
    if scores is None:
        raise ValueError("train_one_epoch got no batches")
    return scores.result()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    split: AnySplit,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: Callable[[Batches], Batches] | None = None,
    autocast_dtype: torch.dtype | None = None,
    task: Task | None = None,
    num_workers: int = 0,
) -> dict[str, float]:
    """The scores over `split` in eval mode (`loss` first); the model's mode is restored after.

    `progress` wraps the batches (a bar, log lines): a large test set takes seconds."""
    was_training = model.training
    model.eval()
    device = split_device(split) or next(model.parameters()).device
    scores = None
    batches = iterate_batches(split, batch_size, device=device, num_workers=num_workers)
    for x, y in batches if progress is None else progress(batches):
        with autocast(device, autocast_dtype):
            outputs = model(x)
        outputs = outputs.float()  # the loss and the scores in float32, as in an fp32 run
        if scores is None:
            scores = Scores(_task(task, outputs), device)
        scores.add(criterion(outputs, y), outputs, y)
    model.train(was_training)
    if scores is None:
        raise ValueError("evaluate got an empty split")
    return scores.result()
