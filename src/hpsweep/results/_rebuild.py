"""Rebuild a sweep's study from its trial dirs alone (`hpsweep rebuild`), when its storage is
lost or damaged: a deleted journal, a sweep dir copied without it, a database gone.

The sweeper writes the study (its search space, trial numbers, grid points: its own format);
this module tells it what each trial dir's files say: the trial's state and value in
result.json, the objective it reported each epoch in metrics.csv. The overrides and job number
in `.hydra/` are read by the same readers `load_trials` uses.
"""

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from hpsweep.record import OBJECTIVES, Status, TrialFileError, TrialFiles, TrialResult
from hpsweep.results._sweep_files import SweepDirError, find_trials, name_number
from hydra_plugins.hpsweep_sweeper import Rebuilt, TrialFound, rebuild_study


def rebuild(sweep_dir: Path | str, storage: str | None = None) -> Rebuilt:
    """Write the study of `sweep_dir` anew from its trial dirs alone: parameters, states,
    values, per-epoch values and the search space. Running the sweep command again continues
    it. `storage`: where to (default: the sweep's `storage` setting from its multirun.yaml); a
    journal file that is there is moved aside to <name>.bak-<time>, never overwritten; in a
    database, the study must not exist yet. RebuildError says what stops it."""
    sweep = Path(sweep_dir)

    def read_trials(config: DictConfig, notes: list[str]) -> list[TrialFound]:
        try:
            trials = find_trials(sweep)
        except SweepDirError:  # no trial dir: an empty study
            return []
        objective = config.get("objective")
        return [
            read_trial(d, trials.numbers.get(d), objective, notes)
            for d in sorted(trials.dirs, key=lambda d: d.name)
        ]

    return rebuild_study(sweep, read_trials, storage, direction=("objective", OBJECTIVES.get))


def read_trial(trial_dir: Path, number: int | None, objective: Any, notes: list[str]) -> TrialFound:
    """The trial as its files tell it. A file that cannot be used makes it a FAIL trial whose
    fail_reason says which and why, and a line in `notes`."""
    found = TrialFound(trial_dir.name, number, name_number(trial_dir.name))
    files = TrialFiles(trial_dir)
    try:
        overrides = [str(o) for o in files.read_hydra_file("overrides.yaml")]
        result = files.read_result()
    except TrialFileError as e:
        found.fail_reason = f"rebuilt from its files: {e}"
        notes.append(f"{trial_dir.name}: {e}; rebuilt as FAIL")
        return found
    found.overrides = overrides
    objective = result.objective if result is not None else objective
    if isinstance(objective, str) and (
        files.metrics.exists() or (result is not None and result.epochs_run)
    ):
        try:
            rows = files.read_metrics()
            found.intermediate = {int(r["epoch"]): r[objective] for r in rows if objective in r}
        except TrialFileError as e:
            notes.append(f"{trial_dir.name}: {e}; its epochs are not in the rebuilt trial")
    _set_outcome(found, result, notes)
    return found


def _set_outcome(found: TrialFound, result: TrialResult | None, notes: list[str]) -> None:
    if result is None or result.status is Status.RUNNING:
        # Its worker is gone (no lock is held): the sweeper, starting again, fails it and runs
        # it again in its dir from last.pt, as it would have with the old study.
        found.state = "RUNNING"
        return
    if result.status is Status.FAIL:
        found.state, found.fail_reason = "FAIL", result.reason
        return
    if result.status is Status.PRUNED:
        found.state = "PRUNED"
        last = found.intermediate[max(found.intermediate)] if found.intermediate else None
        # Optuna's own rule for a pruned trial's value: its last reported one
        found.value = last if last is not None and math.isfinite(last) else None
        return
    if result.value is None or not math.isfinite(result.value):
        why = f"result.json: COMPLETE with value {result.value}"
        found.fail_reason = f"rebuilt from its files: {why}"
        notes.append(f"{found.dir}: {why}; rebuilt as FAIL")
        return
    found.state, found.value = "COMPLETE", result.value
