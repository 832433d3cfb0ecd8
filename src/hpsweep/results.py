"""A sweep's trials as pandas tables, from its files on disk alone (a sweep dir copied from a
cluster works) and from the Optuna study too when its journal file is there.

    trials = load_trials("multirun/mlp")          # one row per trial dir, best first
    curves = load_curves("multirun/mlp")          # long form: trial, epoch, metric, split, value
    best_config("multirun/mlp")                   # the best trial's composed config

Works on sweeps of the hpsweep sweeper (multirun/<study>/trial_NNNN/), on plain Hydra
multiruns of hpsweep-train (multirun/<date>/<time>/<n>/), and on a folder of single runs
(outputs/<date>/, each <time>/ a run of hpsweep-train without -m): its runs are trials 0..n-1 in
the order of their dir names, which for Hydra's <time> names is the order they started.

Damaged files never stop a table: a trial whose files are missing or cannot be read is a row
whose `problem` says which file and why ("result.json: not JSON (line 1)"), and a trial the
study has whose dir is gone is a row saying "trial dir missing".
"""

from __future__ import annotations  # pandas types in signatures, pandas imported when used

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep.record import (
    OBJECTIVES,
    SPLIT_METRICS,
    Status,
    TrialFileError,
    TrialFiles,
    TrialResult,
    is_better,
)
from hydra_plugins.hpsweep_sweeper import (
    FAIL_REASON,
    JOURNAL_FILE,
    RETRY_OF,
    TRIAL_DIR,
    abandoned_trial_dirs,
    open_sweep_storage,
    retries_left,
    search_space,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# load_trials' columns taken from result.json as they are
RESULT_COLUMNS = (
    "objective",
    "direction",
    "value",
    "best_epoch",
    "best_val_acc",
    "best_val_loss",
    "test_acc",
    "test_loss",
    "epochs_run",
    "wall_time_s",
    "num_params",
)


class SweepDirError(ValueError):
    """A path that is not a sweep, or a request the sweep cannot answer; one line for the user.

    `use` and `trial`: for a path inside a sweep (a single run's dir, a trial dir), the folder
    to pass instead and the number the trial has there."""

    def __init__(self, message: str, use: Path | None = None, trial: int | None = None) -> None:
        super().__init__(message)
        self.use = use
        self.trial = trial


# Any of these marks a folder as a trial dir, so one that lost some of its files is still found.
TRIAL_MARKS = (".hydra", "result.json", "metrics.csv")


@dataclass
class Trials:
    """The trial dirs of a sweep dir, in trial order, and the number each has (None: unknown,
    when a dir holds no readable hydra.yaml and its name ends in no number)."""

    dirs: list[Path]
    numbers: dict[Path, int | None]
    single_runs: bool  # a folder of single runs (hpsweep-train without -m), not a sweep
    # each dir's hydra.yaml `hydra` node, or why it cannot be used: read once, here
    hydra: dict[Path, dict[str, Any] | TrialFileError] = field(default_factory=dict)


def find_trials(sweep_dir: str | Path) -> Trials:
    """The trial dirs of a sweep dir, or of a folder of single runs; SweepDirError, saying what
    the path is instead and what to pass, for anything else."""
    sweep = Path(sweep_dir)
    found = _scan(sweep) if sweep.is_dir() else None
    if found is None:
        raise _not_a_sweep(sweep)
    return found


def _scan(sweep: Path) -> Trials | None:
    dirs = [p for p in sweep.iterdir() if p.is_dir() and _is_trial_dir(p)]
    read = {d: _read_hydra(d) for d in dirs}
    hydra = {d: None if isinstance(node, TrialFileError) else node for d, node in read.items()}
    modes = {d: _mode(hydra[d]) for d in dirs}
    # A sweep's trials are MULTIRUN jobs; a dir whose hydra.yaml cannot be read goes with the
    # others. Single runs' dirs next to a sweep's trials are not its trials.
    single_runs = "RUN" in modes.values() and "MULTIRUN" not in modes.values()
    dirs = [d for d in dirs if modes[d] != ("MULTIRUN" if single_runs else "RUN")]
    if not dirs:
        return None
    if single_runs:
        # Hydra names a run's dir after the time it started (outputs/<date>/<time>/)
        dirs.sort(key=lambda d: d.name)
        return Trials(dirs, {d: i for i, d in enumerate(dirs)}, single_runs=True, hydra=read)
    numbers = {d: _job_number(d, hydra[d]) for d in dirs}
    dirs.sort(key=lambda d: (numbers[d] is None, numbers[d] or 0, d.name))
    return Trials(dirs, numbers, single_runs=False, hydra=read)


def trial_dirs(sweep_dir: str | Path) -> list[Path]:
    return find_trials(sweep_dir).dirs


def _is_trial_dir(path: Path) -> bool:
    return any((path / m).exists() for m in TRIAL_MARKS)


def _not_a_sweep(path: Path) -> SweepDirError:
    """What `path` is, since it is no sweep, and what to pass instead."""
    if not path.exists():
        return SweepDirError(f"{path} is not a folder: it does not exist")
    if not path.is_dir():
        return SweepDirError(f"{path} is not a folder but a file")
    if _is_trial_dir(path):
        read = _read_hydra(path)
        single = not isinstance(read, TrialFileError) and _mode(read) == "RUN"
        trials = _scan(path.parent)
        number = None if trials is None else trials.numbers.get(path)
        what = "a single run (hpsweep-train without -m)" if single else "a trial dir"
        where = "its folder" if single else "its sweep"
        held = "" if number is None else f" as trial {number}"
        return SweepDirError(
            f"{path} is {what}, not a sweep dir; {where} {path.parent} holds it{held}",
            use=path.parent,
            trial=number,
        )
    if (path / "multirun.yaml").is_file():
        return SweepDirError(f"{path} is an empty sweep: no trial dirs (*/.hydra/) in it yet")
    if not any(path.iterdir()):
        return SweepDirError(f"{path} is an empty folder, not a sweep dir")
    inside = [str(p) for p in sorted(path.iterdir()) if p.is_dir() and _scan(p) is not None]
    if inside:
        shown = ", ".join(inside[:3]) + (", ..." if len(inside) > 3 else "")
        return SweepDirError(
            f"{path} is not a sweep dir; it holds {len(inside)} folder(s) of trials, pass one: "
            f"{shown}"
        )
    return SweepDirError(
        f"{path} is not a sweep dir: no trial dirs (*/.hydra/, */result.json) in it"
    )


def _mode(hydra_cfg: dict[str, Any] | None) -> str | None:
    return None if hydra_cfg is None else _select(hydra_cfg, "mode")


# what load_trials uses of a trial's hydra.yaml: whether it is a sweep's job or a single run,
# the job's number (a retry's, in a trial dir named after another), a config group's option
HYDRA_KEYS = ("mode", "job.num", "runtime.choices")


# hydra.yaml path -> (its inode, size and mtime, what _read_hydra made of it). The CLI looks
# for the trials twice (checking its path, then in load_trials), a notebook again and again:
# each version of a file is parsed once.
_HYDRA_READ: dict[Path, tuple[tuple[int, int, int], dict[str, Any] | TrialFileError]] = {}


def _read_hydra(trial_dir: Path) -> dict[str, Any] | TrialFileError:
    path = trial_dir / ".hydra" / "hydra.yaml"
    try:
        stat = path.stat()
        version: tuple[int, int, int] | None = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None
    cached = _HYDRA_READ.get(path)
    if version is not None and cached is not None and cached[0] == version:
        return cached[1]
    read: dict[str, Any] | TrialFileError
    try:
        read = TrialFiles(trial_dir).read_hydra_data("hydra.yaml", HYDRA_KEYS)
    except TrialFileError as e:
        read = e
    if version is not None:
        _HYDRA_READ[path] = (version, read)
    return read


def _select(node: Any, key: str) -> Any:
    """OmegaConf.select(node, key, default=None) on plain data as read_hydra_data gives it;
    an interpolation is resolved by OmegaConf itself, as the composed config would be."""
    found = node
    for part in key.split("."):
        if isinstance(found, dict) and part in found:
            found = found[part]
        elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
            found = found[int(part)]
        else:
            found = None
            break
    special = isinstance(found, str) and ("${" in found or found == "???")
    if special or not key.replace(".", "").isidentifier():
        # `${...}`, a missing `???`, `a[0]`, keys OmegaConf spells otherwise: its own select
        return OmegaConf.select(OmegaConf.create(node), key, default=None)
    return found


def _job_number(trial_dir: Path, hydra_cfg: dict[str, Any] | None) -> int | None:
    """Hydra's job number (the trial's, in a sweep of the hpsweep sweeper); without a readable
    hydra.yaml, the number the dir's name ends with (trial_0003, or Hydra's 3)."""
    number = None if hydra_cfg is None else _select(hydra_cfg, "job.num")
    if isinstance(number, int):
        return number
    digits = re.search(r"(\d+)$", trial_dir.name)
    return int(digits.group(1)) if digits else None


def swept_keys(sweep_dir: str | Path) -> dict[str, bool]:
    """Keys the sweep varied -> whether they were searched on a log scale.

    From multirun.yaml, read as the sweeper reads it. Without it, the override keys whose
    values differ between trials.
    """
    sweep = Path(sweep_dir)
    space = swept_distributions(sweep)
    if space:
        return {key: bool(getattr(d, "log", False)) for key, d in space.items()}
    per_trial: list[dict[str, str]] = []
    for trial in trial_dirs(sweep):
        try:
            overrides = TrialFiles(trial).read_hydra_data("overrides.yaml")
        except TrialFileError:
            continue  # load_trials shows it in its problem column
        pairs = (str(line).partition("=") for line in overrides)
        # `+key=v` adds what `key=v` sets: one key either way
        per_trial.append({key.lstrip("+~"): value for key, _, value in pairs})
    # a key one run overrides and another leaves at its default differs too
    seen = {key: None for trial in per_trial for key in trial}
    return {k: False for k in seen if len({trial.get(k) for trial in per_trial}) > 1}


def swept_distributions(sweep_dir: str | Path) -> dict[str, Any] | None:
    """Parameter name -> Optuna distribution: the search space in multirun.yaml (the sweeper's
    `params`, then the sweeps of the command line), parsed by the sweeper's own rules. None
    without a readable multirun.yaml or when the sweeper would refuse the space."""
    from hydra.errors import HydraException

    cfg = _load_multirun(Path(sweep_dir))
    if cfg is None:
        return None
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None)
    task = OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []
    lines = [str(line) for line in task]
    try:
        plain = OmegaConf.to_container(params) if isinstance(params, DictConfig) else {}
        return search_space(cast(dict[str, Any], plain), lines)
    except (ValueError, HydraException):
        return None


