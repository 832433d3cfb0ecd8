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

from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from hpsweep.record import Status, TrialFileError, TrialFiles
from hpsweep.results import _read_cache as read_cache
from hpsweep.results._sweep_files import SweepDirError, TrialDir, find_trials, read_trial_dir
from hpsweep.results._sweep_study import load_study_trials, swept_keys
from hpsweep.results._trial_rows import (
    add_study,
    files_row,
    progress,
    superseded,
    unstarted,
    worker_gone,
)
from hydra_plugins.hpsweep_sweeper import abandoned_trial_dirs

if TYPE_CHECKING:
    import pandas as pd

# integer columns, nullable: a trial without result.json has no best epoch (an empty cell,
# not a float NaN that turns 2 into 2.0)
INT_COLUMNS = ("number", "best_epoch", "epochs_run", "num_params", "retry_of")


def load_trials(sweep_dir: str | Path, storage: str | None = None) -> pd.DataFrame:
    """One row per trial of the study (or per trial dir, without one), and per trial of the
    study whose dir is gone; sorted by the objective in its direction (best first).

    Columns: number, state (a Status value), objective, direction, value, best_epoch,
    best_val_acc, best_val_loss, test_acc, test_loss, epochs_run, wall_time_s (the trial's
    training time), num_params, other scores (best_val_<metric>, test_<metric>), params_<key>
    for every swept key (typed, from the composed config), trial_dir, best_checkpoint,
    retry_of, fail_reason, problem.
    `problem`: None, or which files are damaged or missing and why ("; " between them);
    "worker gone after epoch N: ..." for a RUNNING trial whose worker is gone (its cells: its
    progress from metrics.csv); "never started ..." for one that never got a trial dir.
    `state` is the study's when there is a study; without one, result.json's, RUNNING while
    there is no result.json yet, and None (unknown) when result.json cannot be read.
    A trial whose worker died is FAIL, its retry (`retry_of` = its number) runs in its dir:
    both are rows, the FAIL one without the dir's files. `storage`: the sweep's storage URL.
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
        row, read = files_row(trial_dir, state, found, keys, cache)
        if study_trial is not None:
            add_study(row, read, study_trial, keys)
        if row["state"] == Status.RUNNING.value and not read.has_result:
            running.append((row, read_trial_dir(trial_dir, state)))
        rows.append(row)
        rows += [superseded(t, trial_dir, keys) for t in in_study[:-1]]
    rows += [unstarted(t, keys) for t in study.no_dir]
    gone = abandoned_trial_dirs(sweep, [trial.path for _, trial in running])
    for row, trial in running:
        if trial.path in gone:
            row.update(progress(trial))
            again = row["number"] not in study.no_retry_left
            row["problem"] = "; ".join([worker_gone(trial, again), *trial.problems])
    cache.save()
    # the study's direction (a task may write no result.json to say it), else the files'
    directions = study.directions or {row["direction"] for row in rows if row["direction"]}
    table = pd.DataFrame(rows)
    for column in INT_COLUMNS:
        table[column] = table[column].astype("Int64")
    maximize = directions != {"minimize"}
    table = table.sort_values(
        ["value", "number"], ascending=[not maximize, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


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
    wide = pd.DataFrame(rows)
    scores = sorted(c for c in wide.columns if c.startswith(("train_", "val_")))
    long = wide.melt(id_vars=["order", "trial", "epoch"], value_vars=scores, var_name="column")
    long = long[long["value"].notna()]  # a score one task logs and another does not
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
