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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep import read_cache
from hpsweep.record import (
    OBJECTIVES,
    SPLIT_METRICS,
    Status,
    TrialFileError,
    TrialFiles,
    TrialResult,
    is_better,
)
from hpsweep.sweep_files import (
    BEST_PT,
    TRIAL_FILES,
    SweepDirError,
    TrialDir,
    Trials,
    find_trials,
    read_trial_dir,
    select_key,
    trial_dirs,
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
    sweep = Path(sweep_dir)
    cache = read_cache.for_sweep(sweep)
    key = read_cache.stat_key([os.path.join(sweep, "multirun.yaml")])
    try:
        return cast(dict[str, Any] | None, cache.get("space", None, key))
    except KeyError:
        pass
    space = _search_space(sweep)
    cache.put("space", None, key, space)
    return space


def _search_space(sweep: Path) -> dict[str, Any] | None:
    from hydra.errors import HydraException

    cfg = _load_multirun(sweep)
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
    cache = read_cache.for_sweep(sweep)
    keys = tuple(swept_keys(sweep))  # one object: the cache keeps it once, not per trial
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
        row, read = _files_row(trial_dir, state, found, keys, cache)
        if study_trial is not None:
            _add_study(row, read, study_trial, keys)
        if row["state"] == Status.RUNNING.value and not read.has_result:
            running.append((row, read_trial_dir(trial_dir, state)))
        rows.append(row)
        rows += [_superseded(t, trial_dir, keys) for t in in_study[:-1]]
    gone = abandoned_trial_dirs(sweep, [trial.path for _, trial in running])
    for row, trial in running:
        if trial.path in gone:
            row.update(_progress(trial))
            again = row["number"] not in study.no_retry_left
            row["problem"] = "; ".join([_gone(trial, again), *trial.problems])
    cache.save()
    directions = {row["direction"] for row in rows if row["direction"]}

    table = pd.DataFrame(rows)
    for column in INT_COLUMNS:
        table[column] = table[column].astype("Int64")
    maximize = directions != {"minimize"}
    table = table.sort_values(
        ["value", "number"], ascending=[not maximize, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


@dataclass(frozen=True)
class _Read:
    """How a row's cells were found in its files: the study fills in what they lack."""

    has_result: bool  # result.json read: `value` is its
    params_from_config: bool  # params_<key> from the composed config, not the overrides


def _files_row(
    trial_dir: Path,
    state: str | None,
    found: Trials,
    keys: tuple[str, ...],
    cache: read_cache.ReadCache,
) -> tuple[dict[str, Any], _Read]:
    """A trial's row as its files give it; made again only when one of its files, the study's
    state for it or the swept keys changed since an earlier call."""
    stat = found.stats.get(trial_dir) or read_cache.stat_key(
        os.path.join(trial_dir, f) for f in TRIAL_FILES
    )
    number = found.numbers.get(trial_dir)
    key = (state, stat, keys, number, found.single_runs)
    paths = {  # as this call spells the sweep's path, not as the call that cached the row
        "trial_dir": str(trial_dir),
        "best_checkpoint": str(TrialFiles(trial_dir).best) if stat[BEST_PT] else None,
    }
    try:
        row, read = cache.get("row", trial_dir.name, key)
        return row | paths, read  # a copy: the caller adds the study's cells
    except KeyError:
        pass
    trial = read_trial_dir(trial_dir, state, found.hydra.get(trial_dir))
    result = trial.result
    failed = result is not None and result.status is Status.FAIL
    row = {
        "number": number,
        "state": _state(trial),
        **_result_columns(result),
        **_params(trial, keys),
        **paths,
        "retry_of": None if found.single_runs else _retry_of(trial_dir, number),
        "fail_reason": result.reason if failed and result is not None else None,
        "problem": "; ".join(trial.problems) or None,
    }
    read = _Read(result is not None, trial.config is not None and trial.hydra is not None)
    cache.put("row", trial_dir.name, key, (row, read))
    return dict(row), read


def _add_study(row: dict[str, Any], read: _Read, study_trial: Any, keys: tuple[str, ...]) -> None:
    """The study's word on a trial: its number and state, and what the files cannot say."""
    row["number"] = study_trial.number
    row["state"] = str(study_trial.state.name)
    if not read.has_result:
        row["value"] = _study_value(study_trial)
    if not read.params_from_config:
        row.update({f"params_{k}": study_trial.params.get(k) for k in keys})
    row["retry_of"] = study_trial.user_attrs.get(RETRY_OF)
    if row["fail_reason"] is None:
        row["fail_reason"] = study_trial.user_attrs.get(FAIL_REASON)


def _retry_of(trial_dir: Path, number: int | None) -> int | None:
    """From files alone: a trial dir is named after the trial it was made for (trial_0003), and
    its hydra.yaml holds the number of the newest trial that ran in it, a retry if they differ
    (the rule `hpsweep rebuild` follows too)."""
    digits = re.search(r"(\d+)$", trial_dir.name)
    first = int(digits.group(1)) if digits else None
    return first if first is not None and number is not None and first != number else None


def _superseded(trial: Any, trial_dir: Path, keys: tuple[str, ...]) -> dict[str, Any]:
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
        objective = select_key(trial.config, "objective")
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


def _state(trial: TrialDir) -> str | None:
    """The state the files say, without a study."""
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


def _params(trial: TrialDir, keys: tuple[str, ...]) -> dict[str, Any]:
    """params_<key>: from the composed config; with it damaged or gone, from the overrides
    (typed as Hydra parses them), unless the study has them (_add_study)."""
    if trial.config is not None and trial.hydra is not None:
        choices = select_key(trial.hydra, "runtime.choices") or {}
        return {f"params_{k}": _param(trial.config, choices, k) for k in keys}
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
    value = select_key(config, key)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    if isinstance(value, dict | list):
        return str(value)
    return value


def load_curves(sweep_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every trial in long form: trial, epoch, metric, split, value.
    Trials without a whole metrics.csv have none (load_trials' `problem` says why)."""
    import pandas as pd

    found = find_trials(sweep_dir)
    rows = []
    for order, trial_dir in enumerate(found.dirs):
        try:
            metrics = TrialFiles(trial_dir).read_metrics()
        except TrialFileError:
            continue
        number = found.numbers[trial_dir]  # load_trials' `number` of the dir
        rows += [{"order": order, "trial": number, **row} for row in metrics]
    if not rows:
        return pd.DataFrame(columns=["trial", "epoch", "metric", "split", "value"])
    # one melt for all trials (one per trial cost a millisecond each), which stacks metric by
    # metric: the stable sort puts each trial's rows together again, in the dirs' order
    long = pd.DataFrame(rows).melt(
        id_vars=["order", "trial", "epoch"], value_vars=sorted(SPLIT_METRICS), var_name="column"
    )
    long = long.sort_values("order", kind="stable")
    long[["split", "metric"]] = long["column"].str.split("_", n=1, expand=True)
    return long[["trial", "epoch", "metric", "split", "value"]].reset_index(drop=True)


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
