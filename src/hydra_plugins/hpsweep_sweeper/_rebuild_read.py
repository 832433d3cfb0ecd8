"""What rebuild reads for itself (see _rebuild): the sweep's multirun.yaml, for its study's
name, directions and search space, and a trial's overrides as parameters of that space. What
each trial dir says of its outcome is the task's to read (rebuild_study's `read_trials`).
"""

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

from hydra_plugins.hpsweep_sweeper._compat import grid_points
from hydra_plugins.hpsweep_sweeper._names import RebuildError
from hydra_plugins.hpsweep_sweeper._search_space import (
    SearchSpace,
    SearchSpaceError,
    parse_search_space,
)
from hydra_plugins.hpsweep_sweeper._settings import SweepError, direction_for

# A task's word on its direction (declares_direction): the job config's key, and what its
# value implies
Declared = tuple[str, Callable[[Any], str | None]]


@dataclass
class Sweep:
    """What multirun.yaml says about the sweep."""

    study_name: str
    directions: list[str]
    space: SearchSpace
    grid: dict[str, list[Any]] | None  # the grid sampler's grid, keys sorted as it sorts them
    grid_points: list[tuple[Any, ...]]  # the grid's points in the order of the sampler's ids
    config: DictConfig  # the job config the sweep composed, hydra node included
    storage: str | None
    warm_started: bool
    custom_search_space: bool
    arguments: str


# -- the sweep ---------------------------------------------------------------------------------


def same_dir(cfg: DictConfig, sweep_dir: Path) -> bool:
    """Whether `sweep_dir` is the dir the sweep of this multirun.yaml ran in (not a copy)."""
    try:
        started_in = Path(str(OmegaConf.select(cfg, "hydra.runtime.cwd")))
        ran_in = started_in / str(OmegaConf.select(cfg, "hydra.sweep.dir"))
        return ran_in.resolve() == sweep_dir.resolve()
    except (OmegaConfBaseException, OSError, RuntimeError):  # unresolvable: say where it is
        return False


def read_multirun(sweep_dir: Path, declared: Declared | None = None) -> Sweep:
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
    points = []
    if grid is not None:  # the grid sampler numbers the points in an order its seed shuffles
        points = grid_points(grid, sampler.get("seed"))
    directions = study_directions(settings.get("direction"), implied_direction(cfg, declared))
    if len(directions) != 1:
        raise RebuildError(
            f"{path}: hydra.sweeper.direction={directions}: result.json holds one value, so "
            "only a single-objective study can be rebuilt"
        )
    arguments = ["-m", *task, *(o for o in extra if o != "hydra.mode=MULTIRUN")]
    if not same_dir(cfg, sweep_dir):  # a copy: its command continues it here, not there
        arguments = [a for a in arguments if not a.startswith("hydra.sweep.dir=")]
        arguments.append(f"hydra.sweep.dir={sweep_dir.absolute()}")
    return Sweep(
        study_name=str(settings.get("study_name")),
        directions=directions,
        space=space,
        grid=None if grid is None else {k: list(grid[k]) for k in sorted(grid)},
        grid_points=points,
        config=cfg,
        storage=settings.get("storage"),
        warm_started=bool(settings.get("enqueue")),
        custom_search_space=bool(settings.get("custom_search_space")),
        arguments=" ".join(shlex.quote(o) for o in arguments),
    )


def implied_direction(cfg: DictConfig, declared: Declared | None) -> str | None:
    """The direction the task declares for this config, as the sweeper asked it."""
    try:
        found = direction_for(declared, cfg, "the task")
    except SweepError as e:
        raise RebuildError(f"multirun.yaml: {e}") from None
    return None if found is None else found[2]


def study_directions(direction: Any, implied: str | None) -> list[str]:
    """As the sweeper decides them: the setting, or (null) the way the task's objective
    improves, maximize when the task says nothing."""
    if direction is None:
        return [implied or "maximize"]
    directions = [direction] if isinstance(direction, str) else [str(d) for d in direction]
    if not set(directions) <= {"maximize", "minimize"}:
        raise RebuildError(
            f"multirun.yaml: hydra.sweeper.direction={direction}: not maximize or minimize"
        )
    return directions


# -- a trial's parameters ----------------------------------------------------------------------


def trial_params(
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
