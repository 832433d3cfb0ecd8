"""Re-run a trial from its saved composed config and compare the new metrics, epoch by epoch."""

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from omegaconf import OmegaConf

from hpsweep.job._checkpoint import MOVED_TARGETS, flatten
from hpsweep.job._trial import EpochHook, prepare, train
from hpsweep.record import Launch, Status, TrialFileError, TrialFiles, TrialResult

# every column of metrics.csv but these: time is not reproducible
NOT_COMPARED = ("epoch", "seconds")
# A trial trained in a fused group (hpsweep.fused) is re-run alone: its metrics equal
# the unfused run's up to float rounding (measured: losses within 2.5e-7, accuracies equal),
# not bitwise. 1e-3 allows one image's flip in a split of 1,000.
FUSED_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Difference:
    epoch: int
    metric: str
    original: float | None
    reproduced: float | None


def stopping_epoch(original: TrialResult | None) -> int | None:
    """The epoch after which the original stopped before its configured epochs: pruned, or
    stopped early by an epoch hook (COMPLETE with fewer epochs); None when it ran them all."""
    if original is None or original.epochs_run < 1:
        return None
    pruned = original.status is Status.PRUNED
    stopped = original.status is Status.COMPLETE and original.epochs_run < original.epochs
    return original.epochs_run if pruned or stopped else None


def reproduce(trial_dir: Path, out_dir: Path) -> list[dict[str, float]]:
    """Train `trial_dir`'s config from scratch into `out_dir`; returns the new metrics rows.

    Runs with the original's torch thread count: CPU kernels may sum in another order with
    another count, and bitwise equality needs the same order. An original that was pruned or
    stopped early is stopped after the same epoch, as it was (PRUNED or COMPLETE): with the
    config unchanged, since `epochs` may shape more than the epoch count (a cosine schedule's
    T_max is ${epochs}).
    """
    trial_dir, out_dir = trial_dir.resolve(), out_dir.resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another --out")
    config = TrialFiles(trial_dir).read_hydra_file("config.yaml")  # TrialFileError if damaged
    for key, target in flatten(cast(dict[str, Any], OmegaConf.to_container(config))).items():
        if key.endswith("_target_") and target in MOVED_TARGETS:
            OmegaConf.update(config, key, MOVED_TARGETS[target])
    original = TrialFiles(trial_dir).read_result()
    if original is not None and original.num_threads and config.get("num_threads") is None:
        torch.set_num_threads(original.num_threads)
    try:
        folder = Launch.of(trial_dir).cwd
    except TrialFileError:
        folder = None  # hydra.yaml damaged: run where this command runs
    with started_in(folder):
        run = prepare(config, out_dir)  # ConfigError for a config refused: no file written yet
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, out_dir / "config.yaml")
        last = stopping_epoch(original)
        hook = None if original is None or last is None else stop_after(last, original.status)
        train(run, on_epoch_end=hook)
    return TrialFiles(out_dir).read_metrics()


@contextlib.contextmanager
def started_in(folder: Path | None) -> Iterator[None]:
    """Run as the original was started: in its folder, where a user's own modules (a model
    class in ./mymodels.py) and relative data paths are found, with that folder importable."""
    if folder is None or not folder.is_dir():
        yield
        return
    here = os.getcwd()
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def stop_after(last: int, status: Status) -> EpochHook:
    """An epoch hook that ends the run after epoch `last` with `status`, as the original was."""

    def hook(epoch: int, row: dict[str, float]) -> Status | None:
        return status if epoch >= last else None

    return hook


def compare_metrics(
    original: list[dict[str, float]], reproduced: list[dict[str, float]], tolerance: float = 0.0
) -> list[Difference]:
    """Differences larger than `tolerance`, epoch by epoch; an epoch only one of them ran
    differs in every metric (the other's value is None)."""
    new = {row["epoch"]: row for row in reproduced}
    differences = []
    for row in original:
        other = new.get(row["epoch"])
        for metric in (k for k in row if k not in NOT_COMPARED):
            theirs = None if other is None else other.get(metric)
            if theirs is None or abs(row[metric] - theirs) > tolerance:
                differences.append(Difference(int(row["epoch"]), metric, row[metric], theirs))
    ran = {row["epoch"] for row in original}
    for row in reproduced:
        if row["epoch"] not in ran:
            differences += [
                Difference(int(row["epoch"]), m, None, row[m]) for m in row if m not in NOT_COMPARED
            ]
    return differences
