"""The sweep figures about parameters (`hpsweep plot`, drawn by plots._sweep):

    plot_params       which values of each parameter give a good objective?
    plot_importances  which parameters decide the objective?

and the swept parameters themselves: which keys, and whether each is drawn as categories
(choice), on a log axis or on a linear one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter

from hpsweep.plots._common import (
    BEST_RING,
    STATES,
    best_first,
    best_handle,
    draw_points,
    edge_note,
    failed_at_edge,
    is_number,
    key_of,
    maximize_of,
    message_figure,
    objective_of,
    outside_handle,
    plain,
    robust_range,
    scored,
    side_legend,
    state_handles,
    summary,
    value_text,
)


@dataclass(frozen=True)
class SweptParam:
    key: str
    kind: str  # "choice" (a categorical axis), "log" or "linear"
    choices: tuple[Any, ...] = ()  # a choice's values, in the order the space lists them

    @property
    def column(self) -> str:
        return f"params_{self.key}"


def swept_params(sweep_dir: str | Path, trials: pd.DataFrame) -> list[SweptParam]:
    """The swept keys and how to draw each, from the search space in multirun.yaml as the
    sweeper parses it. A key it cannot tell (no multirun.yaml, a line the sweeper refuses) is a
    choice unless all its values are numbers."""
    from optuna.distributions import CategoricalDistribution

    from hpsweep.results import swept_distributions, swept_keys

    sweep = Path(sweep_dir)
    distributions = swept_distributions(sweep) or {}
    found = []
    for key in swept_keys(sweep):
        d = distributions.get(key)
        if isinstance(d, CategoricalDistribution):
            found.append(SweptParam(key, "choice", tuple(d.choices)))
        elif d is not None:
            found.append(SweptParam(key, "log" if d.log else "linear"))
        else:
            column = f"params_{key}"
            values = list(trials[column].dropna()) if column in trials else []
            if values and all(map(is_number, values)):
                found.append(SweptParam(key, "linear"))
            else:
                found.append(SweptParam(key, "choice", tuple(sorted(set(values), key=key_of))))
    return found


def plot_params(trials: pd.DataFrame, params: list[SweptParam]) -> Figure:
    """The objective against each swept parameter: categories for choices, a log axis for
    log-scaled ones, points by state, the best trial ringed."""
    objective, maximize = objective_of(trials), maximize_of(trials)
    bad = "low" if maximize else "high"
    points = scored(trials, ("COMPLETE", "PRUNED"))
    failed = trials[trials["state"] == "FAIL"]
    ylim = robust_range(points["value"], bad)
    best = best_first(scored(trials, ("COMPLETE",)), maximize).head(1)

    ncols = max(1, min(len(params), 4))
    nrows = max(1, -(-len(params) // ncols))
    fig = Figure(figsize=(3.6 * ncols + 2.4, 3.3 * nrows + 1.0), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    outside: dict[int, float] = {}  # trial number -> value
    for ax, param in zip(axes, params, strict=False):
        drawn = pd.concat([points, failed])
        x = x_positions(ax, param, drawn)
        for state in ("COMPLETE", "PRUNED"):
            part = points[points["state"] == state]
            marker, color, _ = STATES[state]
            out = draw_points(ax, x[part.index], part["value"], ylim, marker, color)
            outside.update(zip(part["number"][out], part["value"][out], strict=True))
        if len(failed):
            failed_at_edge(ax, x[failed.index], bad)
        if len(best):
            ax.scatter(x[best.index], best["value"], s=220, linewidths=1.6, **BEST_RING)
        scale = {"choice": "choice", "log": "log scale"}.get(param.kind, "linear")
        ax.set_xlabel(f"{param.key} ({scale})")
        ax.set_ylabel(objective)
        if ylim is not None:
            ax.set_ylim(ylim)
        ax.grid(alpha=0.3)
    for ax in axes[len(params) :]:
        ax.set_axis_off()
    if not params:
        edge_note(axes[0], "no swept parameters found in this sweep", "high")
    handles = state_handles(points, failed, bad)
    if len(best):
        handles.append(best_handle(best.iloc[0]))
    if outside:
        handles.append(outside_handle(list(outside.values()), bad))
    if handles:
        side_legend(axes[min(ncols, max(len(params), 1)) - 1], handles)
    better = "higher" if maximize else "lower"
    fig.suptitle(
        f"{objective} against each swept parameter ({better} is better)\n{summary(trials)}"
    )
    return fig


def plot_importances(trials: pd.DataFrame, params: list[SweptParam]) -> Figure:
    """Optuna's parameter importances (its default evaluator, PED-ANOVA) over the complete
    trials of the table; a figure saying why, where there is nothing to rank."""
    import optuna

    objective, maximize = objective_of(trials), maximize_of(trials)
    title = f"Parameter importances for {objective}"
    usable = [p for p in params if p.column in trials]
    if len(usable) < 2:
        only = (
            f"only one parameter was swept ({usable[0].key})"
            if usable
            else "no parameter was swept"
        )
        return message_figure(title, f"{only}: nothing to rank. plot_params.png shows its effect.")
    complete = scored(trials, ("COMPLETE",)).dropna(subset=[p.column for p in usable])
    if len(complete) < 2:
        have = f"only {len(complete)} complete trial" if len(complete) else "no complete trial"
        return message_figure(title, f"{have} yet: importances need at least 2.")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory"
    try:
        study = in_memory_study(complete, usable, maximize)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            importances = optuna.importance.get_param_importances(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    said = [str(w.message) for w in caught if "importances will be equal" in str(w.message)]
    if said:  # Optuna's own word that the numbers mean nothing yet
        return message_figure(title, f"{len(complete)} complete trials: {said[0]}")

    names = sorted(importances, key=lambda n: importances[n])  # most important at the top
    fig = Figure(figsize=(8, 0.55 * len(names) + 2.0), layout="constrained")
    ax = fig.subplots()
    bars = ax.barh(names, [importances[n] for n in names], color="C0")
    ax.bar_label(bars, fmt="%.2f", padding=3, fontsize="small")
    ax.set_xlim(0, max(1.0, max(importances.values()) * 1.15))
    ax.set_xlabel("importance (PED-ANOVA: how much it decides reaching the top 10%; sums to 1)")
    ax.set_ylabel("parameter")
    ax.grid(axis="x", alpha=0.3)
    rough = " (under 10: a rough guess)" if len(complete) < 10 else ""
    fig.suptitle(f"{title}\nfrom {len(complete)} complete trials{rough}")
    return fig


# -- helpers ---------------------------------------------------------------------------------


def in_memory_study(rows: pd.DataFrame, params: list[SweptParam], maximize: bool) -> Any:
    """An Optuna study of the table's rows: a grid multirun has no study, and a sweep's study
    would hold the trials `hpsweep plot` leaves out."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distributions: dict[str, Any] = {}
    for p in params:
        values = [plain(v) for v in rows[p.column]]
        if p.kind == "choice":
            extra = sorted(
                {key_of(v): v for v in values if v not in p.choices}.values(), key=key_of
            )
            distributions[p.key] = CategoricalDistribution([*p.choices, *extra])
        else:  # bounds as observed: what a sweep with a changed space ran is what counts
            low, high = float(min(values)), float(max(values))
            distributions[p.key] = FloatDistribution(low, high, log=p.kind == "log" and low > 0)
    study = optuna.create_study(direction="maximize" if maximize else "minimize")
    for _, row in rows.iterrows():
        chosen = {
            p.key: plain(row[p.column]) if p.kind == "choice" else float(row[p.column])
            for p in params
        }
        trial = optuna.trial.create_trial(
            params=chosen, distributions=distributions, value=float(row["value"])
        )
        study.add_trial(trial)
    return study


