"""A sweep's trials as pandas tables, from its files on disk alone (a sweep dir copied from a
cluster works) and from the Optuna study too when its journal file is there.

    trials = load_trials("multirun/mlp")          # one row per trial dir, best first
    curves = load_curves("multirun/mlp")          # long form: trial, epoch, metric, split, value
    best_config("multirun/mlp")                   # the best trial's composed config

Works on sweeps of the hpsweep sweeper (multirun/<study>/trial_NNNN/) and on plain Hydra
multiruns of hpsweep-train (multirun/<date>/<time>/<n>/).

Damaged files never stop a table: a trial whose files are missing or cannot be read is a row
whose `problem` says which file and why ("result.json: not JSON (line 1)"), and a trial the
study has whose dir is gone is a row saying "trial dir missing".
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep.record import SPLIT_METRICS, Status, TrialFileError, TrialFiles, TrialResult
from hydra_plugins.hpsweep_sweeper import FAIL_REASON, JOURNAL_FILE, TRIAL_DIR, open_sweep_storage

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
    pass


# Any of these marks a folder as a trial dir, so one that lost some of its files is still found.
TRIAL_MARKS = (".hydra", "result.json", "metrics.csv")


def trial_dirs(sweep_dir: str | Path) -> list[Path]:
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise SweepDirError(f"{sweep} is not a folder")
    dirs = [p for p in sweep.iterdir() if p.is_dir() and any((p / m).exists() for m in TRIAL_MARKS)]
    hydra = {d: _hydra_node(d) for d in dirs}
    # a single run's dir (hpsweep-train without -m) holds the same files, yet is no sweep's trial
    dirs = [d for d in dirs if _mode(hydra[d]) != "RUN"]
    if not dirs:
        what = "an empty sweep" if (sweep / "multirun.yaml").is_file() else "not a sweep dir"
        raise SweepDirError(f"{sweep} is {what}: no trial dirs (*/.hydra/, */result.json) in it")
    numbers = {d: _job_number(d, hydra[d]) for d in dirs}
    return sorted(dirs, key=lambda d: (numbers[d] is None, numbers[d] or 0, d.name))


def _mode(hydra_cfg: DictConfig | None) -> str | None:
    return None if hydra_cfg is None else OmegaConf.select(hydra_cfg, "mode", default=None)


def _hydra_node(trial_dir: Path) -> DictConfig | None:
    try:
        node: DictConfig = TrialFiles(trial_dir).read_hydra_file("hydra.yaml")
    except TrialFileError:
        return None
    return node


def _job_number(trial_dir: Path, hydra_cfg: DictConfig | None) -> int | None:
    """Hydra's job number (the trial's, in a sweep of the hpsweep sweeper); without a readable
    hydra.yaml, the number the dir's name ends with (trial_0003, or Hydra's 3)."""
    number = None if hydra_cfg is None else OmegaConf.select(hydra_cfg, "job.num", default=None)
    if isinstance(number, int):
        return number
    digits = re.search(r"(\d+)$", trial_dir.name)
    return int(digits.group(1)) if digits else None


def swept_keys(sweep_dir: str | Path) -> dict[str, bool]:
    """Keys the sweep varied -> whether they were searched on a log scale.

    From multirun.yaml: the sweeper's `params` and the sweeps given on the command line. Without
    it, the override keys whose values differ between trials.
    """
    sweep = Path(sweep_dir)
    cfg = _load_multirun(sweep)
    if cfg is not None:
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        lines = [f"{k}={v}" for k, v in params.items()]
        lines += list(OmegaConf.select(cfg, "hydra.overrides.task", default=[]))
        keys: dict[str, bool] = {}
        try:
            parsed = OverridesParser.create().parse_overrides(lines)
        except HydraException:
            parsed = []
        for override in parsed:
            if override.is_sweep_override():
                tags: set[str] = getattr(override.value(), "tags", set())
                keys[override.get_key_element()] = "log" in tags
        if keys:
            return keys
    values: dict[str, set[str]] = {}
    for trial in trial_dirs(sweep):
        try:
            overrides = TrialFiles(trial).read_hydra_file("overrides.yaml")
        except TrialFileError:
            continue  # load_trials shows it in its problem column
        for line in overrides:
            key, _, value = str(line).partition("=")
            values.setdefault(key, set()).add(value)
    return {k: False for k, v in values.items() if len(v) > 1}


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


def load_study_trials(sweep_dir: Path, storage: str | None = None) -> dict[str, Any]:
    """trial dir name -> the newest Optuna FrozenTrial recorded for it."""
    by_dir: dict[str, Any] = {}
    for study in open_studies(sweep_dir, storage):
        for trial in study.get_trials(deepcopy=False):
            name = trial.user_attrs.get(TRIAL_DIR)
            if name and (name not in by_dir or trial.number > by_dir[name].number):
                by_dir[name] = trial
    return by_dir


@dataclass
class TrialDir:
    """What a trial dir's files say, each read once. A file that cannot be used is None here
    and a line in `problems`, which says which file and why."""

    path: Path
    result: TrialResult | None = None
    metrics: list[dict[str, float]] | None = None
    config: DictConfig | None = None
    hydra: DictConfig | None = None  # hydra.yaml's `hydra` node
    overrides: list[str] | None = None
    problems: list[str] = field(default_factory=list)
    result_unreadable: bool = False  # result.json is there but cannot be used


def read_trial_dir(trial_dir: Path, state: str | None = None) -> TrialDir:
    """Read a trial dir, noting each file that is damaged or missing. `state` is the study's
    for the trial, if there is a study: what a trial has written depends on how far it got.

    Missing is a problem only for a file the trial must have by then: .hydra/ (written before
    the job starts) unless the study says the trial is running, waiting, or failed (possibly
    before its job started); result.json once the study says COMPLETE or PRUNED; metrics.csv
    once result.json counts epochs.
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
            loaded = files.read_hydra_file(name)
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


