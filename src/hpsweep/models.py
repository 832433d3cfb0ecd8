"""The models a trial can train. Both output logits: the loss applies its own softmax/sigmoid.

`input_shape` and `num_outputs` come from the data at build time; every other argument is a
config key of the `model/` group with the same name.
"""

import math
from collections.abc import Sequence

from torch import nn

from hpsweep.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError("model.activation", name, f"must be one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError("model.dropout", p, "must be in [0, 1)")


def _check_size(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "must be a whole number >= 1")


class MLP(nn.Sequential):
    """Flatten -> (Linear -> activation -> dropout) per hidden size -> Linear to logits.

    `hidden_sizes` is one int (a single hidden layer, the form a sweep searches) or a list.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: int | Sequence[int] = 128,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        sizes = [hidden_sizes] if isinstance(hidden_sizes, int) else list(hidden_sizes)
        for size in sizes:
            _check_size("model.hidden_sizes", size)
        _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for size in sizes:
            layers += [nn.Linear(width, size), _activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_outputs))
        super().__init__(*layers)


class CNN(nn.Sequential):
    """Two conv blocks (3x3 conv -> [BatchNorm] -> activation -> 2x2 max-pool), the second with
    twice the channels of the first, then a hidden Linear layer and the logits.

    With BatchNorm the convs have no bias: BatchNorm's shift makes it redundant.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: int = 16,
        hidden_size: int = 128,
        batch_norm: bool = False,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        _check_size("model.channels", channels)
        _check_size("model.hidden_size", hidden_size)
        _check_dropout(dropout)
        in_channels, height, width = input_shape

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=not batch_norm)
            return [conv, *norm, _activation(activation), nn.MaxPool2d(2)]

        head: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(2 * channels * (height // 4) * (width // 4), hidden_size),
            _activation(activation),
        ]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden_size, num_outputs))
        super().__init__(*block(in_channels, channels), *block(channels, 2 * channels), *head)


class VGG(nn.Sequential):
    """VGG-style stages of `convs_per_stage` 3x3 convs -> BatchNorm -> activation, a 2x2
    max-pool between stages, channels doubling from `channels`; then global average pooling,
    dropout and the logits. The convs have no bias (BatchNorm's shift makes it redundant).

    Pooling the last stage's maps to one value per channel keeps the head small (64 * 10
    weights at the defaults) and makes the model indifferent to where a feature sits.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: int = 16,
        stages: int = 3,
        convs_per_stage: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
    ):
        _check_size("model.channels", channels)
        _check_size("model.stages", stages)
        _check_size("model.convs_per_stage", convs_per_stage)
        _check_dropout(dropout)
        in_channels, height, width = input_shape
        if min(height, width) < 2 ** (stages - 1):
            raise ConfigError(
                "model.stages",
                stages,
                f"each stage but the last halves the image: {height}x{width} allows at most "
                f"{1 + int(math.log2(min(height, width)))}",
            )
        layers: list[nn.Module] = []
        for stage in range(stages):
            out_channels = channels * 2**stage
            for _ in range(convs_per_stage):
                layers += [
                    nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    _activation(activation),
                ]
                in_channels = out_channels
            if stage < stages - 1:
                layers.append(nn.MaxPool2d(2))
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_channels, num_outputs))
        super().__init__(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
