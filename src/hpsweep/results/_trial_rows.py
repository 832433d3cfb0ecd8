"""One trial's row of `load_trials`: what its files say (cached in the read cache until one
of them changes), then what the study adds, and the rows of trials the files cannot speak for
(a trial a retry continued, a running trial whose worker is gone, a trial that never started).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from hpsweep.record import OBJECTIVES, Status, TrialFiles, TrialResult, is_better
from hpsweep.results import _read_cache as read_cache
from hpsweep.results._sweep_files import (
    BEST_PT,
    TRIAL_FILES,
    TrialDir,
    Trials,
    read_trial_dir,
    select_key,
)
from hpsweep.results._sweep_study import parse_overrides
from hydra_plugins.hpsweep_sweeper import FAIL_REASON, RETRY_OF
from hydra_plugins.hpsweep_sweeper import NEVER_STARTED as UNSTARTED_ATTR

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

# how `problem` begins for a RUNNING trial whose worker is gone (its trial dir lock is free)
WORKER_GONE = "worker gone"
# how it begins for a study trial that never got a trial dir
NEVER_STARTED = "never started"


@dataclass(frozen=True)
class Read:
    """How a row's cells were found in its files: the study fills in what they lack."""

    has_result: bool  # result.json read: `value` is its
    params_from_config: bool  # params_<key> from the composed config, not the overrides


def files_row(
    trial_dir: Path,
    state: str | None,
    found: Trials,
    keys: tuple[str, ...],
    cache: read_cache.ReadCache,
) -> tuple[dict[str, Any], Read]:
    """A trial's row as its files give it; made again only when one of its files, the study's
    state for it or the swept keys changed since an earlier call."""
    stat = found.stats.get(trial_dir) or read_cache.stat_key(
        os.path.join(trial_dir, f) for f in TRIAL_FILES
    )
    number = found.numbers.get(trial_dir)
    key = (state, stat, keys, number, found.single_runs, found.keep_records)
    paths = {  # as this call spells the sweep's path, not as the call that cached the row
        "trial_dir": str(trial_dir),
        "best_checkpoint": str(TrialFiles(trial_dir).best) if stat[BEST_PT] else None,
    }
    try:
        row, read = cache.get("row", trial_dir.name, key)
        return row | paths, read  # a copy: the caller adds the study's cells
    except KeyError:
        pass
    trial = read_trial_dir(trial_dir, state, found.hydra.get(trial_dir), found.keep_records)
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
    read = Read(result is not None, trial.config is not None and trial.hydra is not None)
    cache.put("row", trial_dir.name, key, (row, read))
    return dict(row), read


def add_study(row: dict[str, Any], read: Read, study_trial: Any, keys: tuple[str, ...]) -> None:
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


def superseded(trial: Any, trial_dir: Path | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """The row of a trial that a retry continued in its dir (its worker died): the dir's files
    are the retry's, so only the study speaks for it."""
    return {
        "number": trial.number,
        "state": str(trial.state.name),
        **_result_columns(None),
        "epochs_run": len(trial.intermediate_values),  # the epochs it reported before dying
        **{f"params_{k}": trial.params.get(k) for k in keys},
        "trial_dir": None if trial_dir is None else str(trial_dir),
        "best_checkpoint": None,
        "retry_of": trial.user_attrs.get(RETRY_OF),
        "fail_reason": trial.user_attrs.get(FAIL_REASON),
        "problem": None,
    }


def unstarted(trial: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """The row of a study trial that never got a trial dir: its worker stopped between asking
    for it and claiming a dir. A RUNNING one is failed by the sweep's next start; neither
    takes a slot of n_trials."""
    row = superseded(trial, None, keys)
    if trial.user_attrs.get(UNSTARTED_ATTR):
        row["problem"] = f"{NEVER_STARTED} (takes no slot of n_trials)"
    else:
        row["problem"] = (
            f"{NEVER_STARTED}: no trial dir, its worker stopped before claiming one; the "
            "sweep's next start fails it, and it takes no slot of n_trials"
        )
    return row


def progress(trial: TrialDir) -> dict[str, Any]:
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
            **score_columns({k: v for k, v in best.items() if k.startswith("val_")}),
        }
    return columns


def worker_gone(trial: TrialDir, retried: bool) -> str:
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
        columns.update(score_columns(result.scores or {}))
    return columns


def score_columns(scores: dict[str, float]) -> dict[str, float]:
    """A task's other scores (regression's, macro-F1) as columns: best_val_<metric> of the
    best epoch, test_<metric>."""
    return {f"best_{k}" if k.startswith("val_") else k: v for k, v in scores.items()}


def _param(config: dict[str, Any], choices: Any, key: str) -> Any:
    if key in choices:  # a config group, e.g. model=cnn: the option's name
        return choices[key]
    value = select_key(config, key)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    if isinstance(value, dict | list):
        return str(value)
    return value