def load_trials(sweep_dir: str | Path, storage: str | None = None) -> pd.DataFrame:
    """One row per trial dir, and per trial of the study whose dir is gone; sorted by the
    objective in its direction (best first).

    Columns: number, state (a Status value), objective, direction, value, best_epoch,
    best_val_acc, best_val_loss, test_acc, test_loss, epochs_run, wall_time_s (the trial's
    training time), num_params, params_<key> for every swept key (typed, from the composed
    config), trial_dir, best_checkpoint, fail_reason, problem.
    `problem`: None, or which files are damaged or missing and why ("; " between them). `state`
    is the study's when there is a study; without one, result.json's, RUNNING while there is no
    result.json yet, and None (unknown) when result.json is there but cannot be read.
    `storage`: the sweep's storage URL when its study is not in the dir's journal file.
    """
    sweep = Path(sweep_dir)
    dirs = trial_dirs(sweep)
    keys = swept_keys(sweep)
    study_trials = load_study_trials(sweep, storage)
    found = {d.name for d in dirs}
    # the study's trials whose dirs are not found: deleted, not copied along, or failed before
    # the job wrote anything (a dir holding only its .lock)
    dirs += [sweep / name for name in sorted(study_trials) if name not in found]
    rows = []
    directions = set()
    for trial_dir in dirs:
        study_trial = study_trials.get(trial_dir.name)
        trial = read_trial_dir(trial_dir, study_trial.state.name if study_trial else None)
        result = trial.result
        if result is not None and result.direction:
            directions.add(result.direction)
        row: dict[str, Any] = {
            "number": study_trial.number if study_trial else _job_number(trial_dir, trial.hydra),
            "state": _state(trial, study_trial),
            **_result_columns(result),
        }
        if result is None and study_trial is not None:
            row["value"] = _study_value(study_trial)
        row.update(_params(trial, study_trial, keys))
        files = TrialFiles(trial_dir)
        row["trial_dir"] = str(trial_dir)
        row["best_checkpoint"] = str(files.best) if files.best.is_file() else None
        reason = result.reason if result is not None and result.status is Status.FAIL else None
        if study_trial is not None and reason is None:
            reason = study_trial.user_attrs.get(FAIL_REASON)
        row["fail_reason"] = reason
        row["problem"] = "; ".join(trial.problems) or None
        rows.append(row)

    table = pd.DataFrame(rows)
    maximize = directions != {"minimize"}
    table = table.sort_values(
        ["value", "number"], ascending=[not maximize, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


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
        choices = OmegaConf.select(trial.hydra, "runtime.choices", default=None) or {}
        return {f"params_{k}": _param(trial.config, choices, k) for k in keys}
    if study_trial is not None:
        params = study_trial.params
    else:
        params = _override_values(trial.overrides or [])
    return {f"params_{k}": params.get(k) for k in keys}


def _override_values(overrides: list[str]) -> dict[str, Any]:
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return {}
    return {o.get_key_element(): o.value() for o in parsed if not o.is_sweep_override()}


def _result_columns(result: TrialResult | None) -> dict[str, Any]:
    """The table's columns from result.json; a trial without one has only epochs_run = 0."""
    columns = dict.fromkeys(RESULT_COLUMNS) | {"epochs_run": 0}
    if result is not None:
        columns.update({name: getattr(result, name) for name in RESULT_COLUMNS})
    return columns


def _param(config: DictConfig | ListConfig, choices: Any, key: str) -> Any:
    if key in choices:  # a config group, e.g. model=cnn: the option's name
        return choices[key]
    value = OmegaConf.select(config, key, default=None)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    return value


def load_curves(sweep_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every trial in long form: trial, epoch, metric, split, value.
    Trials without a whole metrics.csv have none (load_trials' `problem` says why)."""
    frames = []
    for trial_dir in trial_dirs(sweep_dir):
        try:
            rows = TrialFiles(trial_dir).read_metrics()
        except TrialFileError:
            continue
        if not rows:
            continue
        wide = pd.DataFrame(rows)
        long = wide.melt(id_vars="epoch", value_vars=sorted(SPLIT_METRICS), var_name="column")
        long[["split", "metric"]] = long["column"].str.split("_", n=1, expand=True)
        long.insert(0, "trial", _job_number(trial_dir, _hydra_node(trial_dir)))
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
        known = ", ".join(str(n) for n in sorted(trials["number"]))
        raise SweepDirError(f"no trial {number} in this sweep; its trials are: {known}")
    return match.iloc[0]
