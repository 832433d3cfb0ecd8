"""One trial: `hpsweep-train [key=value ...]`, or `python -m hpsweep.train`.

`run_trial` is the whole job and takes a composed config and a trial dir, so tests and sweepers
call it directly; `main` only adapts it to the command line.
"""

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import hydra
import torch
import torch._dynamo
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from hpsweep.checkpoint import (
    capture_rng,
    config_changes,
    load_checkpoint,
    load_resume_state,
    restore_rng,
    save_checkpoint,
)
from hpsweep.config import CONFIG_DIR, check_config, register_schema, resolve_device
from hpsweep.data import Split, Splits, iterate_batches, num_batches
from hpsweep.errors import CheckpointError, ConfigError
from hpsweep.metrics import (
    OBJECTIVES,
    TrialFiles,
    is_better,
    plot_curves,
    write_metrics_csv,
    write_result,
)
from hpsweep.models import count_parameters
from hpsweep.training import evaluate, make_criterion, train_one_epoch
from hydra_plugins.hpsweep_sweeper import current_trial

log = logging.getLogger(__name__)
# torch._dynamo above: use_deterministic_algorithms() and fused Adam import it on first use,
# 1.5 s here. Imported with this module, a sweep's forked workers start with it loaded instead
# of paying for it each; a single run pays the same, only earlier.

# Called after each epoch's checkpoint with (epoch, metrics row). It returns None to go on, or a
# status to stop the trial with, e.g. "pruned".
EpochHook = Callable[[int, dict[str, float]], str | None]


class TrainingDiverged(RuntimeError):
    pass


def build(
    cfg: DictConfig, device: torch.device
) -> tuple[Splits, Split, nn.Module, Optimizer, LRScheduler | None]:
    """Data, the training split actually iterated, model, optimizer and scheduler."""
    splits = _instantiate("data", cfg.data, device=device)
    model = _instantiate(
        "model", cfg.model, input_shape=splits.input_shape, num_outputs=splits.num_outputs
    ).to(device)
    optimizer = _call("optimizer", _instantiate("optimizer", cfg.optimizer), model.parameters())
    scheduler = None
    if cfg.scheduler is not None:
        scheduler = _call("scheduler", _instantiate("scheduler", cfg.scheduler), optimizer)

    train = splits.train
    if cfg.overfit_batches:
        n = cfg.overfit_batches * cfg.batch_size
        if n > len(train):
            raise ConfigError(
                "overfit_batches",
                cfg.overfit_batches,
                f"overfit_batches * batch_size must be <= {len(train)} training images",
            )
        train = Split(train.x[:n], train.y[:n])
    return splits, train, model, optimizer, scheduler


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
    except (TypeError, ValueError) as e:  # torch validates its own arguments, e.g. Adam's betas
        raise ConfigError(key, factory, str(e)) from None


