"""Re-run a trial from its saved composed config and compare the new metrics, epoch by epoch."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from hpsweep.metrics import TrialFiles, read_metrics_csv
from hpsweep.train import run_trial

COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


@dataclass(frozen=True)
class Difference:
    epoch: int
    metric: str
    original: float | None
    reproduced: float | None


def reproduce(trial_dir: Path, out_dir: Path) -> list[dict[str, float]]:
    """Train `trial_dir`'s config from scratch into `out_dir`; returns the new metrics rows.

    Runs with the original's torch thread count: CPU kernels may sum in another order with
    another count, and bitwise equality needs the same order.
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another --out")
    config = OmegaConf.load(trial_dir / ".hydra" / "config.yaml")
    assert isinstance(config, DictConfig)
    original = TrialFiles(trial_dir)
    if original.result.is_file():
        threads = json.loads(original.result.read_text()).get("num_threads")
        if threads and config.get("num_threads") is None:
            torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, out_dir / "config.yaml")
    run_trial(config, out_dir)
    return read_metrics_csv(TrialFiles(out_dir).metrics)


def compare_metrics(
    original: list[dict[str, float]], reproduced: list[dict[str, float]], tolerance: float = 0.0
) -> list[Difference]:
    """Differences larger than `tolerance` over the original's epochs (a pruned original has
    fewer epochs than its re-run, which is not pruned)."""
    new = {row["epoch"]: row for row in reproduced}
    differences = []
    for row in original:
        other = new.get(row["epoch"])
        for metric in COMPARED:
            theirs = None if other is None else other[metric]
            if theirs is None or abs(row[metric] - theirs) > tolerance:
                differences.append(Difference(int(row["epoch"]), metric, row[metric], theirs))
    return differences
