"""Losses for the `loss` config group where torch's need a tensor that a config cannot hold:
class weights as a list. Each is torch's own loss, built with the list as a tensor."""

from collections.abc import Sequence

import torch
from torch import nn


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss with `weight` a list, one weight per class (rare classes
    weighted up), or None."""

    def __init__(self, weight: Sequence[float] | None = None, label_smoothing: float = 0.0):
        super().__init__(
            weight=None if weight is None else torch.tensor(list(weight), dtype=torch.float32),
            label_smoothing=label_smoothing,
        )


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss with `pos_weight` a list, one weight per label for its
    positives (> 1: recall up), or None."""

    def __init__(self, pos_weight: Sequence[float] | None = None):
        super().__init__(
            pos_weight=None
            if pos_weight is None
            else torch.tensor(list(pos_weight), dtype=torch.float32)
        )
