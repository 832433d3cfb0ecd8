"""The config schema: run-level keys with types, checked by Hydra at composition time, and the
value checks that types cannot express, run before any work starts."""

import inspect
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, ListConfig

from hpsweep.errors import ConfigError
from hpsweep.record import METRIC_DIRECTIONS, OBJECTIVES

if TYPE_CHECKING:
    import torch

# torch is imported by the two functions that need it: the schema and the checks do not, so
# that `--help`, `--cfg` and a refused command start in a second.

PRECISIONS = ("fp32", "bf16")  # job._steps.AUTOCAST_DTYPES maps each to its autocast dtype
# A mirrored 2, 3, 4, 5, 7 or 9 is not that digit (and a mirrored 6 is no digit at all):
# flipping MNIST teaches the model shapes that are not in the task (augment.hflip is refused).
NO_FLIP_DATASETS = ("mnist", "mnist_mini")

CONFIG_DIR = Path(__file__).parent / "conf"  # a symlink to the repo's conf/ in a source tree
DEVICES = "auto, cpu, cuda, cuda:N"
DEVICE_NAME = re.compile(r"auto|(cpu|cuda)(:\d+)?")


@dataclass
class TrainConfig:
    """Types of the run-level keys; their values (and what each means) are in conf/train.yaml.

    Config groups hold a `_target_` that hydra.utils.instantiate builds.
    """

    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None  # no scheduler group chosen: a constant learning rate
    augment: Any = MISSING
    loss: Any = None  # no loss group chosen: the data's task decides

    seed: int = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    device: str = MISSING
    num_threads: int | None = MISSING
    grad_clip_norm: float | None = MISSING
    label_smoothing: float = MISSING
    precision: str = MISSING
    channels_last: bool = MISSING
    overfit_batches: int = MISSING
    checkpoint_every: int = MISSING
    objective: str = MISSING
    log_every_s: float = MISSING
    test_pruned: bool = MISSING


# At import, as Hydra's own examples do: whoever composes `train` has imported this module.
ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def check_config(cfg: DictConfig) -> None:
    """Reject values that types cannot catch; ConfigError names the key and what is allowed."""
    known = [f.name for f in fields(TrainConfig)]
    for key in cfg:
        if key not in known:  # `+epochz=3` gets past the schema: Hydra adds what `+` asks for
            raise ConfigError(str(key), cfg[key], f"unknown key; the keys are {', '.join(known)}")
    for key, value in _leaves(cfg):
        # inf and nan pass every bound check below (nan fails them silently): refuse them all
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, value, "must be a finite number")
    for key in ("epochs", "batch_size", "checkpoint_every"):
        if cfg[key] < 1:
            raise ConfigError(key, cfg[key], "must be >= 1")
    if cfg.overfit_batches < 0:
        raise ConfigError("overfit_batches", cfg.overfit_batches, "must be >= 0 (0 = off)")
    if cfg.num_threads is not None and cfg.num_threads < 1:
        raise ConfigError("num_threads", cfg.num_threads, "must be >= 1, or null for the default")
    if cfg.grad_clip_norm is not None and cfg.grad_clip_norm <= 0:
        raise ConfigError("grad_clip_norm", cfg.grad_clip_norm, "must be > 0, or null for off")
    log_every_s = cfg.get("log_every_s")  # None: a config saved before the key existed
    if log_every_s is not None and not log_every_s > 0:
        raise ConfigError("log_every_s", log_every_s, "must be > 0 (seconds)")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError("label_smoothing", cfg.label_smoothing, "must be in [0, 1) (0: off)")
    _check_data_fit(cfg)
    if cfg.precision not in PRECISIONS:
        raise ConfigError("precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(
            "objective",
            cfg.objective,
            f"must be val_ or train_ and a metric: {', '.join(METRIC_DIRECTIONS)} (the data's "
            "task decides which it logs: acc and f1 for classes, mse, mae and r2 for regression)",
        )
    check_device(cfg.device)
    _check_optimizer(cfg.optimizer)
    # Last: it imports each group's target (torch with it) to read the constructor's arguments
    for group in ("data", "model", "optimizer", "scheduler", "augment", "loss"):
        _check_group_keys(group, cfg.get(group))


