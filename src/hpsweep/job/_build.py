"""What a trial's config builds: data, model, optimizer and scheduler, checked before use.

Everything that can reject a config runs here, before a trial writes any file.
"""

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Subset

from hpsweep.config import check_config, resolve_device
from hpsweep.data import (
    AnySplit,
    Augment,
    Split,
    Splits,
    Task,
    as_splits,
    check_targets,
    iterate_batches,
    targets_of,
)
from hpsweep.errors import ConfigError
from hpsweep.job._steps import AUTOCAST_DTYPES, make_criterion


@dataclass
class Job:
    """What a config builds: everything the epochs need."""

    cfg: DictConfig
    config: dict[str, Any]  # resolved, plain: saved in checkpoints, compared on resume
    device: torch.device
    splits: Splits
    task: Task  # from the data: what the model outputs, the loss and the scores
    train: AnySplit  # the training split iterated (overfit_batches: its first batches only)
    model: nn.Module
    optimizer: Optimizer
    scheduler: LRScheduler | None  # stepped per epoch, or per batch (PER_BATCH_SCHEDULERS)
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

    splits = _build_data(cfg.data, device)
    task = splits.inferred_task
    _check_task(cfg, task)
    model = _instantiate(
        "model",
        cfg.model,
        **_accepted(cfg.model, input_shape=splits.input_shape, num_outputs=task.num_outputs),
    ).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # on the device: a loss's class weights are tensors too
    criterion, eval_criterion = (loss.to(device) for loss in _losses(cfg, task))
    _probe(model, splits.train, task, eval_criterion, device)  # before the optimizer: lazy layers
    augment = _instantiate("augment", cfg.augment, fill=splits.blank)
    optimizer = _call("optimizer", _instantiate("optimizer", cfg.optimizer), model.parameters())
    train = _training_split(splits.train, cfg.overfit_batches, cfg.batch_size)
    scheduler = _scheduler(cfg, optimizer, steps=-(-len(train) // cfg.batch_size))
    return Job(
        cfg=cfg,
        config=cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)),
        device=device,
        splits=splits,
        task=task,
        train=train,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        criterion=criterion,
        eval_criterion=eval_criterion,
        augment=augment if augment.active else None,
        autocast_dtype=AUTOCAST_DTYPES[cfg.precision],
        shuffle=shuffle,
    )


def _scheduler(cfg: DictConfig, optimizer: Optimizer, steps: int) -> LRScheduler | None:
    """The scheduler, called with the optimizer; one that takes `total_steps` (OneCycleLR) and
    is not given it gets the run's: epochs times batches per epoch."""
    if cfg.scheduler is None:
        return None
    factory = _instantiate("scheduler", cfg.scheduler)
    if "total_steps" in (_parameters(cfg.scheduler) or {}) and "total_steps" not in cfg.scheduler:
        factory = functools.partial(factory, total_steps=cfg.epochs * steps)
    return cast(LRScheduler, _call("scheduler", factory, optimizer))


def make_deterministic() -> None:
    # cuBLAS reads this when CUDA initializes; without it deterministic mode errors on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def _training_split(train: AnySplit, overfit_batches: int, batch_size: int) -> AnySplit:
    if not overfit_batches:
        return train
    n = overfit_batches * batch_size
    if n > len(train):
        raise ConfigError(
            "overfit_batches",
            overfit_batches,
            f"overfit_batches * batch_size must be <= {len(train)} training images",
        )
    if isinstance(train, Split):
        return Split(train.x[:n], train.y[:n])
    return Subset(train, range(n))  # type: ignore[arg-type]


def _build_data(node: DictConfig, device: torch.device) -> Splits:
    """The data target's Splits, checked: the contract, then the task of the training targets
    and whether the validation and test targets fit it."""
    target = str(node.get("_target_"))
    splits = as_splits(_instantiate("data", node, **_accepted(node, device=device)), target)
    task = splits.inferred_task
    for name in ("val", "test"):
        check_targets(targets_of(getattr(splits, name)), task, name)
    return splits


def _check_task(cfg: DictConfig, task: Task) -> None:
    """Keys whose meaning depends on the task: the objective, label smoothing."""
    logged = [f"{split}_{m}" for split in ("val", "train") for m in task.metrics]
    if cfg.objective not in logged:
        raise ConfigError(
            "objective",
            cfg.objective,
            f"the data's task ({task.describe()}) logs {', '.join(logged)}",
        )
    if cfg.label_smoothing > 0 and (task.kind != "multiclass" or cfg.get("loss") is not None):
        loss = "the task's" if cfg.get("loss") is None else cfg.loss.get("_target_")
        raise ConfigError(
            "label_smoothing",
            cfg.label_smoothing,
            "must be 0 unless the task is multiclass and the loss the task's CrossEntropyLoss "
            f"(here: {task.describe()}, loss {loss})",
        )


def _losses(cfg: DictConfig, task: Task) -> tuple[nn.Module, nn.Module]:
    """(training loss, validation and test loss): the task's unless `loss` names one."""
    if cfg.get("loss") is None:
        return make_criterion(task, cfg.label_smoothing), make_criterion(task)
    return _instantiate("loss", cfg.loss), _instantiate("loss", cfg.loss)


@torch.no_grad()
def _probe(
    model: nn.Module, train: AnySplit, task: Task, loss: nn.Module, device: torch.device
) -> None:
    """Two training samples through the model and the loss, in eval mode (no dropout draws,
    no BatchNorm updates): a wrong output width or a loss that does not fit the targets is
    refused here, with what was expected, instead of failing in the first step."""
    if isinstance(train, Split):
        x, y = train.x[:2], train.y[:2]
    else:
        first: Subset = Subset(train, range(min(2, len(train))))  # type: ignore[arg-type]
        x, y = next(iterate_batches(first, 2, device=device))
    was_training = model.training
    model.eval()
    try:
        outputs = model(x.to(device))
    except Exception as e:
        shape = tuple(x.shape[1:])
        raise ConfigError(
            "model", _name(model), f"fails on inputs of shape {shape}: {type(e).__name__}: {e}"
        ) from None
    finally:
        model.train(was_training)
    expected = (len(x), task.num_outputs)
    if not isinstance(outputs, Tensor) or tuple(outputs.shape) != expected:
        got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ConfigError(
            "model",
            _name(model),
            f"outputs {got} for {len(x)} samples; the data's task ({task.describe()}) needs "
            f"{expected}: give the model num_outputs={task.num_outputs}",
        )
    try:
        loss(outputs.float(), y.to(device))
    except Exception as e:
        raise ConfigError(
            "loss",
            _name(loss),
            f"fails on outputs {expected} and targets {tuple(y.shape)}: {type(e).__name__}: {e}",
        ) from None


def _name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _accepted(node: DictConfig, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments the node's target takes and its config does not set: a user's
    model that needs no input_shape, or a data target without device=, is called without."""
    params = _parameters(node)
    if params is None:
        return kwargs  # instantiate reports a target it cannot import
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {k: v for k, v in kwargs.items() if (takes_any or k in params) and k not in node}


def _parameters(node: DictConfig) -> Any:
    """The parameters of the node's target (inspect's mapping), None when it cannot tell."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    try:
        return inspect.signature(get_object(str(target))).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return None


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
