"""One trial, start to end: build (job._build), resume, train epoch by epoch, checkpoint,
report.

`run_trial` takes a composed config and a trial dir, so tests, `hpsweep reproduce` and the
sweeper call it directly; only `hpsweep.train` knows about the command line.
"""

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from omegaconf import DictConfig
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR

from hpsweep.config import device_name
from hpsweep.data import AnySplit, iterate_batches
from hpsweep.errors import CheckpointError
from hpsweep.job._build import Job, build
from hpsweep.job._checkpoint import (
    capture_rng,
    config_changes,
    load_checkpoint,
    load_resume_state,
    restore_rng,
    save_checkpoint,
)
from hpsweep.job._progress import LOG_EVERY_S, Meter, progress_mode
from hpsweep.job._steps import evaluate, train_one_epoch
from hpsweep.models import count_parameters
from hpsweep.record import (
    OBJECTIVES,
    Status,
    TrialFiles,
    TrialResult,
    draw_later,
    is_better,
)

log = logging.getLogger("hpsweep.trial")  # the job's own lines: one logger name in train.log
# torch._dynamo above: use_deterministic_algorithms() and fused Adam import it on first use,
# 1.5 s here. Imported with this module, a sweep's forked workers start with it loaded instead
# of paying for it each; a single run pays the same, only earlier.

# Called after each epoch's checkpoint with (epoch, metrics row). Returns None to go on,
# Status.PRUNED to stop the trial as pruned (a sweeper's pruner), or Status.COMPLETE to stop it
# early as complete (early stopping); the trial dir then holds a result like any other.
EpochHook = Callable[[int, dict[str, float]], Status | None]
STOPPING = (Status.PRUNED, Status.COMPLETE)

# Keys that only change what a run prints or reports, not what it trains: a resume ignores
# them, and checkpoints written before they existed do not have them.
OUTPUT_ONLY_KEYS = ("log_every_s", "test_pruned")
# Schedules defined over optimizer steps: stepped after each batch, the others after each epoch
PER_BATCH_SCHEDULERS = (OneCycleLR, CyclicLR)


class TrainingDiverged(RuntimeError):
    pass


def diverged(train_loss: float, epoch: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"train loss is {train_loss} in epoch {epoch}; lower optimizer.lr or set grad_clip_norm"
    )


@dataclass
class Progress:
    """What a checkpoint carries from one epoch to the next."""

    epoch: int = 0  # the last epoch done
    history: list[dict[str, float]] = field(default_factory=list)  # metrics.csv rows
    best: dict[str, float] | None = None  # the row of the epoch best.pt holds
    elapsed: float = 0.0  # seconds spent on this trial, across resumes

    def add(self, row: dict[str, float], objective: str) -> bool:
        """Record an epoch's row; True if it is the new best."""
        self.epoch = int(row["epoch"])
        self.history.append(row)
        improved = is_better(
            row[objective], None if self.best is None else self.best[objective], objective
        )
        if improved:
            self.best = row
        return improved


@dataclass
class Run:
    """A trial ready to train: built, checked and resumed, with nothing written yet."""

    job: Job
    files: TrialFiles
    progress: Progress
    meter: Meter
    resumable: int = 0  # the epoch a new start would resume after (0: none), kept up to date


def run_trial(
    cfg: DictConfig, trial_dir: Path, on_epoch_end: EpochHook | None = None
) -> TrialResult:
    """Train (or resume) the trial in `trial_dir`; returns what it writes to result.json."""
    return train(prepare(cfg, trial_dir), on_epoch_end)


def prepare(cfg: DictConfig, trial_dir: Path) -> Run:
    """All that can reject the config or the trial dir's checkpoint, before any file is
    written: a refused run leaves an existing trial dir as it was."""
    job = build(cfg)
    files = TrialFiles(Path(trial_dir))
    meter = Meter(progress_mode(), cfg.get("log_every_s", LOG_EVERY_S))
    progress = resume(job, files)
    return Run(job, files, progress, meter, resumable=progress.epoch)