def make_deterministic() -> None:
    # cuBLAS reads this when CUDA initializes; without it deterministic mode errors on CUDA.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def run_trial(cfg: DictConfig, trial_dir: Path, on_epoch_end: EpochHook | None = None) -> dict:
    """Train (or resume) the trial in `trial_dir`; returns the content of its result.json."""
    # -- check and build: all that can reject the config runs before any file is written
    check_config(cfg)
    device = resolve_device(cfg.device)
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    make_deterministic()
    torch.manual_seed(cfg.seed)  # model init and dropout
    shuffle = torch.Generator().manual_seed(cfg.seed)  # batch order, its own stream
    splits, train_split, model, optimizer, scheduler = build(cfg, device)
    criterion = make_criterion(splits.num_outputs)
    config = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True))
    files = TrialFiles(trial_dir)

    # -- resume from the trial's checkpoint, if it has one
    state = load_resume_state(files.checkpoints)
    history: list[dict[str, float]] = []
    best: dict[str, float] | None = None
    elapsed, start_epoch = 0.0, 1
    if state is not None:
        changes = config_changes(state["config"], config)
        if changes:
            raise CheckpointError(
                f"{files.checkpoints} was written with another config ({'; '.join(changes)}). "
                "Resuming would mix two runs: give this run its own dir (hydra.run.dir=...) "
                "or delete that folder to start over."
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], shuffle)
        history, best, elapsed = state["history"], state["best"], state["elapsed"]
        start_epoch = state["epoch"] + 1
        log.info("resuming %s after epoch %d", trial_dir, state["epoch"])
    files.checkpoints.mkdir(parents=True, exist_ok=True)

    status, reason = "complete", None
    started = time.perf_counter()
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            epoch_start = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]

            # -- train: a fresh shuffle per epoch (overfit_batches: the same batches each time)
            batches = iterate_batches(
                train_split, cfg.batch_size, None if cfg.overfit_batches else shuffle
            )
            batches = tqdm(
                batches,
                total=num_batches(train_split, cfg.batch_size),
                leave=False,
                desc=f"epoch {epoch}",
                disable=not sys.stderr.isatty(),
            )
            train_loss, train_acc = train_one_epoch(
                model, optimizer, criterion, batches, cfg.grad_clip_norm
            )
            if not math.isfinite(train_loss):
                raise TrainingDiverged(
                    f"train loss is {train_loss} in epoch {epoch}; "
                    "lower optimizer.lr or set grad_clip_norm"
                )

            # -- evaluate on validation; the test set waits for the final report
            val_loss, val_acc = evaluate(model, criterion, splits.val)
            if scheduler is not None:
                scheduler.step()

            # -- record
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": lr,
                "seconds": time.perf_counter() - epoch_start,
            }
            history.append(row)
            best_value = None if best is None else best[cfg.objective]
            improved = is_better(row[cfg.objective], best_value, cfg.objective)
            if improved:
                best = row

            # -- checkpoint: last.pt every checkpoint_every epochs and at the end, best.pt when
            #    the objective improved; metrics.csv every epoch
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "epoch": epoch,
                "rng": capture_rng(shuffle),
                "history": history,
                "best": best,
                "elapsed": elapsed + time.perf_counter() - started,
                "config": config,
            }
            due = epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs
            paths = ([files.last] if due else []) + ([files.best] if improved else [])
            save_checkpoint(state, *paths)
            write_metrics_csv(files.metrics, history)
            log.info(
                "epoch %d/%d | train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.3g | %.1fs",
                epoch,
                cfg.epochs,
                train_loss,
                train_acc,
                val_loss,
                val_acc,
                lr,
                row["seconds"],
            )

            # -- report: a sweeper's pruner may stop the trial here
            stop = None if on_epoch_end is None else on_epoch_end(epoch, row)
            if stop:
                if not due:
                    save_checkpoint(state, files.last)  # so the stopped trial can be continued
                status, reason = stop, f"{stop} after epoch {epoch}"
                break
    except Exception as e:
        elapsed += time.perf_counter() - started
        reason = f"{type(e).__name__}: {e}"
        write_result(files.result, _result(cfg, "failed", reason, history, best, model, elapsed))
        raise
    elapsed += time.perf_counter() - started

    # -- final report: the test set, once, on the best checkpoint's weights
    model.load_state_dict(load_checkpoint(files.best)["model"])
    test_loss, test_acc = evaluate(model, criterion, splits.test)
    result = _result(cfg, status, reason, history, best, model, elapsed)
    result.update(
        test_loss=test_loss,
        test_acc=test_acc,
        device=str(device),
        num_threads=torch.get_num_threads(),
    )
    write_result(files.result, result)
    plot_curves(files.curves, history, result["best_epoch"], title=trial_dir.name)
    log.info(
        "best epoch %d: %s %.4f | test acc %.4f | %s",
        result["best_epoch"],
        cfg.objective,
        result["value"],
        test_acc,
        files.result,
    )
    return result


def _result(
    cfg: DictConfig,
    status: str,
    reason: str | None,
    history: list[dict[str, float]],
    best: dict[str, float] | None,
    model: torch.nn.Module,
    elapsed: float,
) -> dict[str, Any]:
    best = best or {}
    return {
        "status": status,
        "reason": reason,
        "objective": cfg.objective,
        "direction": OBJECTIVES[cfg.objective],
        "value": best.get(cfg.objective),
        "best_epoch": best.get("epoch"),
        "best_val_acc": best.get("val_acc"),
        "best_val_loss": best.get("val_loss"),
        "test_acc": None,
        "test_loss": None,
        "epochs_run": len(history),
        "epochs": cfg.epochs,
        "wall_time_s": elapsed,
        "num_params": count_parameters(model),
        "seed": cfg.seed,
        "torch_version": torch.__version__,
    }


class ConfigRejected(CompactHydraException):
    """Shown by Hydra as its message alone, without a traceback: the fix is in the config."""


register_schema()


def report_to(trial: Any, objective: str) -> EpochHook:
    """The pruning idiom as an epoch hook: report the objective, stop if the pruner says so."""

    def hook(epoch: int, row: dict[str, float]) -> str | None:
        try:
            trial.report(row[objective], step=epoch)
            return "pruned" if trial.should_prune() else None
        except Exception as e:  # the study's storage is away: train on, unpruned, for now
            log.warning("epoch %d not reported to the study: %s", epoch, str(e).splitlines()[0])
            return None

    return hook


@hydra.main(config_path=str(CONFIG_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    trial_dir = Path(HydraConfig.get().runtime.output_dir)
    trial = current_trial()  # the Optuna trial when hydra/sweeper=hpsweep runs this job
    hook = None if trial is None else report_to(trial, cfg.objective)
    try:
        result = run_trial(cfg, trial_dir, on_epoch_end=hook)
    except (ConfigError, CheckpointError) as e:
        raise ConfigRejected(str(e)) from None
    if result["status"] == "pruned":
        import optuna

        raise optuna.TrialPruned(result["reason"])
    return result["value"]


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: launchers that pickle the task
    # function (submitit) can then refer to it by name.
    from hpsweep.train import main as importable_main

    importable_main()
