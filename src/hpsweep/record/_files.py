"""The trial record's files: result.json (TrialResult), metrics.csv, .hydra, atomic writes.

    <trial dir>/metrics.csv     one row per epoch, METRIC_COLUMNS
    <trial dir>/result.json     a TrialResult: status, the best epoch's numbers, test scores
    <trial dir>/curves.png      train and validation curves (drawn by hpsweep.plots)
    <trial dir>/checkpoints/    last.pt and best.pt (hpsweep.job)
    <trial dir>/.hydra/         Hydra's: config.yaml, hydra.yaml, overrides.yaml (read here too)

Every file is rewritten whole through a temp file and a rename, so a reader (`hpsweep compare`
during a sweep, a resume after a crash) sees the old file or the new one, never half of one.
What a trial rewrites as it goes (metrics.csv and its checkpoints each epoch, its .hydra
record) is synced to disk once, when result.json says how it ended: an fsync per epoch's file
cost a small trial 7 ms, and what a power cut could take from an unfinished trial is only an
epoch's checkpoint, which a resume finds damaged and replaces (hpsweep.job).
Light on purpose (no torch, pandas or Hydra): the CLI and the config schema import it.
"""

import csv
import dataclasses
import io
import json
import os
import reprlib
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hpsweep.errors import TrialFileError, unreadable

# metrics.csv: per epoch; `seconds` is that epoch's training and validation time. Between
# `epoch` and `lr`, each split's scores for the data's task (a classification's: these four).
SPLIT_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc")
METRIC_COLUMNS = ("epoch", *SPLIT_METRICS, "lr", "seconds")
# what every writer of metrics.csv gives: hpsweep's job, and a user's loop (hpsweep.loop)
REQUIRED_COLUMNS = ("epoch",)

# metric -> the direction in which it improves. A task logs `loss` and some of the others
# (hpsweep.data.Task.metrics) for each split, as <split>_<metric>: val_acc, train_r2, ...
METRIC_DIRECTIONS = {
    "loss": "minimize",
    "acc": "maximize",
    "f1": "maximize",
    "mse": "minimize",
    "mae": "minimize",
    "r2": "maximize",
}
# `hpsweep reproduce` of a user's own loop (hpsweep.loop) that was pruned after epoch N sets
# this to N: the re-run stops there, as the original did
REPRODUCE_UNTIL = "HPSWEEP_REPRODUCE_UNTIL"

# objective -> its direction: any metric logged per epoch (test scores never decide)
OBJECTIVES = {f"{s}_{m}": d for s in ("val", "train") for m, d in METRIC_DIRECTIONS.items()}


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


