"""What a sweep searched and its Optuna study, as the tables of hpsweep.results read them: the
swept keys and their distributions (from multirun.yaml, by the sweeper's own rules, else from
the trials' overrides), and the study's trials by trial dir.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hpsweep.record import TrialFileError, TrialFiles
from hpsweep.results import _read_cache as read_cache
from hpsweep.results._sweep_files import trial_dirs
from hydra_plugins.hpsweep_sweeper import (
    JOURNAL_FILE,
    TRIAL_DIR,
    open_sweep_storage,
    retries_left,
    search_space,
)

log = logging.getLogger("hpsweep.results")


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
    # trials that never got a trial dir: their worker stopped before it claimed one
    no_dir: list[Any] = field(default_factory=list)
    no_retry_left: set[int] = field(default_factory=set)
    directions: set[str] = field(default_factory=set)  # of the studies' (first) objectives


def load_study_trials(sweep_dir: Path, storage: str | None = None) -> StudyTrials:
    found = StudyTrials()
    for study in open_studies(sweep_dir, storage):
        found.directions.add(study.directions[0].name.lower())
        for trial in study.get_trials(deepcopy=False):
            name = trial.user_attrs.get(TRIAL_DIR)
            if name:
                found.by_dir.setdefault(name, []).append(trial)
                if trial.state.name == "RUNNING" and retries_left(study, trial) == 0:
                    found.no_retry_left.add(trial.number)
            elif trial.state.name in ("RUNNING", "FAIL"):  # WAITING: queued, not yet asked
                found.no_dir.append(trial)
    for trials in found.by_dir.values():
        trials.sort(key=lambda t: t.number)
    return found