def _check_data_fit(cfg: DictConfig) -> None:
    """Settings that are wrong for the chosen data: a smoothed loss of the binary task, flips
    of digits."""
    data = cfg.data if isinstance(cfg.data, DictConfig) else {}
    task, dataset = data.get("task", "multiclass"), data.get("dataset")
    if cfg.label_smoothing > 0 and task == "lt3":
        raise ConfigError(
            "label_smoothing",
            cfg.label_smoothing,
            "must be 0 for data.task=lt3: it smooths CrossEntropyLoss's classes, and the binary "
            "task trains one logit with BCEWithLogitsLoss",
        )
    augment = cfg.augment if isinstance(cfg.augment, DictConfig) else {}
    if augment.get("hflip") and dataset in NO_FLIP_DATASETS:
        raise ConfigError(
            "augment.hflip",
            cfg.augment.hflip,
            f"flips are refused for data.dataset={dataset}: a mirrored digit is not that digit "
            "(2, 3, 4, 5, 7 and 9 turn into shapes of no class), so the model would learn "
            "from mislabelled images. Use augment=shift for digits; flips are for fashion_mnist",
        )


def _check_optimizer(optimizer: DictConfig) -> None:
    """lr > 0, momentum and weight_decay >= 0, each a number, where the optimizer has them."""
    for key in ("lr", "momentum", "weight_decay"):
        value = optimizer.get(key)
        if key in optimizer and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ConfigError(f"optimizer.{key}", value, "must be a number")
    if "lr" in optimizer and not optimizer.lr > 0:
        raise ConfigError("optimizer.lr", optimizer.lr, "must be > 0")
    for key in ("momentum", "weight_decay"):
        if key in optimizer and optimizer[key] < 0:
            raise ConfigError(f"optimizer.{key}", optimizer[key], "must be >= 0")


def _check_group_keys(group: str, node: Any) -> None:
    # `+model.hidden_size=3` (Hydra's own hint for a typo) gets past struct mode; the
    # constructor would refuse it only once data is loaded, and in its own words.
    if not isinstance(node, DictConfig) or not isinstance(node.get("_target_"), str):
        return
    try:
        params = inspect.signature(get_object(node._target_)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return  # instantiate reports a target it cannot import or inspect
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [name for name, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    for key in map(str, node):
        if not key.startswith("_") and key not in allowed:
            raise ConfigError(
                f"{group}.{key}",
                node[key],
                f"unknown key for {node._target_}; its keys are {', '.join(allowed)}",
            )


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, DictConfig | ListConfig):
        items = node.items_ex(resolve=True) if isinstance(node, DictConfig) else enumerate(node)
        for key, value in items:
            yield from _leaves(value, f"{prefix}{key!s}.")
    else:
        yield prefix.rstrip("."), node


def device_name(device: "torch.device") -> str:
    """A device as result.json names it: a CUDA index counts among the visible GPUs only (a
    sweep gives each worker its own), so those are named too."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if device.type != "cuda" or visible is None:
        return str(device)
    return f"{device} (CUDA_VISIBLE_DEVICES={visible})"


def check_device(name: str) -> None:
    """The device's name, and for CUDA whether it is here (the only check that needs torch)."""
    if not DEVICE_NAME.fullmatch(name):
        raise ConfigError("device", name, f"must be one of {DEVICES}")
    if name.startswith("cuda"):
        resolve_device(name)


def resolve_device(name: str) -> "torch.device":
    import torch  # here, not above: see the top of this module

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", name, f"must be one of {DEVICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError("device", name, f"must be one of {DEVICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", name, "CUDA is not available here; use auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError("device", name, f"only {count} CUDA device(s) here")
    return device