def is_better(
    value: float, best: float | None, objective: str, direction: str | None = None
) -> bool:
    """Strictly better only: on a tie the earlier epoch stays best. `direction`: the
    objective's, where its name does not say it (a user's own metric)."""
    if best is None:
        return True
    return value > best if (direction or OBJECTIVES[objective]) == "maximize" else value < best


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
    # trials in its fused group when it (last) started; None: trained alone (hpsweep.fused)
    fused_with: int | None = None
    task: str | None = None  # the data's task, as hpsweep.data.Task.describe() says it
    # every score of the best epoch's validation and of the test, by metrics.csv's names
    # (val_mse, test_r2, ...): the fields above hold a classification's only
    scores: dict[str, float] | None = None
    # what started the trial when it was not hpsweep-train: a user's loop (hpsweep.loop), as a
    # script path or `-m module`, for `hpsweep reproduce` to start again
    entry_point: str | None = None

    def to_json(self) -> str:
        fields = dataclasses.asdict(self) | {"status": self.status.value}
        return json.dumps(fields, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrialResult":
        """ValueError, saying what is wrong in a few words, for text that is not a result."""
        if not text.strip():
            raise ValueError("empty")
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON (line {e.lineno})") from None
        if not isinstance(fields, dict):
            raise ValueError(f"not a JSON object but a {type(fields).__name__}")
        status = str(fields.get("status"))
        status = _OLD_STATUS_WORDS.get(status, status)
        if status not in Status.__members__:
            states = ", ".join(Status.__members__)
            raise ValueError(
                f'"status": {reprlib.repr(fields.get("status"))} is not one of {states}'
            )
        # files from other versions: keys missing here are unknown (None), extra ones ignored
        values: dict[str, Any] = {"status": Status(status)}
        for field in dataclasses.fields(cls):
            if field.name != "status":
                values[field.name] = _typed(field, fields.get(field.name))
        return cls(**values)


# The JSON types a TrialResult field takes; bool is an int to Python but never a number here.
_JSON_TYPES: dict[Any, tuple[type, ...]] = {
    float: (int, float),
    int: (int,),
    str: (str,),
    dict: (dict,),
}
_TYPE_WORDS = {float: "a number", int: "an integer", str: "a string", dict: "an object"}


def _typed(field: dataclasses.Field, value: Any) -> Any:
    if value is None:
        return None
    kind = next(t for t in typing.get_args(field.type) or (field.type,) if t is not type(None))
    kind = typing.get_origin(kind) or kind  # dict[str, float]: a dict of numbers
    if isinstance(value, bool) or not isinstance(value, _JSON_TYPES[kind]):
        raise ValueError(f'"{field.name}": {reprlib.repr(value)} is not {_TYPE_WORDS[kind]}')
    if isinstance(value, dict):
        for key, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f'"{field.name}": {key}={reprlib.repr(number)} is not a number')
        return {key: float(number) for key, number in value.items()}
    return float(typing.cast(float, value)) if kind is float else value


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
        """result.json, once what it is about is on disk: the files the run wrote unsynced."""
        for path in (self.metrics, self.last, self.best, *self.hydra_files):
            sync_file(path)
        atomic_write_bytes(self.result, result.to_json().encode())

    @property
    def hydra_files(self) -> tuple[Path, ...]:
        """.hydra/config.yaml, hydra.yaml and overrides.yaml: Hydra's record of the job."""
        return tuple(
            self.dir / ".hydra" / n for n in ("config.yaml", "hydra.yaml", "overrides.yaml")
        )

    def write_hydra_record(self, config: Any, hydra: Any, overrides: Any) -> None:
        """The .hydra files of the job's config, its `hydra` node ({hydra: ...}) and its task
        overrides, as OmegaConf's YAML (record._yaml_text; OmegaConf imported on first use,
        as reading a sweep never writes YAML). Not synced: write_result syncs them."""
        from hpsweep.record._yaml_text import yaml_text

        self.hydra_files[0].parent.mkdir(parents=True, exist_ok=True)
        for path, node in zip(self.hydra_files, (config, hydra, overrides), strict=True):
            atomic_write_bytes(path, yaml_text(node).encode(), sync=False)

    def read_result(self) -> TrialResult | None:
        """None while the trial has no result.json (running, or killed before its first);
        TrialFileError for one that cannot be read."""
        try:
            text = self.result.read_bytes().decode()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise TrialFileError(self.result, unreadable(e)) from None
        try:
            return TrialResult.from_json(text)
        except ValueError as e:
            raise TrialFileError(self.result, str(e)) from None

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        text = io.StringIO()
        columns = list(history[0]) if history else list(METRIC_COLUMNS)
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        # repr-exact floats: the file round-trips to the same numbers the run computed
        writer.writerows({k: row[k] for k in columns} for row in history)
        atomic_write_bytes(self.metrics, text.getvalue().encode(), sync=False)  # write_result's

    def read_hydra_file(self, name: str) -> Any:
        """.hydra/<name> through OmegaConf (record._hydra_yaml)."""
        from hpsweep.record._hydra_yaml import (
            read_hydra_file,  # YAML: most users never read .hydra/
        )

        return read_hydra_file(self.dir / ".hydra", name)

    def read_hydra_data(self, name: str, keys: tuple[str, ...] | None = None) -> Any:
        """.hydra/<name> as plain data, fast (record._hydra_yaml)."""
        from hpsweep.record._hydra_yaml import read_hydra_data

        return read_hydra_data(self.dir / ".hydra", name, keys)

    def read_metrics(self) -> list[dict[str, float]]:
        """The epoch rows; TrialFileError when metrics.csv is missing or not whole."""
        try:
            text = self.metrics.read_bytes().decode()
        except (OSError, UnicodeDecodeError) as e:
            raise TrialFileError(self.metrics, unreadable(e)) from None
        try:
            return _parse_metrics(text)
        except (ValueError, csv.Error) as e:
            raise TrialFileError(self.metrics, str(e)) from None


