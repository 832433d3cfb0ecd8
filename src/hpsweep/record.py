"""The trial record: what a trial dir holds, and the one place that writes and reads it.

    <trial dir>/metrics.csv     one row per epoch, METRIC_COLUMNS
    <trial dir>/result.json     a TrialResult: status, the best epoch's numbers, test scores
    <trial dir>/curves.png      train and validation curves (drawn by hpsweep.plots)
    <trial dir>/checkpoints/    last.pt and best.pt (hpsweep.checkpoint)

Every file is rewritten whole through a temp file and a rename, so a reader (`hpsweep compare`
during a sweep, a resume after a crash) sees the old file or the new one, never half of one.
Light on purpose (no torch, pandas or Hydra): the CLI and the config schema import it.
"""

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

# metrics.csv: per epoch; `seconds` is that epoch's training and validation time
SPLIT_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
METRIC_COLUMNS = ("epoch", *SPLIT_METRICS, "lr", "seconds")

# objective -> the direction in which it improves
OBJECTIVES = {"val_acc": "maximize", "val_loss": "minimize"}


class Status(str, Enum):
    """A trial's state in Optuna's words (its TrialState names): in result.json, in the
    tables of hpsweep.results, in `hpsweep compare --state` and in the study alike."""

    RUNNING = "RUNNING"  # no result.json yet: training, or its worker died before writing one
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAIL = "FAIL"

    def to_optuna(self) -> Any:
        from optuna.trial import TrialState  # only for the callers that have a study

        return TrialState[self.value]


# result.json of hpsweep 0.1 spelled states its own way; "stopped" was an epoch hook's early stop
_OLD_STATUS_WORDS = {
    "complete": "COMPLETE",
    "stopped": "COMPLETE",
    "pruned": "PRUNED",
    "failed": "FAIL",
}


def is_better(value: float, best: float | None, objective: str) -> bool:
    """Strictly better only: on a tie the earlier epoch stays best."""
    if best is None:
        return True
    return value > best if OBJECTIVES[objective] == "maximize" else value < best


@dataclass(frozen=True)
class TrialResult:
    """result.json. `value` is the objective at the best epoch, the one best.pt holds; test
    scores are of best.pt and exist once the trial ended (never for a failed one)."""

    status: Status
    reason: str | None  # why it was pruned, stopped or failed
    objective: str
    direction: str
    value: float | None
    best_epoch: int | None
    best_val_acc: float | None
    best_val_loss: float | None
    test_acc: float | None
    test_loss: float | None
    epochs_run: int
    epochs: int
    wall_time_s: float  # training: every epoch and its checkpoints, across resumes
    num_params: int | None
    seed: int | None
    torch_version: str | None
    device: str | None
    num_threads: int | None

    def to_json(self) -> str:
        fields = dataclasses.asdict(self) | {"status": self.status.value}
        return json.dumps(fields, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrialResult":
        fields = json.loads(text)
        if not isinstance(fields, dict):
            raise ValueError(f"expected a JSON object, got {type(fields).__name__}")
        status = str(fields.get("status"))
        fields["status"] = Status(_OLD_STATUS_WORDS.get(status, status))
        known = {f.name for f in dataclasses.fields(cls)}
        # files from other versions: keys missing here are unknown (None), extra ones ignored
        values: dict[str, Any] = {name: fields.get(name) for name in known}
        return cls(**values)


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

    def write_result(self, result: TrialResult) -> None:
        atomic_write_bytes(self.result, result.to_json().encode())

    def read_result(self) -> TrialResult | None:
        """None while the trial has no result.json (running, or killed before its first)."""
        if not self.result.is_file():
            return None
        return TrialResult.from_json(self.result.read_text())

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        # repr-exact floats: the file round-trips to the same numbers the run computed
        writer.writerows({k: row[k] for k in METRIC_COLUMNS} for row in history)
        atomic_write_bytes(self.metrics, text.getvalue().encode())

    def read_metrics(self) -> list[dict[str, float]]:
        with self.metrics.open(newline="") as f:
            rows = list(csv.DictReader(f))
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in rows]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and a rename: readers (and a resume after a
    crash) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
