"""The search space: hydra-optuna-sweeper's grammar, parsed by Hydra, as Optuna distributions.

    choice(a, b, c)  a,b,c        categorical (also config groups: model=choice(mlp,cnn))
    range(a, b[, step])           evenly spaced numbers from a up to, NOT including, b
    interval(a, b)                uniform float in [a, b]; int(interval(a, b)) for ints
    tag(log, interval(a, b))      log-uniform

`range` follows Python's and Hydra's own rule (the end point is excluded) for every sampler:
range(1, 5) is {1, 2, 3, 4} for TPE, random and grid alike. The old plugin sampled the end point
with TPE/random but left it out of grids.

A list searched element by element, `key: [choice(64, 128), choice(32, 64)]` in `params` or
`key.0=choice(64, 128) key.1=choice(32, 64)`, is one Optuna parameter per element (`key.0`,
`key.1`) and one override for the job (`key=[128,32]`): a config's list (hidden layer widths)
cannot be overridden element by element when the config holds an int there, or fewer elements.
"""

import contextlib
import json
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.trial import Trial

from hydra_plugins.hpsweep_sweeper._names import SearchSpaceError

ELEMENT = re.compile(r"^(?P<base>.+)\.(?P<index>\d+)$")  # key.N: element N of the list at key


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> override value, every trial
    grid: dict[str, list[Any]] = field(default_factory=dict)  # key -> values, discrete keys only
    # key -> its length, for each list searched element by element: its elements are the
    # parameters and fixed values key.0 ... key.N-1, and a job gets them as one override
    lists: dict[str, int] = field(default_factory=dict)

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
        fixed = [f"{k}={v}" for k, v in self.fixed.items() if self.list_of(k) is None]
        swept: list[str] = []
        for name, value in params.items():
            base = self.list_of(name)
            if base is None:
                swept.append(f"{name}={format_value(value)}")
            elif not any(o.startswith(f"{base}=") for o in swept):
                elements = [f"{base}.{i}" for i in range(self.lists[base])]
                texts = [
                    format_value(params[e]) if e in params else self.fixed[e] for e in elements
                ]
                swept.append(f"{base}=[{','.join(texts)}]")
        return fixed + swept

    def list_of(self, name: str) -> str | None:
        """The key of the searched list that `name` is an element of, if any."""
        match = ELEMENT.match(name)
        return match["base"] if match and match["base"] in self.lists else None

    def lists_unlike(self, config: DictConfig) -> list[str]:
        """Searched lists whose length differs from the config's list there: a user who
        searches key.0 of a 3-element list gets 1-element lists, and is told so."""
        unlike = []
        for key, length in self.lists.items():
            configured = OmegaConf.select(config, key, default=None)
            if isinstance(configured, ListConfig) and len(configured) != length:
                unlike.append(
                    f"{key}: the config's list has {len(configured)} elements, each trial's "
                    f"has the {length} searched ({key}.0 to {key}.{length - 1})"
                )
        return unlike

    def expand(self, params: dict[str, Any]) -> dict[str, Any]:
        """Parameter values by parameter name: a searched list's value given as a whole
        (`enqueue: [{model.hidden_sizes: [64, 32]}]`) becomes its elements' (key.0, key.1)."""
        expanded: dict[str, Any] = {}
        for key, value in params.items():
            if key in self.lists and isinstance(value, list | tuple):
                if len(value) != self.lists[key]:
                    raise SearchSpaceError(
                        f"{key}={list(value)}: the search space has {self.lists[key]} elements"
                    )
                expanded.update({f"{key}.{i}": v for i, v in enumerate(value)})
            else:
                expanded[key] = value
        return expanded


def parse_search_space(params: dict[str, Any], arguments: list[str]) -> SearchSpace:
    """`params` from the sweeper config, then command-line `arguments` (which win)."""
    lines = [line for k, v in params.items() for line in _param_lines(k, v)] + list(arguments)
    space = SearchSpace()
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        # The later wins, a whole list and its elements replacing each other too.
        element = ELEMENT.match(key)
        for known in [*space.distributions, *space.fixed]:
            if known == key or (element and known == element["base"]) or _is_element(known, key):
                space.distributions.pop(known, None)
                space.fixed.pop(known, None)
                space.grid.pop(known, None)
        if not override.is_sweep_override():
            space.fixed[key] = override.get_value_element_as_str()
            continue
        distribution, values = _distribution(override)
        space.distributions[key] = distribution
        if values is not None:
            space.grid[key] = values
    space.lists = _searched_lists(space)
    return space


def _param_lines(key: str, value: Any) -> list[str]:
    """`key: [choice(...), 32]` in `params` as one line per element; any other value as one
    line (a list without expressions stays a plain value, as it was before lists were searched)."""
    if isinstance(value, list | tuple):
        value = _rejoin(value)
    if not isinstance(value, list | tuple) or not any(
        isinstance(v, str) and _is_sweep(f"{key}.{i}={v}") for i, v in enumerate(value)
    ):
        return [f"{key}={value}"]
    if any(isinstance(v, list | tuple | dict) for v in value):
        raise SearchSpaceError(
            f"{key}: {value}: a searched list holds one expression or value per element, "
            "not lists or mappings"
        )
    texts = [v if isinstance(v, str) else format_value(v) for v in value]
    return [f"{key}.{i}={text}" for i, text in enumerate(texts)]


def _rejoin(value: list[Any] | tuple[Any, ...]) -> list[Any] | tuple[Any, ...]:
    """YAML's flow style splits `[choice(64, 128), choice(32, 64)]` at every comma, into
    'choice(64', 128, ... : put the pieces back together and split where parentheses close."""
    pieces = [v if isinstance(v, str) else format_value(v) for v in value]
    if all(p.count("(") == p.count(")") for p in pieces):
        return value
    elements, depth, current = [], 0, ""
    for char in ",".join(pieces):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            elements.append(current)
            current = ""
        else:
            current += char
    return [*elements, current]


def _is_sweep(line: str) -> bool:
    try:
        return OverridesParser.create().parse_overrides([line])[0].is_sweep_override()
    except HydraException:  # not an expression: a value, as it was
        return False


def _is_element(name: str, key: str) -> bool:
    match = ELEMENT.match(name)
    return match is not None and match["base"] == key


def _searched_lists(space: SearchSpace) -> dict[str, int]:
    """Lists with a searched element; their elements must be 0..N-1, all given. (Fixed
    elements alone stay Hydra's own element overrides: key.1=32 sets one element.)"""
    indices: dict[str, set[int]] = {}
    searched: set[str] = set()
    for name in [*space.distributions, *space.fixed]:
        match = ELEMENT.match(name)
        if match:
            indices.setdefault(match["base"], set()).add(int(match["index"]))
            if name in space.distributions:
                searched.add(match["base"])
    lists = {}
    for base in sorted(searched):
        given = indices[base]
        missing = sorted(set(range(max(given) + 1)) - given)
        if missing:
            raise SearchSpaceError(
                f"{base}.{missing[0]} is missing: a list searched element by element gets "
                f"exactly the elements given, {base}.0 to {base}.{max(given)}; give each of them"
            )
        lists[base] = len(given)
    return lists


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