def x_positions(ax: Axes, param: SweptParam, rows: pd.DataFrame) -> pd.Series:
    """Each row's x for this parameter, and the axis set up for it: a choice's values evenly
    spaced in the order the space lists them (points sharing one spread a little, so they can
    be counted), a log axis for log-scaled ones."""
    values = rows[param.column] if param.column in rows else pd.Series(None, index=rows.index)
    if param.kind != "choice":
        if param.kind == "log":
            ax.set_xscale("log")
            # 1, 2 and 5 of each decade, unlabelled minor ticks: a range under a decade still
            # gets labels, and they never overlap
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        return pd.Series(
            [plain(v) if is_number(v) else np.nan for v in values], index=rows.index, dtype=float
        )
    keys = values.map(lambda v: None if v is None or v is pd.NA or v != v else key_of(v))
    order = [key_of(c) for c in param.choices]
    order += sorted(set(keys.dropna()) - set(order))
    x = keys.map({k: float(i) for i, k in enumerate(order)}).astype(float)
    # Points sharing a value spread sideways by trial number times the golden ratio: scattered
    # evenly, and unrelated to the value (spreading in order of number or value draws a trend).
    shared = keys.map(keys.value_counts()) > 1
    x[shared] += ((rows["number"][shared] * 0.618034) % 1 - 0.5) * 0.3
    shown = [value_text(c) for c in param.choices] + order[len(param.choices) :]
    long = len(shown) > 6 or any(len(k) > 6 for k in shown)
    ax.set_xticks(
        range(len(shown)), shown, rotation=30 if long else 0, ha="right" if long else "center"
    )
    ax.set_xlim(-0.6, len(order) - 0.4)
    return x
