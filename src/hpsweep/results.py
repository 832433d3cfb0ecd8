"""A sweep's trials as pandas tables, from its files on disk alone (a sweep dir copied from a
cluster works) and from the Optuna study too when its journal file is there.

    trials = load_trials("multirun/mlp")          # one row per trial dir, best first
    curves = load_curves("multirun/mlp")          # long form: trial, epoch, metric, split, value
    best_config("multirun/mlp")                   # the best trial's composed config

Works on sweeps of the hpsweep sweeper (multirun/<study>/trial_NNNN/) and on plain Hydra
multiruns of hpsweep-train (multirun/<date>/<time>/<n>/).
"""

from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from hpsweep.record import SPLIT_METRICS, Status, TrialFiles, TrialResult
from hydra_plugins.hpsweep_sweeper import FAIL_REASON, JOURNAL_FILE, TRIAL_DIR, open_sweep_storage

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


def trial_dirs(sweep_dir: str | Path) -> list[Path]:
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise SweepDirError(f"{sweep} is not a folder")
    dirs = [p for p in sweep.iterdir() if (p / ".hydra" / "config.yaml").is_file()]
    if not dirs:
        what = "an empty sweep" if (sweep / "multirun.yaml").is_file() else "not a sweep dir"
        raise SweepDirError(f"{sweep} is {what}: no trial dirs (*/.hydra/config.yaml) in it")
    return sorted(dirs, key=_job_number)


def _job_number(trial_dir: Path) -> int:
    return int(OmegaConf.load(trial_dir / ".hydra" / "hydra.yaml").hydra.job.num)


def swept_keys(sweep_dir: str | Path) -> dict[str, bool]:
    """Keys the sweep varied -> whether they were searched on a log scale.

    From multirun.yaml: the sweeper's `params` and the sweeps given on the command line. Without
    it, the override keys whose values differ between trials.
    """
    sweep = Path(sweep_dir)
    multirun = sweep / "multirun.yaml"
    if multirun.is_file():
        cfg = OmegaConf.load(multirun)
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
        for line in OmegaConf.load(trial / ".hydra" / "overrides.yaml"):
            key, _, value = str(line).partition("=")
            values.setdefault(key, set()).add(value)
    return {k: False for k, v in values.items() if len(v) > 1}


def open_studies(sweep_dir: Path, storage: str | None = None) -> list[Any]:
    """The Optuna studies of the sweep: from `storage`, else its journal file; [] without."""
    journal = sweep_dir / JOURNAL_FILE
    if storage is None and not journal.is_file():
        return []
    import optuna

    client = open_sweep_storage(sweep_dir, storage)
    return [
        optuna.load_study(study_name=summary.study_name, storage=client)
        for summary in optuna.get_all_study_summaries(client)
    ]


def load_study_trials(sweep_dir: Path, storage: str | None = None) -> dict[str, Any]:
    """trial dir name -> the newest Optuna FrozenTrial recorded for it."""
    by_dir: dict[str, Any] = {}
    for study in open_studies(sweep_dir, storage):
        for trial in study.get_trials(deepcopy=False):
            name = trial.user_attrs.get(TRIAL_DIR)
            if name and (name not in by_dir or trial.number > by_dir[name].number):
                by_dir[name] = trial
    return by_dir


def load_trials(sweep_dir: str | Path, storage: str | None = None) -> pd.DataFrame:
    """One row per trial dir, sorted by the objective in its direction (best first).

    Columns: number, state (a Status value), objective, direction, value, best_epoch,
    best_val_acc, best_val_loss, test_acc, test_loss, epochs_run, wall_time_s (the trial's
    training time), num_params, params_<key> for every swept key (typed, from the composed
    config), trial_dir, best_checkpoint, fail_reason.
    `storage`: the sweep's storage URL when its study is not in the dir's journal file.
    """
    sweep = Path(sweep_dir)
    dirs = trial_dirs(sweep)
    keys = swept_keys(sweep)
    study_trials = load_study_trials(sweep, storage)
    rows = []
    directions = set()
    for trial_dir in dirs:
        files = TrialFiles(trial_dir)
        result = files.read_result()
        hydra_cfg = OmegaConf.load(trial_dir / ".hydra" / "hydra.yaml").hydra
        config = OmegaConf.load(trial_dir / ".hydra" / "config.yaml")
        study_trial = study_trials.get(trial_dir.name)
        if result is not None and result.direction:
            directions.add(result.direction)
        status = Status.RUNNING if result is None else result.status
        row: dict[str, Any] = {
            "number": study_trial.number if study_trial else int(hydra_cfg.job.num),
            "state": study_trial.state.name if study_trial else status.value,
            **_result_columns(result),
        }
        for key in keys:
            row[f"params_{key}"] = _param(config, hydra_cfg.runtime.choices, key)
        row["trial_dir"] = str(trial_dir)
        row["best_checkpoint"] = str(files.best) if files.best.is_file() else None
        reason = result.reason if result is not None and status is Status.FAIL else None
        if study_trial is not None and reason is None:
            reason = study_trial.user_attrs.get(FAIL_REASON)
        row["fail_reason"] = reason
        rows.append(row)

    table = pd.DataFrame(rows)
    maximize = directions != {"minimize"}
    table = table.sort_values(
        ["value", "number"], ascending=[not maximize, True], na_position="last", kind="stable"
    )
    return table.reset_index(drop=True)


def _result_columns(result: TrialResult | None) -> dict[str, Any]:
    """The table's columns from result.json; a trial without one has only epochs_run = 0."""
    columns = dict.fromkeys(RESULT_COLUMNS) | {"epochs_run": 0}
    if result is not None:
        columns.update({name: getattr(result, name) for name in RESULT_COLUMNS})
    return columns


def _param(config: DictConfig | ListConfig, choices: DictConfig, key: str) -> Any:
    if key in choices:  # a config group, e.g. model=cnn: the option's name
        return choices[key]
    value = OmegaConf.select(config, key, default=None)
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    return value


def load_curves(sweep_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics of every trial in long form: trial, epoch, metric, split, value."""
    frames = []
    for trial_dir in trial_dirs(sweep_dir):
        files = TrialFiles(trial_dir)
        if not files.metrics.is_file():
            continue
        wide = pd.DataFrame(files.read_metrics())
        long = wide.melt(id_vars="epoch", value_vars=sorted(SPLIT_METRICS), var_name="column")
        long[["split", "metric"]] = long["column"].str.split("_", n=1, expand=True)
        long.insert(0, "trial", _job_number(trial_dir))
        frames.append(long[["trial", "epoch", "metric", "split", "value"]])
    if not frames:
        return pd.DataFrame(columns=["trial", "epoch", "metric", "split", "value"])
    return pd.concat(frames, ignore_index=True)


def best_trial(sweep_dir: str | Path, storage: str | None = None) -> pd.Series:
    """The best COMPLETE trial's row of `load_trials`."""
    trials = load_trials(sweep_dir, storage)
    complete = trials[(trials["state"] == "COMPLETE") & trials["value"].notna()]
    if complete.empty:
        raise SweepDirError(f"no trial in {sweep_dir} has completed")
    return complete.iloc[0]


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