def parse_overrides(lines: list[str]) -> list[Any]:
    """Hydra's parse of override lines; ValueError for a line it cannot parse. (Hydra is
    imported here, not with the module: the CLI's answers for a wrong path need none of it.)"""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise ValueError(str(e)) from None


def _load_multirun(sweep: Path) -> DictConfig | None:
    """The sweep's multirun.yaml; None without one, or when it cannot be read (the keys then
    come from the trials' overrides)."""
    try:
        cfg = OmegaConf.load(sweep / "multirun.yaml")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException):
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def open_studies(sweep_dir: Path, storage: str | None = None) -> list[Any]:
    """The Optuna studies of the sweep: from `storage`, else its journal file; [] without,
    or when the storage cannot be read (the trial files then tell what they can)."""
    journal = sweep_dir / JOURNAL_FILE
    if storage is None and not journal.is_file():
        return []
    import optuna

    try:
        client = open_sweep_storage(sweep_dir, storage)
        return [
            optuna.load_study(study_name=summary.study_name, storage=client)
            for summary in optuna.get_all_study_summaries(client)
        ]
    except Exception as e:  # a journal beyond repair, a database away: many types, one meaning
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning(
            "the study of %s could not be read (%s); from trial files alone", sweep_dir, first_line
        )
        return []