def train(run: Run, on_epoch_end: EpochHook | None = None) -> TrialResult:
    """The epochs from where the run stands, then the final report."""
    job, files, progress, cfg = run.job, run.files, run.progress, run.job.cfg
    files.checkpoints.mkdir(parents=True, exist_ok=True)
    log_start(job, files)

    status, reason = Status.COMPLETE, None
    started = time.perf_counter() - progress.elapsed  # the trial's clock, across resumes
    try:
        for epoch in range(progress.epoch + 1, cfg.epochs + 1):
            row = run_epoch(job, epoch, run.meter)
            progress.elapsed = time.perf_counter() - started
            stop = end_epoch(run, row, on_epoch_end, lambda: checkpoint(job, progress))
            if stop is not None:
                status, reason = stop, stop_reason(stop, epoch)
                break
    except Exception as e:
        progress.elapsed = time.perf_counter() - started
        files.write_result(result_of(job, progress, Status.FAIL, f"{type(e).__name__}: {e}"))
        raise
    progress.elapsed = time.perf_counter() - started
    return final_report(job, progress, files, status, reason, run.meter)


# -- resume ----------------------------------------------------------------------------------


def resume(job: Job, files: TrialFiles) -> Progress:
    """Load the trial's checkpoint into the job, if it has one; a new trial starts at epoch 0."""
    state = load_resume_state(files.checkpoints)
    if state is None:
        return Progress()
    changes = config_changes(*(_without_output_keys(c) for c in (state["config"], job.config)))
    if changes:
        raise CheckpointError(
            f"{files.checkpoints} was written with another config ({'; '.join(changes)}). "
            "Resuming would mix two runs: give this run its own dir (hydra.run.dir=...) "
            "or delete that folder to start over."
        )
    try:
        load_states(job, state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:  # a model changed in code
        # torch's message spans lines ("Error(s) in loading state_dict ...:\n\tsize mismatch
        # for ..."): one line, its first mismatches
        why = " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
        raise CheckpointError(
            f"{files.checkpoints}: its checkpoint does not fit the model or optimizer this "
            f"config builds now ({why}). Nothing was changed; delete that folder to train this "
            "trial from scratch, or give this run its own dir."
        ) from None
    log.info("resuming %s after epoch %d", files.dir, state["epoch"])
    return Progress(state["epoch"], state["history"], state["best"], state["elapsed"])


def load_states(job: Job, state: dict[str, Any]) -> None:
    """The checkpoint's weights, optimizer and scheduler states and RNG states into the job."""
    job.model.load_state_dict(state["model"])
    job.optimizer.load_state_dict(state["optimizer"])
    if job.scheduler is not None:
        job.scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], job.shuffle)


def _without_output_keys(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in OUTPUT_ONLY_KEYS}


# -- one epoch -------------------------------------------------------------------------------


def log_start(job: Job, files: TrialFiles) -> None:
    """What this run is, before the first epoch line: where it runs, on what, into which dir."""
    splits, data, cfg = job.splits, job.cfg.data, job.cfg
    how = [f"{cfg.precision}{', channels-last' if cfg.channels_last else ''}"]
    if job.augment is not None:
        how.append(f"augment shift {job.augment.shift}{', flips' if job.augment.hflip else ''}")
    log.info(
        "run: device %s, %d threads, %s | data %s (%s): %d train, %d val, %d test | %s, %s params "
        "| output %s",
        job.device,
        torch.get_num_threads(),
        " | ".join(how),
        data.get("dataset", data.get("_target_")),
        job.task.describe(),
        len(job.train),
        len(splits.val),
        len(splits.test),
        type(job.model).__name__,
        f"{count_parameters(job.model):,}",
        files.dir.resolve(),
    )


