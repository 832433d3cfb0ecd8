"""Re-run a trial from its saved composed config and compare the new metrics, epoch by epoch."""

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from hpsweep.record import SPLIT_METRICS, TrialFiles
from hpsweep.trial import run_trial

COMPARED = (*SPLIT_METRICS, "lr")


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
    config = TrialFiles(trial_dir).read_hydra_file("config.yaml")  # TrialFileError if damaged
    original = TrialFiles(trial_dir).read_result()
    if original is not None and original.num_threads and config.get("num_threads") is None:
        torch.set_num_threads(original.num_threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, out_dir / "config.yaml")
    run_trial(config, out_dir)
    return TrialFiles(out_dir).read_metrics()


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
