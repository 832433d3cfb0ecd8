"""The files a trial leaves for people and tools: metrics.csv, result.json, curves.png.

Each is rewritten whole and atomically, so a reader (or `hpsweep compare` during a sweep)
never sees half a file.
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure  # at import, not per plot: sweep workers inherit it
from matplotlib.ticker import MaxNLocator

from hpsweep.checkpoint import atomic_write_bytes

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
# objective -> the direction in which it improves
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}


@dataclass(frozen=True)
class TrialFiles:
    """Where a trial keeps its files; the trial dir is Hydra's output dir for the job."""

    dir: Path

    @property
    def metrics(self) -> Path:
        return self.dir / "metrics.csv"

    @property
    def result(self) -> Path:
        return self.dir / "result.json"

    @property
    def curves(self) -> Path:
        return self.dir / "curves.png"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"


def is_better(value: float, best: float | None, objective: str) -> bool:
    """Strictly better only: on a tie the earlier epoch stays best."""
    if best is None:
        return True
    return value > best if OBJECTIVES[objective] == "maximize" else value < best


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    # repr-exact floats: the file round-trips to the same numbers the run computed
    writer.writerows({k: row[k] for k in METRIC_COLUMNS} for row in history)
    atomic_write_bytes(path, text.getvalue().encode())


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in rows]


def write_result(path: Path, result: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(result, indent=2) + "\n").encode())


def read_result(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def plot_curves(
    path: Path, history: list[dict[str, Any]], best_epoch: int | None = None, title: str = ""
) -> None:
    """Loss and accuracy per epoch, train vs validation, side by side."""
    # Figure without pyplot: no global state, no GUI backend, safe in worker processes.
    epochs = [row["epoch"] for row in history]
    # Fixed margins: a constrained layout would cost 0.1 s, a third of a small trial's overhead.
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "acc"), strict=True):
        for split, style in (("train", "--"), ("val", "-")):
            values = [row[f"{split}_{metric}"] for row in history]
            ax.plot(epochs, values, style, marker=".", label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
