"""A project's own code beside hpsweep: a model class that the `model` group names.

hpsweep passes `input_shape` (the shape of one input row) because the constructor asks for
it; it does not pass `num_outputs`, which this regression model does not take: it always
predicts one number, and hpsweep checks that the data's task (one regression target) agrees.
"""

import math
from collections.abc import Sequence

from torch import Tensor, nn


class PriceNet(nn.Module):
    """Residual MLP blocks (Linear -> GELU -> dropout, plus the input) and a linear head."""

    def __init__(
        self, input_shape: Sequence[int], width: int = 64, depth: int = 2, dropout: float = 0.0
    ):
        super().__init__()
        self.stem = nn.Linear(math.prod(input_shape), width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Dropout(dropout))
            for _ in range(depth)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)