def _parse_metrics(text: str) -> list[dict[str, float]]:
    if not text:
        raise ValueError("empty")
    # write_metrics ends every line, so a last line without its end was cut short (by a copy
    # or a disk that failed midway), and its last number may be cut too.
    if not text.endswith("\n"):
        last_line = text.count("\n") + 1
        raise ValueError(f"cut short in line {last_line}")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ValueError(f"line 1 is not a header with {', '.join(missing)}")
    rows = []
    for cells in reader:
        line = reader.line_num
        if not cells:
            continue
        if len(cells) != len(header):
            raise ValueError(f"line {line} has {len(cells)} of {len(header)} columns")
        row: dict[str, float] = {}
        for key, cell in zip(header, cells, strict=True):
            try:
                row[key] = int(cell) if key == "epoch" else float(cell)
            except ValueError:
                raise ValueError(
                    f"line {line}: {key}={reprlib.repr(cell)} is not a number"
                ) from None
        rows.append(row)
    return rows


def atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    """Write via a temp file in the same folder and a rename: readers (and a resume after a
    crash) see the old file or the new one, never half of one. `sync`: on disk before the
    rename (else it is the page cache's until sync_file or the kernel writes it)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is not None or e.errno is None:
            raise
        # a full disk: name the file (a write's error names none); the type stays (ENOSPC)
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def sync_file(path: Path) -> None:
    """fsync a file written with sync=False, if it exists."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Launch:
    """How a trial was started, from its .hydra/hydra.yaml: the folder it started in (where
    its own modules and relative paths are), the config dir and name, and its overrides."""

    cwd: Path | None
    config_dir: str | None  # --config-dir, when one was given
    config_name: str | None
    overrides: tuple[str, ...]

    @classmethod
    def of(cls, trial_dir: Path) -> "Launch":
        """TrialFileError for a hydra.yaml that cannot be read."""
        keys = ("runtime.cwd", "runtime.config_sources", "job.config_name", "overrides.task")
        hydra = TrialFiles(trial_dir).read_hydra_data("hydra.yaml", keys) or {}
        runtime = hydra.get("runtime") or {}
        config_dir = next(
            (
                str(s.get("path", ""))
                for s in runtime.get("config_sources") or []
                if isinstance(s, dict) and s.get("provider") == "command-line"
            ),
            None,
        )
        cwd = runtime.get("cwd")
        return cls(
            cwd=Path(cwd) if isinstance(cwd, str) else None,
            config_dir=config_dir,
            config_name=(hydra.get("job") or {}).get("config_name"),
            overrides=tuple(str(o) for o in (hydra.get("overrides") or {}).get("task") or []),
        )

    def arguments(self, default_config: str | None = "train") -> list[str]:
        """The command-line arguments that compose this config again."""
        args = []
        if self.config_dir:
            args += ["--config-dir", self.config_dir]
        if self.config_name and self.config_name != default_config:
            args += ["--config-name", self.config_name]
        return [*args, *self.overrides]

    def command(self, entry_point: str = "hpsweep-train", here: Path | None = None) -> str:
        """The shell command that runs this config again: `cd` to where it started (when that
        is not `here`), the entry point, the config dir and name, the overrides."""
        import shlex

        args = self.arguments("train" if entry_point == "hpsweep-train" else None)
        line = " ".join([entry_point, *(shlex.quote(a) for a in args)])
        if self.cwd is not None and here is not None and self.cwd.resolve() != here.resolve():
            line = f"cd {shlex.quote(str(self.cwd))} && {line}"
        return line