@dataclass
class StudyTrials:
    """The study's trials by trial dir name, oldest first: a dir holds more than one when a
    retry continued a trial whose worker died. `no_retry_left`: numbers of trials the sweeper
    will not run again if their worker is gone (hydra.sweeper.max_retries reached)."""

    by_dir: dict[str, list[Any]] = field(default_factory=dict)
    no_retry_left: set[int] = field(default_factory=set)


def load_study_trials(sweep_dir: Path, storage: str | None = None) -> StudyTrials:
    found = StudyTrials()
    for study in open_studies(sweep_dir, storage):
        for trial in study.get_trials(deepcopy=False):
            name = trial.user_attrs.get(TRIAL_DIR)
            if name:
                found.by_dir.setdefault(name, []).append(trial)
                if trial.state.name == "RUNNING" and retries_left(study, trial) == 0:
                    found.no_retry_left.add(trial.number)
    for trials in found.by_dir.values():
        trials.sort(key=lambda t: t.number)
    return found


@dataclass
class TrialDir:
    """What a trial dir's files say, each read once. A file that cannot be used is None here
    and a line in `problems`, which says which file and why."""

    path: Path
    result: TrialResult | None = None
    metrics: list[dict[str, float]] | None = None
    config: dict[str, Any] | None = None  # the composed config, as plain data
    hydra: dict[str, Any] | None = None  # hydra.yaml's `hydra` node
    overrides: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    result_unreadable: bool = False  # result.json is there but cannot be used