def run_epoch(job: Job, epoch: int, meter: Meter) -> dict[str, float]:
    """Train one epoch, then evaluate on validation; the test set waits for the final report."""
    cfg = job.cfg
    started = time.perf_counter()
    lr = job.optimizer.param_groups[0]["lr"]
    label = f"epoch {epoch}/{cfg.epochs}"

    # -- train: a fresh shuffle per epoch (overfit_batches: the same batches each time)
    batches = iterate_batches(
        job.train,
        cfg.batch_size,
        None if cfg.overfit_batches else job.shuffle,
        device=job.device,
        num_workers=job.splits.num_workers,
    )
    if job.augment is not None:  # drawn from the shuffle generator, after the epoch's order
        batches = job.augment.batches(batches, job.shuffle)
    with meter.track(len(job.train), label, eta="epoch ETA") as wrap:
        train = train_one_epoch(
            job.model,
            job.optimizer,
            job.criterion,
            wrap(batches),
            cfg.grad_clip_norm,
            job.autocast_dtype,
            job.task,
            on_step=job.scheduler.step if isinstance(job.scheduler, PER_BATCH_SCHEDULERS) else None,
        )
    if not math.isfinite(train["loss"]):
        raise diverged(train["loss"], epoch)

    # -- evaluate, then step the schedule for the next epoch
    val = evaluate_split(job, job.splits.val, meter, f"{label} validation")
    if job.scheduler is not None and not isinstance(job.scheduler, PER_BATCH_SCHEDULERS):
        job.scheduler.step()
    return {
        "epoch": epoch,
        **{f"train_{name}": value for name, value in train.items()},
        **{f"val_{name}": value for name, value in val.items()},
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


def evaluate_split(job: Job, split: AnySplit, meter: Meter, label: str) -> dict[str, float]:
    """The scores on a validation or test split (a plain loss first), as the job trains: same
    precision."""
    with meter.track(len(split), label, bar_delay=1.0) as wrap:
        return evaluate(
            job.model,
            job.eval_criterion,
            split,
            progress=wrap,
            autocast_dtype=job.autocast_dtype,
            task=job.task,
            num_workers=job.splits.num_workers,
        )


# -- record and checkpoint -------------------------------------------------------------------


def checkpoint(job: Job, progress: Progress) -> dict[str, Any]:
    return {
        "model": job.model.state_dict(),
        "optimizer": job.optimizer.state_dict(),
        "scheduler": None if job.scheduler is None else job.scheduler.state_dict(),
        "epoch": progress.epoch,
        "rng": capture_rng(job.shuffle),
        "history": progress.history,
        "best": progress.best,
        "elapsed": progress.elapsed,
        "config": job.config,
    }


def end_epoch(
    run: Run,
    row: dict[str, float],
    hook: EpochHook | None,
    state_of: Callable[[], dict[str, Any]],
    who: str = "",
) -> Status | None:
    """An epoch's bookkeeping, one for a trial alone and a trial of a fused group: the row
    joins the history; best.pt when the objective improved, last.pt every checkpoint_every
    epochs, at the end and when the hook stops the trial; metrics.csv; the log line. Returns
    the status the hook stops the trial with, or None to go on. `state_of()`: the checkpoint.
    """
    files, progress, cfg = run.files, run.progress, run.job.cfg
    epoch = int(row["epoch"])
    improved = progress.add(row, cfg.objective)
    state = state_of()
    due = epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs
    last_existed = files.last.exists()
    save_checkpoint(state, *([files.last] if due else []), *([files.best] if improved else []))
    files.write_metrics(progress.history)
    if due or (improved and not last_existed):  # a start resumes from last.pt, else best.pt
        run.resumable = epoch
    log_epoch(row, cfg.epochs, who)

    # -- report: a sweeper's pruner (or an early-stopping rule) may stop the trial here
    stop = None if hook is None else hook(epoch, row)
    if stop is None:
        return None
    if stop not in STOPPING:
        raise TypeError(f"an epoch hook returned {stop!r}; expected one of {STOPPING} or None")
    if not due:
        save_checkpoint(state, files.last)  # so it can be continued
        run.resumable = epoch
    return stop


def stop_reason(stop: Status, epoch: int) -> str:
    how = "pruned" if stop is Status.PRUNED else "stopped early"
    return f"{how} after epoch {epoch}"


def log_epoch(row: dict[str, float], epochs: int, who: str = "") -> None:
    """`who`: a prefix naming the trial, where one process trains several (a fused group)."""
    splits = []
    for split in ("train", "val"):
        scores = [
            f"{k.removeprefix(split + '_')} {v:.4f}"
            for k, v in row.items()
            if k.startswith(split + "_")
        ]
        splits.append(f"{split} {' '.join(scores)}")
    log.info(
        "%sepoch %d/%d | %s | lr %.3g | %.1fs",
        who,
        row["epoch"],
        epochs,
        " | ".join(splits),
        row["lr"],
        row["seconds"],
    )


# -- final report ----------------------------------------------------------------------------


def final_report(
    job: Job,
    progress: Progress,
    files: TrialFiles,
    status: Status,
    reason: str | None,
    meter: Meter,
    fused_with: int | None = None,
    who: str = "",
) -> TrialResult:
    """The test set, once, on the best checkpoint's weights (a pruned trial's only with
    test_pruned: its score would inform nothing and costs an evaluation); then result.json
    and curves.png (handed to the command's drawer process if it has one: it is drawn while
    the next trial trains). `who`: as log_epoch's."""
    test = None
    if status is not Status.PRUNED or job.cfg.get("test_pruned", False):
        job.model.load_state_dict(load_checkpoint(files.best)["model"])
        test = evaluate_split(job, job.splits.test, meter, "test")
    result = result_of(job, progress, status, reason, test=test, fused_with=fused_with)
    files.write_result(result)
    best_epoch = result.best_epoch
    if not draw_later(files.dir, job.cfg.label_smoothing):  # no drawer: drawn here, alike
        # matplotlib (0.4 s) imported here: a sweep's workers hand their figures to its drawer
        from hpsweep.plots import plot_curves, save_png

        save_png(
            plot_curves(
                progress.history,
                best_epoch,
                title=f"{files.dir.parent.name}/{files.dir.name}",
                label_smoothing=job.cfg.label_smoothing,
                objective=result.objective,
            ),
            files.curves,
        )
    log.info(
        "%sbest epoch %s: %s %.4f | test %s | %s",
        who,
        best_epoch,
        result.objective,
        result.value,
        "not scored (pruned)"
        if test is None
        else " ".join(f"{name} {value:.4f}" for name, value in test.items() if name != "loss"),
        files.result.resolve(),
    )
    return result


def result_of(
    job: Job,
    progress: Progress,
    status: Status,
    reason: str | None,
    test: dict[str, float] | None = None,
    fused_with: int | None = None,
) -> TrialResult:
    """result.json's fields; `test`: the test scores by name (evaluate's), once it ran."""
    cfg, best, test = job.cfg, progress.best or {}, test or {}
    scores = {k: v for k, v in best.items() if k.startswith("val_")}
    scores |= {f"test_{name}": value for name, value in test.items()}
    return TrialResult(
        status=status,
        reason=reason,
        objective=cfg.objective,
        direction=OBJECTIVES[cfg.objective],
        value=best.get(cfg.objective),
        best_epoch=None if not best else int(best["epoch"]),
        best_val_acc=best.get("val_acc"),
        best_val_loss=best.get("val_loss"),
        test_acc=test.get("acc"),
        test_loss=test.get("loss"),
        epochs_run=len(progress.history),
        epochs=cfg.epochs,
        wall_time_s=progress.elapsed,
        num_params=count_parameters(job.model),
        seed=cfg.seed,
        torch_version=torch.__version__,
        device=device_name(job.device),
        num_threads=torch.get_num_threads(),
        fused_with=fused_with,
        task=job.task.describe(),
        scores=scores or None,
    )
