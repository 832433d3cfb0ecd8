"""What `hpsweep rebuild` reads (see _rebuild): the sweep's multirun.yaml, for its study's
name, directions and search space, and each trial dir, for a trial's number, parameters,
state, value and the objective it reported each epoch.
"""

import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hpsweep.record import OBJECTIVES, Status, TrialFileError, TrialFiles, TrialResult
from hydra_plugins.hpsweep_sweeper import RebuildError
from hydra_plugins.hpsweep_sweeper._search_space import (
    SearchSpace,
    SearchSpaceError,
    parse_search_space,
)

# Any of these marks a folder as a trial dir (hpsweep.sweep_files finds them by the same marks).
TRIAL_MARKS = (".hydra", "result.json", "metrics.csv")


@dataclass
class Sweep:
    """What multirun.yaml says about the sweep."""

    study_name: str
    directions: list[str]
    space: SearchSpace
    grid: dict[str, list[Any]] | None  # the grid sampler's grid, keys sorted as it sorts them
    grid_points: list[tuple[Any, ...]]  # the grid's points in the order of the sampler's ids
    objective: str | None
    storage: str | None
    warm_started: bool
    custom_search_space: bool
    command: str


@dataclass
class FoundTrial:
    """A trial dir as the rebuilt study will have it."""

    dir: str  # its name, relative to the sweep dir as the sweeper records it
    number: int | None  # the newest trial in it: hydra.yaml's job number
    first: int | None  # the trial it was made for: the number its name ends with
    state: TrialState = TrialState.FAIL
    value: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    intermediate: dict[int, float] = field(default_factory=dict)
    fail_reason: str | None = None


# -- the sweep ---------------------------------------------------------------------------------