def read_trial_dir(
    trial_dir: Path,
    state: str | None = None,
    hydra: dict[str, Any] | TrialFileError | None = None,
) -> TrialDir:
    """Read a trial dir, noting each file that is damaged or missing. `state` is the study's
    for the trial, if there is a study: what a trial has written depends on how far it got.

    Missing is a problem only for a file the trial must have by then: .hydra/ (written before
    the job starts) unless the study says the trial is running, waiting, or failed (possibly
    before its job started); result.json once the study says COMPLETE or PRUNED; metrics.csv
    once result.json counts epochs. `hydra`: hydra.yaml as find_trials read it, if it did.
    """
    trial = TrialDir(trial_dir)
    if not trial_dir.is_dir():
        trial.problems.append("trial dir missing")
        return trial
    files = TrialFiles(trial_dir)
    try:
        trial.result = files.read_result()
    except TrialFileError as e:
        trial.problems.append(str(e))
        trial.result_unreadable = True
    if trial.result is None and not trial.result_unreadable and state in ("COMPLETE", "PRUNED"):
        trial.problems.append("result.json: missing")

    epochs = None if trial.result is None else trial.result.epochs_run
    if epochs or files.metrics.exists():
        try:
            trial.metrics = files.read_metrics()
        except TrialFileError as e:
            trial.problems.append(str(e))
    # a resumed trial's metrics.csv grows past its old result.json until the new one is written
    unfinished = state in ("RUNNING", "WAITING")
    counted = trial.metrics is not None and epochs is not None and not unfinished
    if counted and len(trial.metrics or []) != epochs:
        rows = len(trial.metrics or [])
        trial.problems.append(
            f"metrics.csv: {rows} epoch rows, result.json has epochs_run={epochs}"
        )

    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        if state in ("RUNNING", "WAITING", "FAIL") and not (trial_dir / ".hydra" / name).exists():
            continue
        try:
            if name == "hydra.yaml" and hydra is not None:
                if isinstance(hydra, TrialFileError):
                    raise hydra
                loaded = hydra
            else:
                loaded = files.read_hydra_data(name)
        except TrialFileError as e:
            trial.problems.append(str(e))
            continue
        if name == "config.yaml":
            trial.config = loaded
        elif name == "hydra.yaml":
            trial.hydra = loaded
        else:
            trial.overrides = [str(o) for o in loaded]
    return trial


