"""A split's scores for its task, summed over one pass: the loss, and accuracy (and macro-F1)
or MSE, MAE and R2.

The sums stay on the device and become numbers once per pass: a .item() per step would be a
host sync every step on a GPU. (Keeping per-step tensors and reducing once per pass measured no
faster on this CPU.)
"""

import torch
from torch import Tensor

from hpsweep.data import Task


class Scores:
    def __init__(self, task: Task, device: torch.device):
        self.task, self.device = task, device
        self.seen = 0
        self.loss_sum = torch.zeros((), device=device)
        k = task.num_outputs
        if task.kind == "regression":  # per target, in float64: R2 subtracts two large sums
            self.sums = torch.zeros(4, k, dtype=torch.float64, device=device)
        else:
            self.correct = torch.zeros((), dtype=torch.long, device=device)
            if task.f1:  # multiclass: a confusion matrix; binary and multi-label: per label
                shape = (k * k,) if task.kind == "multiclass" else (3, k)
                self.counts = torch.zeros(shape, dtype=torch.long, device=device)

    def add(self, loss: Tensor, outputs: Tensor, y: Tensor) -> None:
        """One batch: its mean loss, the model's outputs (logits) and the targets."""
        n = len(y)
        self.seen += n
        self.loss_sum += loss.detach() * n
        outputs = outputs.detach()
        if self.task.kind == "regression":
            error = outputs.double() - y
            yd = y.double()
            self.sums += torch.stack([error.square(), error.abs(), yd, yd.square()]).sum(1)
        elif self.task.kind == "multiclass":
            predicted = outputs.argmax(dim=1)
            self.correct += (predicted == y).sum()
            if self.task.f1:
                k = self.task.num_outputs
                self.counts += torch.bincount(y * k + predicted, minlength=k * k)
        else:  # one logit per label: positive means 1
            predicted, truth = outputs > 0, y > 0.5
            hits = predicted == truth
            self.correct += hits.sum()
            if self.task.f1:
                self.counts += torch.stack(
                    [
                        (predicted & truth).sum(0),
                        (predicted & ~truth).sum(0),
                        (~predicted & truth).sum(0),
                    ]
                )

    def result(self) -> dict[str, float]:
        """The pass's scores by name (Task.metrics), as Python numbers."""
        if self.seen == 0:
            raise ValueError("a pass with no batches has no scores")
        n, task = self.seen, self.task
        scores = {"loss": self.loss_sum.item() / n}
        if task.kind == "regression":
            sq, ab, total, total_sq = self.sums.cpu()
            spread = total_sq - total.square() / n  # the targets' sum of squared deviations
            r2 = 1 - sq / spread.clamp_min(torch.finfo(torch.float64).tiny)
            k = task.num_outputs
            return scores | {
                "mse": float(sq.sum()) / (n * k),
                "mae": float(ab.sum()) / (n * k),
                "r2": float(r2.mean()),
            }
        labels = n * (1 if task.kind == "multiclass" else task.num_outputs)
        scores["acc"] = self.correct.item() / labels
        if task.f1:
            scores["f1"] = self._macro_f1()
        return scores

    def _macro_f1(self) -> float:
        if self.task.kind == "multiclass":
            k = self.task.num_outputs
            confusion = self.counts.cpu().reshape(k, k).double()
            tp = confusion.diag()
            fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
        else:
            tp, fp, fn = self.counts.cpu().double()
            if self.task.kind == "binary":  # both classes, as sklearn's f1_score(average="macro")
                n = self.seen
                tn = n - tp - fp - fn
                tp, fp, fn = torch.cat([tp, tn]), torch.cat([fp, fn]), torch.cat([fn, fp])
        denominator = 2 * tp + fp + fn
        # a class absent from both targets and predictions scores 0, as sklearn's zero_division=0
        f1 = torch.where(denominator > 0, 2 * tp / denominator.clamp_min(1), torch.zeros_like(tp))
        return float(f1.mean())
