"""What a trial's config builds: data, model, optimizer and scheduler, checked before use.

Everything that can reject a config runs here, before a trial writes any file.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from hpsweep.config import check_config, resolve_device
from hpsweep.data import Augment, Split, Splits
from hpsweep.errors import ConfigError
from hpsweep.job._steps import AUTOCAST_DTYPES, make_criterion


@dataclass
class Job:
    """What a config builds: everything the epochs need."""

    cfg: DictConfig
    config: dict[str, Any]  # resolved, plain: saved in checkpoints, compared on resume
    device: torch.device
    splits: Splits
    train: Split  # the training split iterated (overfit_batches: its first batches only)
    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None
    criterion: nn.Module  # the training loss (with label smoothing, if any)
    eval_criterion: nn.Module  # validation and test losses: plain, comparable across trials
    augment: Augment | None  # None: no augmentation
    autocast_dtype: torch.dtype | None  # precision=bf16: torch.bfloat16
    shuffle: torch.Generator  # batch order and augmentation: apart from init and dropout


def build(cfg: DictConfig) -> Job:
    check_config(cfg)
    device = resolve_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    make_deterministic()
    torch.manual_seed(cfg.seed)  # model init and dropout
    shuffle = torch.Generator().manual_seed(cfg.seed)

    splits = _instantiate("data", cfg.data, device=device)
    model = _instantiate(
        "model", cfg.model, input_shape=splits.input_shape, num_outputs=splits.num_outputs
    ).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = _instantiate("augment", cfg.augment, fill=splits.blank)
    optimizer = _call("optimizer", _instantiate("optimizer", cfg.optimizer), model.parameters())
    scheduler = None
    if cfg.scheduler is not None:
        scheduler = _call("scheduler", _instantiate("scheduler", cfg.scheduler), optimizer)
    return Job(
        cfg=cfg,
        config=cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)),
        device=device,
        splits=splits,
        train=_training_split(splits.train, cfg.overfit_batches, cfg.batch_size),
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=make_criterion(splits.num_outputs, cfg.label_smoothing),
        eval_criterion=make_criterion(splits.num_outputs),
        augment=augment if augment.active else None,
        autocast_dtype=AUTOCAST_DTYPES[cfg.precision],
        shuffle=shuffle,
    )


def make_deterministic() -> None:
    # cuBLAS reads this when CUDA initializes; without it deterministic mode errors on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _training_split(train: Split, overfit_batches: int, batch_size: int) -> Split:
    if not overfit_batches:
        return train
    n = overfit_batches * batch_size
    if n > len(train):
        raise ConfigError(
            "overfit_batches",
            overfit_batches,
            f"overfit_batches * batch_size must be <= {len(train)} training images",
        )
    return Split(train.x[:n], train.y[:n])


def _instantiate(key: str, node: DictConfig, **kwargs: Any) -> Any:
    # _convert_="all": plain lists in the objects, so optimizer state (e.g. Adam's betas) stays
    # loadable with weights_only=True.
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ConfigError):
            raise e.__cause__ from None
        raise ConfigError(key, node.get("_target_"), str(e).replace("\n", " ")) from None


def _call(key: str, factory: Callable[..., Any], *args: Any) -> Any:
    try:
        return factory(*args)
    except ConfigError:
        raise  # already names its key
    except (TypeError, ValueError) as e:  # torch validates its own arguments, e.g. Adam's betas
        raise ConfigError(key, factory, str(e)) from None