# how `problem` begins for a RUNNING trial whose worker is gone (its trial dir lock is free)
WORKER_GONE = "worker gone"
# integer columns, nullable: a trial without result.json has no best epoch (an empty cell,
# not a float NaN that turns 2 into 2.0)
INT_COLUMNS = ("number", "best_epoch", "epochs_run", "num_params", "retry_of")


def load_trials(sweep_dir: str | Path, storage: str | None = None) -> pd.DataFrame:
    """One row per trial of the study (or per trial dir, without one), and per trial of the
    study whose dir is gone; sorted by the objective in its direction (best first).

    Columns: number, state (a Status value), objective, direction, value, best_epoch,
    best_val_acc, best_val_loss, test_acc, test_loss, epochs_run, wall_time_s (the trial's
    training time), num_params, params_<key> for every swept key (typed, from the composed
    config), trial_dir, best_checkpoint, retry_of, fail_reason, problem.
    `problem`: None, or which files are damaged or missing and why ("; " between them), or,
    for a RUNNING trial whose worker is gone, "worker gone after epoch N: ..." (its cells then
    hold its progress so far, from metrics.csv). `state` is the study's when there is a study;
    without one, result.json's, RUNNING while there is no result.json yet, and None (unknown)
    when result.json is there but cannot be read.
    A trial whose worker died is FAIL, and its retry (`retry_of` = its number) runs in the same
    trial dir: both are rows, the FAIL one without the dir's files, which are the retry's.
    `storage`: the sweep's storage URL when its study is not in the dir's journal file.
    """
    import pandas as pd

    sweep = Path(sweep_dir)
    found = find_trials(sweep)
    keys = swept_keys(sweep)
    study = load_study_trials(sweep, storage)
    dirs = list(found.dirs)
    names = {d.name for d in dirs}
    # the study's trials whose dirs are not found: deleted, not copied along, or failed before
    # the job wrote anything (a dir holding only its .lock)
    dirs += [sweep / name for name in sorted(study.by_dir) if name not in names]
    rows = []
    running: list[tuple[dict[str, Any], TrialDir]] = []  # rows without result.json yet
    for trial_dir in dirs:
        in_study = study.by_dir.get(trial_dir.name, [])
        study_trial = in_study[-1] if in_study else None  # the files are the newest trial's
        state = study_trial.state.name if study_trial else None
        trial = read_trial_dir(trial_dir, state, found.hydra.get(trial_dir))
        result = trial.result
        number = study_trial.number if study_trial else found.numbers.get(trial_dir)
        row: dict[str, Any] = {
            "number": number,
            "state": _state(trial, study_trial),
            **_result_columns(result),
        }
        if result is None and study_trial is not None:
            row["value"] = _study_value(study_trial)
        row.update(_params(trial, study_trial, keys))
        files = TrialFiles(trial_dir)
        row["trial_dir"] = str(trial_dir)
        row["best_checkpoint"] = str(files.best) if files.best.is_file() else None
        if study_trial is not None:
            row["retry_of"] = study_trial.user_attrs.get(RETRY_OF)
        else:
            row["retry_of"] = None if found.single_runs else _retry_of(trial_dir, number)
        reason = result.reason if result is not None and result.status is Status.FAIL else None
        if study_trial is not None and reason is None:
            reason = study_trial.user_attrs.get(FAIL_REASON)
        row["fail_reason"] = reason
        row["problem"] = "; ".join(trial.problems) or None
        if row["state"] == Status.RUNNING.value and result is None:
            running.append((row, trial))
        rows.append(row)
        rows += [_superseded(t, trial_dir, keys) for t in in_study[:-1]]
    gone = abandoned_trial_dirs(sweep, [trial.path for _, trial in running])
    for row, trial in running:
        if trial.path in gone:
            row.update(_progress(trial))
            again = row["number"] not in study.no_retry_left
            row["problem"] = "; ".join([_gone(trial, again), *trial.problems])
    directions = {row["direction"] for row in rows if row["direction"]}

    table = pd.DataFrame(rows)
    for column in INT_COLUMNS:
        table[column] = table[column].astype("Int64")
    maximize = directions != {"minimize"}
    table = table.sort_values(
        ["value", "number"], ascending=[not maximize, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


def _retry_of(trial_dir: Path, number: int | None) -> int | None:
    """From files alone: a trial dir is named after the trial it was made for (trial_0003), and
    its hydra.yaml holds the number of the newest trial that ran in it, a retry if they differ
    (the rule `hpsweep rebuild` follows too)."""
    digits = re.search(r"(\d+)$", trial_dir.name)
    first = int(digits.group(1)) if digits else None
    return first if first is not None and number is not None and first != number else None


def _superseded(trial: Any, trial_dir: Path, keys: dict[str, bool]) -> dict[str, Any]:
    """The row of a trial that a retry continued in its dir (its worker died): the dir's files
    are the retry's, so only the study speaks for it."""
    return {
        "number": trial.number,
        "state": str(trial.state.name),
        **_result_columns(None),
        "epochs_run": len(trial.intermediate_values),  # the epochs it reported before dying
        **{f"params_{k}": trial.params.get(k) for k in keys},
        "trial_dir": str(trial_dir),
        "best_checkpoint": None,
        "retry_of": trial.user_attrs.get(RETRY_OF),
        "fail_reason": trial.user_attrs.get(FAIL_REASON),
        "problem": None,
    }


def _progress(trial: TrialDir) -> dict[str, Any]:
    """A trial's cells from its metrics.csv alone: the epochs it ran and its best one so far."""
    rows = trial.metrics or []
    columns: dict[str, Any] = {"epochs_run": len(rows)}
    objective = None
    if trial.config is not None:
        objective = _select(trial.config, "objective")
    if objective not in OBJECTIVES:
        return columns
    best: dict[str, float] | None = None
    for row in rows:
        if is_better(row[objective], None if best is None else best[objective], objective):
            best = row
    columns |= {"objective": objective, "direction": OBJECTIVES[objective]}
    if best is not None:
        columns |= {
            "value": best[objective],
            "best_epoch": int(best["epoch"]),
            "best_val_acc": best["val_acc"],
            "best_val_loss": best["val_loss"],
        }
    return columns


def _gone(trial: TrialDir, retried: bool) -> str:
    if trial.metrics is None:
        when = ""
    elif trial.metrics:
        when = f" after epoch {int(trial.metrics[-1]['epoch'])}"
    else:
        when = " before its first epoch ended"
    if retried:
        return f"{WORKER_GONE}{when}: the next start of the sweep runs it again"
    return (
        f"{WORKER_GONE}{when}: the next start of the sweep marks it FAIL "
        "(hydra.sweeper.max_retries reached)"
    )


def _state(trial: TrialDir, study_trial: Any) -> str | None:
    if study_trial is not None:
        return str(study_trial.state.name)
    if trial.result is not None:
        return trial.result.status.value
    if trial.result_unreadable:
        return None  # it ended, or not: nothing left says how
    return Status.RUNNING.value  # no result.json yet: running, or its worker died


def _study_value(study_trial: Any) -> float | None:
    """A COMPLETE trial's value is result.json's in the study too. (A PRUNED one's is its last
    epoch's there, not its best epoch's: left out, so `value` means one thing.)"""
    values = study_trial.values
    complete = study_trial.state.name == "COMPLETE"
    return values[0] if complete and values is not None and len(values) == 1 else None


def _params(trial: TrialDir, study_trial: Any, keys: dict[str, bool]) -> dict[str, Any]:
    """params_<key>: from the composed config; with it damaged or gone, from the study, else
    from the overrides (typed as Hydra parses them)."""
    if trial.config is not None and trial.hydra is not None:
        choices = _select(trial.hydra, "runtime.choices") or {}
        return {f"params_{k}": _param(trial.config, choices, k) for k in keys}
    if study_trial is not None:
        params = study_trial.params
    else:
        params = _override_values(trial.overrides or [])
    return {f"params_{k}": params.get(k) for k in keys}


def _override_values(overrides: list[str]) -> dict[str, Any]:
    try:
        parsed = parse_overrides(overrides)
    except ValueError:
        return {}
    return {o.get_key_element(): o.value() for o in parsed if not o.is_sweep_override()}


def _result_columns(result: TrialResult | None) -> dict[str, Any]:
    """The table's columns from result.json; a trial without one has only epochs_run = 0."""
    columns = dict.fromkeys(RESULT_COLUMNS) | {"epochs_run": 0}
    if result is not None:
        columns.update({name: getattr(result, name) for name in RESULT_COLUMNS})
    return columns


def _param(config: dict[str, Any], choices: Any, key: str) -> Any:
    if key in choices:  # a config group, e.g. model=cnn: the option's name
        return choices[key]
    value = _select(config, key)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    if isinstance(value, dict | list):
        return str(value)
    return value


def load_curves(sweep_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every trial in long form: trial, epoch, metric, split, value.
    Trials without a whole metrics.csv have none (load_trials' `problem` says why)."""
    import pandas as pd

    frames = []
    found = find_trials(sweep_dir)
    for trial_dir in found.dirs:
        try:
            rows = TrialFiles(trial_dir).read_metrics()
        except TrialFileError:
            continue
        if not rows:
            continue
        wide = pd.DataFrame(rows)
        long = wide.melt(id_vars="epoch", value_vars=sorted(SPLIT_METRICS), var_name="column")
        long[["split", "metric"]] = long["column"].str.split("_", n=1, expand=True)
        long.insert(0, "trial", found.numbers[trial_dir])  # load_trials' `number` of the dir
        frames.append(long[["trial", "epoch", "metric", "split", "value"]])
    if not frames:
        return pd.DataFrame(columns=["trial", "epoch", "metric", "split", "value"])
    return pd.concat(frames, ignore_index=True)


def best_trial(sweep_dir: str | Path, storage: str | None = None) -> pd.Series:
    """The best COMPLETE trial's row of `load_trials`, among those whose files are whole."""
    return best_of(load_trials(sweep_dir, storage), sweep_dir)


def best_of(trials: pd.DataFrame, sweep_dir: str | Path) -> pd.Series:
    """The best COMPLETE row of a `load_trials` table whose files are whole: a damaged trial
    cannot be reproduced or checked, so it is never the pick."""
    complete = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    whole = complete[complete["problem"].isna()]
    if whole.empty:
        damaged = f" with whole files ({len(complete)} damaged)" if len(complete) else ""
        raise SweepDirError(f"no trial in {sweep_dir} has completed{damaged}")
    return whole.iloc[0]


def best_config(sweep_dir: str | Path, storage: str | None = None) -> DictConfig:
    config = OmegaConf.load(
        Path(best_trial(sweep_dir, storage)["trial_dir"]) / ".hydra" / "config.yaml"
    )
    assert isinstance(config, DictConfig)
    return config


def trial_by_number(trials: pd.DataFrame, number: int) -> pd.Series:
    match = trials[trials["number"] == number]
    if match.empty:
        known = ", ".join(str(n) for n in sorted(trials["number"].dropna()))
        raise SweepDirError(f"no trial {number} in this sweep; its trials are: {known}")
    return match.iloc[0]
