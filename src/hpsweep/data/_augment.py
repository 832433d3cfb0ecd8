"""Data augmentation on the batch tensor: random shifts (pad and crop) and horizontal flips.

Applied to a whole training batch on its device, inside the in-memory data path: no
per-sample Python, no DataLoader. The random draws come from the generator passed in (the
trial's shuffle generator, saved in every checkpoint), so a resumed run draws what an
uninterrupted one would.
"""

from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from hpsweep.errors import ConfigError


class Augment:
    """Each image moved by up to `shift` pixels in each direction (the crop of a `shift`-pixel
    padded image, torchvision's RandomCrop(size, padding=shift)), then mirrored left-right
    with probability 1/2 when `hflip`. `fill` is the value of a blank pixel in the normalized
    images (the padding). Flips on digits are refused by the config check (hpsweep.config)."""

    def __init__(self, fill: float, shift: int = 0, hflip: bool = False):
        if isinstance(shift, bool) or not isinstance(shift, int) or shift < 0:
            raise ConfigError("augment.shift", shift, "must be a whole number of pixels >= 0")
        if not isinstance(hflip, bool):
            raise ConfigError("augment.hflip", hflip, "must be true or false")
        self.fill, self.shift, self.hflip = fill, shift, hflip

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.hflip

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        # Draws on the CPU (the generator's device, and the one a checkpoint restores), a few
        # numbers per image, then one gather on the batch's device.
        n, _, height, width = x.shape
        if self.shift:
            s = self.shift
            offsets = torch.randint(0, 2 * s + 1, (n, 2), generator=generator).to(x.device)
            rows = offsets[:, :1] + torch.arange(height, device=x.device)  # (n, height)
            cols = offsets[:, 1:] + torch.arange(width, device=x.device)  # (n, width)
            padded = F.pad(x, (s, s, s, s), value=self.fill)
            images = torch.arange(n, device=x.device)[:, None, None]
            # advanced indexing puts the channel dim last: (n, height, width, channels)
            x = padded[images, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if self.hflip:
            flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def batches(
        self, batches: Iterable[tuple[Tensor, Tensor]], generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in batches:
            yield self(x, generator), y
