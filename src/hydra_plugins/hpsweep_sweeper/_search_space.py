"""The search space: hydra-optuna-sweeper's grammar, parsed by Hydra, as Optuna distributions.

    choice(a, b, c)  a,b,c        categorical (also config groups: model=choice(mlp,cnn))
    range(a, b[, step])           evenly spaced numbers from a up to, NOT including, b
    interval(a, b)                uniform float in [a, b]; int(interval(a, b)) for ints
    tag(log, interval(a, b))      log-uniform

`range` follows Python's and Hydra's own rule (the end point is excluded) for every sampler:
range(1, 5) is {1, 2, 3, 4} for TPE, random and grid alike. The old plugin sampled the end point
with TPE/random but left it out of grids.
"""

import contextlib
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import Trial


class SearchSpaceError(ValueError):
    pass


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> override value, every trial
    grid: dict[str, list[Any]] = field(default_factory=dict)  # key -> values, discrete keys only

    def signature(self) -> dict[str, str]:
        """JSON-able description stored with the study, to refuse a changed space on resume.

        Fixed overrides count too: epochs=5 after epochs=3 is another experiment.
        """
        signature = {k: distribution_to_json(d) for k, d in self.distributions.items()}
        signature.update({k: f"fixed: {v}" for k, v in self.fixed.items()})
        return dict(sorted(signature.items()))

    def grid_values(self) -> dict[str, list[Any]]:
        continuous = sorted(set(self.distributions) - set(self.grid))
        if continuous:
            raise SearchSpaceError(
                f"the grid sampler needs discrete values, but {', '.join(continuous)} "
                "is an interval: use choice(...) or range(...)"
            )
        return self.grid

    def suggest(self, trial: Trial) -> dict[str, Any]:
        return {name: _suggest(trial, name, d) for name, d in self.distributions.items()}

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """Command-line overrides that give a job these parameter values."""
        fixed = [f"{k}={v}" for k, v in self.fixed.items()]
        return fixed + [f"{k}={format_value(v)}" for k, v in params.items()]


def parse_search_space(params: dict[str, Any], arguments: list[str]) -> SearchSpace:
    """`params` from the sweeper config, then command-line `arguments` (which win)."""
    lines = [f"{k}={v}" for k, v in params.items()] + list(arguments)
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        space.grid.pop(key, None)
        if not override.is_sweep_override():
            space.fixed[key] = override.get_value_element_as_str()
            continue
        distribution, values = _distribution(override)
        space.distributions[key] = distribution
        if values is not None:
            space.grid[key] = values
    return space


def _distribution(override: Override) -> tuple[BaseDistribution, list[Any] | None]:
    value, line = override.value(), str(override.input_line)
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices: list[Any] = list(override.sweep_iterator())
        if not choices:
            raise SearchSpaceError(f"{line}: no choices; give at least one")
        for choice in choices:
            if not isinstance(choice, str | int | float | bool | type(None)):
                raise SearchSpaceError(f"{line}: choices must be scalars, got {choice!r}")
            _check_finite(line, choice)
        if len(set(map(repr, choices))) < len(choices):
            raise SearchSpaceError(f"{line}: a choice is listed twice")
        return CategoricalDistribution(choices), choices
    if isinstance(value, RangeSweep):
        for bound in (value.start, value.stop, value.step):
            _check_finite(line, bound)
        if not value.step or value.step < 0:
            raise SearchSpaceError(f"{line}: the step must be > 0")
        values: list[Any] = list(override.sweep_iterator())
        if not values:
            raise SearchSpaceError(f"{line}: empty (range's end is excluded: it must be > start)")
        step = value.step
        if isinstance(value.start, int) and isinstance(value.stop, int) and isinstance(step, int):
            return IntDistribution(values[0], values[-1], step=step), values
        # In decimal: 0 + 3 * 0.3 is 0.8999999999999999 in binary, which Optuna would take
        # for a range that the step does not fit, and drop its last value.
        start, step_ = Decimal(str(values[0])), Decimal(str(step))
        values = [float(start + step_ * i) for i in range(len(values))]
        return FloatDistribution(values[0], values[-1], step=step), values
    if isinstance(value, IntervalSweep) and value.start is not None and value.end is not None:
        return _interval(line, value.start, value.end, log="log" in value.tags), None
    raise SearchSpaceError(f"{line}: not a sweep the sampler can search")


def _interval(line: str, low: float, high: float, log: bool) -> BaseDistribution:
    _check_finite(line, low)
    _check_finite(line, high)
    if low > high:
        raise SearchSpaceError(f"{line}: low {low} > high {high}; write the bounds low first")
    if log and low <= 0:
        raise SearchSpaceError(f"{line}: a log scale needs low > 0, got {low}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(low, high, log=log)


def _check_finite(line: str, value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchSpaceError(f"{line}: {value} is not a finite number")


def _suggest(trial: Trial, name: str, distribution: BaseDistribution) -> Any:
    d = distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(name, d.choices)
    if isinstance(d, IntDistribution):
        return trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
    raise TypeError(f"unsupported distribution {d!r}")


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        with contextlib.suppress(HydraException):  # unparsable as it is: quote it
            parsed = OverridesParser.create().parse_overrides([f"k={value}"])[0]
            if not parsed.is_sweep_override() and parsed.value() == value:
                return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)  # repr-exact floats, ints as ints