def read_multirun(sweep_dir: Path) -> Sweep:
    path = sweep_dir / "multirun.yaml"
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise RebuildError(
            f"{path} is missing: the search space and the study's name are in it"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, OmegaConfBaseException) as e:
        raise RebuildError(f"{path} cannot be read: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise RebuildError(f"{path} is not a mapping")
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    # hydra_optuna_sweeper: hpsweep's sweeper under the old plugin's name (a config of its)
    if not target.startswith(("hydra_plugins.hpsweep_sweeper.", "hydra_plugins.hydra_optuna_")):
        raise RebuildError(
            f"{path}: hydra.sweeper is {target or 'missing'}, not hpsweep's: no study to rebuild"
        )
    try:
        settings = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        task = [str(o) for o in OmegaConf.select(cfg, "hydra.overrides.task", default=[])]
        extra = [str(o) for o in OmegaConf.select(cfg, "hydra.overrides.hydra", default=[])]
        objective = OmegaConf.select(cfg, "objective", default=None)
    except OmegaConfBaseException as e:
        raise RebuildError(f"{path}: {str(e).splitlines()[0]}") from None
    assert isinstance(settings, dict)
    sampler = settings.get("sampler") or {}
    try:
        space = parse_search_space(settings.get("params") or {}, task)
        is_grid = str(sampler.get("_target_", "")).endswith("GridSampler")
        grid = space.grid_values() if is_grid else None
    except (SearchSpaceError, HydraException) as e:
        raise RebuildError(f"{path}: hydra.sweeper.params: {e}") from None
    grid_points = []
    if grid is not None:
        # The grid sampler numbers the points in an order its seed shuffles; Optuna has no
        # public way to ask which number a point has, so its own list is read.
        grid_points = list(optuna.samplers.GridSampler(grid, seed=sampler.get("seed"))._all_grids)
    directions = study_directions(settings.get("direction"), objective)
    if len(directions) != 1:
        raise RebuildError(
            f"{path}: hydra.sweeper.direction={directions}: result.json holds one value, so "
            "only a single-objective study can be rebuilt"
        )
    command = ["hpsweep-train", "-m", *task, *(o for o in extra if o != "hydra.mode=MULTIRUN")]
    return Sweep(
        study_name=str(settings.get("study_name")),
        directions=directions,
        space=space,
        grid=None if grid is None else {k: list(grid[k]) for k in sorted(grid)},
        grid_points=grid_points,
        objective=objective if isinstance(objective, str) else None,
        storage=settings.get("storage"),
        warm_started=bool(settings.get("enqueue")),
        custom_search_space=bool(settings.get("custom_search_space")),
        command=" ".join(shlex.quote(o) for o in command),
    )


def study_directions(direction: Any, objective: Any) -> list[str]:
    """As the sweeper decides them: the setting, or (null) the way hpsweep-train's objective
    improves, maximize for other task functions."""
    if direction is None:
        return [OBJECTIVES.get(objective, "maximize") if isinstance(objective, str) else "maximize"]
    directions = [direction] if isinstance(direction, str) else [str(d) for d in direction]
    if not set(directions) <= {"maximize", "minimize"}:
        raise RebuildError(
            f"multirun.yaml: hydra.sweeper.direction={direction}: not maximize or minimize"
        )
    return directions


# -- one trial dir -----------------------------------------------------------------------------


def is_trial_dir(path: Path) -> bool:
    return path.is_dir() and any((path / mark).exists() for mark in TRIAL_MARKS)


def read_trial(trial_dir: Path, sweep: Sweep, notes: list[str]) -> FoundTrial:
    """The trial as its files tell it. A file that cannot be used makes it a FAIL trial whose
    fail_reason says which and why, and a line in `notes`."""
    found = FoundTrial(trial_dir.name, _job_number(trial_dir), _name_number(trial_dir.name))
    files = TrialFiles(trial_dir)
    try:
        overrides = [str(o) for o in files.read_hydra_file("overrides.yaml")]
        result = files.read_result()
    except TrialFileError as e:
        found.fail_reason = f"rebuilt from its files: {e}"
        notes.append(f"{trial_dir.name}: {e}; rebuilt as FAIL")
        return found
    found.overrides = overrides
    found.params = _params(overrides, sweep.space, trial_dir.name, notes)
    objective = result.objective if result is not None else sweep.objective
    if objective and (files.metrics.exists() or (result is not None and result.epochs_run)):
        try:
            rows = files.read_metrics()
            found.intermediate = {int(r["epoch"]): r[objective] for r in rows if objective in r}
        except TrialFileError as e:
            notes.append(f"{trial_dir.name}: {e}; its epochs are not in the rebuilt trial")
    _set_outcome(found, result, notes)
    return found


def _set_outcome(found: FoundTrial, result: TrialResult | None, notes: list[str]) -> None:
    if result is None or result.status is Status.RUNNING:
        # Its worker is gone (no lock is held): the sweeper, starting again, fails it and runs
        # it again in its dir from last.pt, as it would have with the old study.
        found.state = TrialState.RUNNING
        return
    if result.status is Status.FAIL:
        found.state, found.fail_reason = TrialState.FAIL, result.reason
        return
    if result.status is Status.PRUNED:
        found.state = TrialState.PRUNED
        last = found.intermediate[max(found.intermediate)] if found.intermediate else None
        # Optuna's own rule for a pruned trial's value: its last reported one
        found.value = last if last is not None and math.isfinite(last) else None
        return
    if result.value is None or not math.isfinite(result.value):
        why = f"result.json: COMPLETE with value {result.value}"
        found.fail_reason = f"rebuilt from its files: {why}"
        notes.append(f"{found.dir}: {why}; rebuilt as FAIL")
        return
    found.state, found.value = TrialState.COMPLETE, result.value


def _params(
    overrides: list[str], space: SearchSpace, name: str, notes: list[str]
) -> dict[str, Any]:
    """The overrides of the search space's keys, as values of their distributions."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        notes.append(f"{name}: .hydra/overrides.yaml: {e}; rebuilt without parameters")
        return {}
    params = {}
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            continue
        values = {key: override.value()}
        if key in space.lists:  # key=[128,64,32]: one parameter per element, key.0 ...
            elements = override.value()
            if not isinstance(elements, list) or len(elements) != space.lists[key]:
                notes.append(
                    f"{name}: {override.input_line} is not a list of {space.lists[key]} "
                    "elements, as the search space has; left out of the rebuilt trial"
                )
                continue
            values = {f"{key}.{i}": v for i, v in enumerate(elements)}
        for param, raw in values.items():
            distribution = space.distributions.get(param)
            if distribution is None:
                continue
            value = _as_param(distribution, raw)
            if value is None:
                notes.append(
                    f"{name}: {override.input_line} is outside the search space "
                    f"({param}: {distribution}); left out of the rebuilt trial"
                )
                continue
            params[param] = value[0]
    return params


def _as_param(distribution: BaseDistribution, value: Any) -> tuple[Any] | None:
    """(value,) typed for the distribution, or None when it does not hold it."""
    if isinstance(distribution, CategoricalDistribution):
        # `in` alone would take True for 1: the choice must match its type too
        match = [c for c in distribution.choices if type(c) is type(value) and c == value]
        return (match[0],) if match else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(distribution, IntDistribution):
        if not float(value).is_integer():
            return None
        value = int(value)
    elif isinstance(distribution, FloatDistribution):
        value = float(value)
    else:
        return None
    return (value,) if distribution.low <= value <= distribution.high else None


def _job_number(trial_dir: Path) -> int | None:
    try:
        hydra_cfg = TrialFiles(trial_dir).read_hydra_file("hydra.yaml")
    except TrialFileError:
        return None
    number = OmegaConf.select(hydra_cfg, "job.num", default=None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


def _name_number(name: str) -> int | None:
    digits = re.search(r"(\d+)$", name)
    return int(digits.group(1)) if digits else None
