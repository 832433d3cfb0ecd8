"""Learning-rate schedules torch does not ship as one class, stepped once per epoch like the
`scheduler/` group's others (their state goes into every checkpoint)."""

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from hpsweep.errors import ConfigError


class WarmupCosine(LRScheduler):
    """A linear warm-up over the first `warmup_epochs` epochs (epoch i of w trains at
    lr * i / (w + 1)), then a cosine decay to `eta_min` at epoch `T_max`.

    The warm-up keeps Adam's first, poorly estimated steps and BatchNorm's first statistics
    from throwing a large learning rate off; the decay lets the last epochs settle.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int,
        warmup_epochs: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ):
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int):
            raise ConfigError("scheduler.warmup_epochs", warmup_epochs, "must be a whole number")
        if not 0 <= warmup_epochs < T_max:
            raise ConfigError(
                "scheduler.warmup_epochs",
                warmup_epochs,
                f"must be in [0, T_max={T_max}): the decay needs epochs after the warm-up",
            )
        if eta_min < 0:
            raise ConfigError("scheduler.eta_min", eta_min, "must be >= 0")
        self.T_max, self.warmup_epochs, self.eta_min = T_max, warmup_epochs, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(float(base), self.last_epoch) for base in self.base_lrs]

    def lr_at(self, base_lr: float, epoch: int) -> float:
        """The learning rate of the epoch after `epoch` scheduler steps (0: the first)."""
        w = self.warmup_epochs
        if epoch < w:
            return base_lr * (epoch + 1) / (w + 1)
        done = min(1.0, (epoch - w) / (self.T_max - w))
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * done)) / 2
