"""Train and evaluate steps: plain PyTorch, explicit arguments, numbers out."""

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from hpsweep.data import Split, iterate_batches

EVAL_BATCH_SIZE = 1024  # no gradients kept: large batches are cheaper per sample
Batches = Iterable[tuple[Tensor, Tensor]]
# precision -> the dtype forward passes autocast to (None: plain float32). Weights, gradients
# and optimizer state stay float32 either way; bf16 needs no loss scaling.
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def make_criterion(num_outputs: int, label_smoothing: float = 0.0) -> nn.Module:
    # Both losses take raw logits: softmax/sigmoid happen inside, in a numerically stable form.
    if num_outputs == 1:
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def count_correct(logits: Tensor, y: Tensor) -> Tensor:
    if logits.shape[1] == 1:  # one logit: positive means class 1
        return ((logits > 0) == (y > 0.5)).sum()
    return (logits.argmax(dim=1) == y).sum()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    batches: Batches,
    grad_clip_norm: float | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """One pass over `batches`; returns (mean train loss, train accuracy)."""
    model.train()
    device = next(model.parameters()).device
    # Sums stay on the device: a .item() per step would be a host sync every step on a GPU.
    # (Keeping per-step tensors and reducing once per epoch measured no faster on this CPU.)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, autocast_dtype):
            logits = model(x)
            loss = criterion(logits, y)
        loss.backward()
        if grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()

        loss_sum += loss.detach() * len(y)
        correct += count_correct(logits.detach(), y)
        seen += len(y)
    if seen == 0:
        raise ValueError("train_one_epoch got no batches")
    return loss_sum.item() / seen, correct.item() / seen


@torch.no_grad()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    split: Split,
    batch_size: int = EVAL_BATCH_SIZE,
    progress: Callable[[Batches], Batches] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) over `split` in eval mode; the model's mode is restored after.

    `progress` wraps the batches (a bar, log lines): a large test set takes seconds."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), dtype=torch.long, device=split.x.device)
    batches = iterate_batches(split, batch_size)
    for x, y in batches if progress is None else progress(batches):
        with autocast(split.x.device, autocast_dtype):
            logits = model(x)
        logits = logits.float()  # the loss and the argmax in float32, as in an fp32 run
        loss_sum += criterion(logits, y) * len(y)
        correct += count_correct(logits, y)
    model.train(was_training)
    return loss_sum.item() / len(split), correct.item() / len(split)
