"""Every value a sweep can give its jobs, checked before the study is touched: a job config is
composed for the fixed values and each choice (each end of a range or interval), and handed
to the task's own check (`checks_config`), so that a value no job can take is refused in one
line instead of failing trial after trial, and a corrected command is not then refused as a
changed search space.
"""

from collections.abc import Callable, Iterator
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from hydra_plugins.hpsweep_sweeper._derive import derive_config
from hydra_plugins.hpsweep_sweeper._search_space import SearchSpace, SearchSpaceError
from hydra_plugins.hpsweep_sweeper._settings import JobContext, SweepError


def check_values(
    context: JobContext,
    space: SearchSpace,
    enqueued: list[dict[str, Any]],
    check: Callable[[DictConfig], None] | None,
) -> None:
    """SweepError naming the first value that a job config cannot be composed with, or that
    `check` (the task's, if it has one) refuses."""
    base = {name: ends(d)[0] for name, d in space.distributions.items()}
    composed: tuple[DictConfig, list[str]] | None = None
    fixed, base_overrides = space.overrides({}), space.overrides(base)
    for params in variants(base, space.distributions, enqueued, space):
        overrides = space.overrides(params)
        # what this config has that the one before did not (the base: its swept values)
        changed = [o for o in overrides if o not in (fixed if params is base else base_overrides)]
        which = f"a trial with {' '.join(changed)}" if changed else "every trial of this sweep"
        try:
            config = None if composed is None else derive_config(*composed, overrides)
            if config is None:
                config = compose(context, overrides)
            if composed is None:
                composed = (config, overrides)
            if check is not None:
                check(config)
        except Exception as e:  # Hydra's, OmegaConf's and the task's own: one line each
            raise SweepError(
                f"{which} would fail: {first_line(e)} (each value the sweep can give is "
                "checked before it starts)"
            ) from None


def compose(context: JobContext, overrides: list[str]) -> DictConfig:
    loader = context.hydra_context.config_loader
    return loader.load_sweep_config(context.config, [*overrides, *context.job_overrides])


def variants(
    base: dict[str, Any],
    distributions: dict[str, BaseDistribution],
    enqueued: list[dict[str, Any]],
    space: SearchSpace,
) -> Iterator[dict[str, Any]]:
    """The base (each parameter at its first value), then one parameter at a time at each of
    its other values, then each queued trial's values over the base."""
    yield base
    for name, distribution in distributions.items():
        for value in ends(distribution)[1:]:
            yield {**base, name: value}
    for params in enqueued:
        try:
            yield {**base, **space.expand(params)}
        except SearchSpaceError as e:
            raise SweepError(f"hydra.sweeper.enqueue: {e}") from None


def ends(distribution: BaseDistribution) -> list[Any]:
    """The values of a distribution that a check must see: every choice, a range's ends."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution | FloatDistribution):
        low, high = distribution.low, distribution.high
        return [low] if low == high else [low, high]
    raise TypeError(f"unsupported distribution {distribution!r}")


def first_line(error: BaseException) -> str:
    """What an error says, in a line: Hydra's composition error names the override, its
    cause (OmegaConf's) what is wrong with the value."""
    text = str(error).strip().splitlines()
    cause = error.__cause__
    if isinstance(error, HydraException) and cause is not None and str(cause).strip():
        return f"{text[0].rstrip('.') if text else ''}: {str(cause).strip().splitlines()[0]}"
    return text[0] if text else type(error).__name__
