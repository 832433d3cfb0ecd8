"""A sweep's figures (`hpsweep plot`), each answering one question at a glance:

    plot_top_curves   how did the best trials train, and where were the others stopped?
    plot_params       which values of each parameter give a good objective?
    plot_history      did the search improve as it went?
    plot_importances  which parameters decide the objective?

Shared rules: a title saying what is shown, out of how many trials; labelled axes; a legend of
only what is drawn; evenly spaced categories for choice() parameters, a log axis for log-scaled
ones; and a y-range around the bulk of the trials (never cutting off the best), with what falls
outside marked on the frame's edge and counted, so one diverged trial cannot flatten the rest.
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
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

from hpsweep.plots import (
    at_edge,
    draw_points,
    edge_note,
    epoch_axis,
    finite_or_nan,
    is_number,
    key_of,
    mark,
    message_figure,
    outside_handle,
    plain,
    robust_range,
    short_names,
    side_legend,
    value_text,
)

STATES = {  # how each state looks wherever trials are points: marker, color, word
    "COMPLETE": ("o", "C0", "complete"),
    "PRUNED": ("x", "0.45", "pruned"),
    "FAIL": ("X", "C3", "failed"),
}
BEST_RING: dict[str, Any] = {"facecolors": "none", "edgecolors": "C3", "zorder": 3}
OTHER_LINES: dict[str, tuple[str, Any]] = {
    "PRUNED": ("0.65", "-"),
    "FAIL": ("C3", ":"),
}  # beside the top trials' curves


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

    from hpsweep.sweep_study import swept_distributions, swept_keys

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


# -- the four figures ------------------------------------------------------------------------


def sweep_figures(
    sweep_dir: str | Path, top_k: int = 5, trials: pd.DataFrame | None = None
) -> dict[str, Figure]:
    """File name -> Figure, for `plot_sweep` to write (and tests or notebooks to look into)."""
    from hpsweep.results import load_curves, load_trials

    sweep = Path(sweep_dir)
    if trials is None:
        trials = load_trials(sweep)
    trials = trials[trials["problem"].isna()]
    params = swept_params(sweep, trials)
    return {
        "plot_curves.png": plot_top_curves(trials, load_curves(sweep), top_k, params),
        "plot_params.png": plot_params(trials, params),
        "plot_history.png": plot_history(trials),
        "plot_importances.png": plot_importances(trials, params),
    }


def plot_top_curves(
    trials: pd.DataFrame, curves: pd.DataFrame, top_k: int, params: list[SweptParam] | None = None
) -> Figure:
    """Validation accuracy and loss per epoch of the top-k complete trials, each labelled with
    the parameters that differ between them; pruned trials as thin grey lines ending with x
    where the pruner stopped them, failed ones red and dotted."""
    objective, maximize = objective_of(trials), maximize_of(trials)
    complete = best_first(scored(trials, ("COMPLETE",)), maximize)
    top = complete.head(top_k)
    others = {state: trials[trials["state"] == state] for state in ("PRUNED", "FAIL")}
    val = curves[curves["split"] == "val"].sort_values("epoch")
    lines = {key: group for key, group in val.groupby(["trial", "metric"])}
    first = "loss" if objective.endswith("loss") else "acc"
    metrics = (first, "acc" if first == "loss" else "loss")
    labels, legend_title = curve_labels(top, params or [], objective)

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    handles: list[Any] = []
    for ax, metric in zip(fig.subplots(1, 2), metrics, strict=True):
        name = "accuracy" if metric == "acc" else "loss"
        bad = "low" if metric == "acc" else "high"
        top_values = [
            v for n in top["number"] for v in lines.get((n, metric), {"value": []})["value"]
        ]
        other_values = [
            v
            for rows in others.values()
            for n in rows["number"]
            for v in lines.get((n, metric), {"value": []})["value"]
        ]
        # the top trials decide the range (but for a wild first epoch): other curves may leave it
        ylim = (
            robust_range(top_values, bad, k=3.0) if top_values else robust_range(other_values, bad)
        )
        left: dict[str, int] = {}
        for state, rows in others.items():
            color, style = OTHER_LINES[state]
            for number in rows["number"]:
                line = lines.get((number, metric))
                if line is None:
                    continue
                y = line["value"].map(finite_or_nan)
                ax.plot(line["epoch"], y, style, color=color, linewidth=0.9, zorder=1)
                ax.plot(line["epoch"].iloc[-1:], y.iloc[-1:], "x", color=color, zorder=1)
                if leaves(y, ylim):
                    left[state] = left.get(state, 0) + 1
        top_left = []
        for i, (number, label) in enumerate(zip(top["number"], labels, strict=True)):
            line = lines.get((number, metric))
            if line is not None:
                y = line["value"].map(finite_or_nan)
                ax.plot(
                    line["epoch"], y, marker=".", color=f"C{i % 10}", linewidth=1.8, label=label
                )
                top_left += [f"#{number}"] if leaves(y, ylim) else []
        if ylim is not None:
            ax.set_ylim(ylim)
        if left or top_left:
            note = top_left + [f"{n} {STATES[s][2]}" for s, n in left.items()]
            edge_note(ax, f"leaving the frame: {', '.join(note)}", bad)
        if not lines:
            edge_note(ax, "no trial has finished an epoch yet", "high")
        epoch_axis(ax, sorted(set(val["epoch"].astype(int))))
        ax.set_ylabel(f"validation {name}")
        objective_mark = " (the objective)" if objective == f"val_{metric}" else ""
        ax.set_title(f"validation {name}{objective_mark}", fontsize="medium")
        ax.grid(alpha=0.3)
        if not handles:
            handles = ax.get_legend_handles_labels()[0]
    for state, rows in others.items():
        drawn = [n for n in rows["number"] if any((n, m) in lines for m in metrics)]
        if drawn:
            color, style = OTHER_LINES[state]
            word = STATES[state][2]
            label = f"{word} ({len(drawn)}), x where stopped"
            handles.append(Line2D([], [], color=color, linestyle=style, marker="x", label=label))
    if handles:
        legend = {"title": legend_title, "title_fontsize": "small", "alignment": "left"}
        side_legend(fig.axes[-1], handles, **legend)
    shown = (
        f"the top {len(top)} of {len(complete)} complete trials"
        if len(top)
        else "no complete trial"
    )
    fig.suptitle(f"Validation curves of {shown}, by {objective}\n{summary(trials)}")
    return fig


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


def plot_history(trials: pd.DataFrame) -> Figure:
    """Each trial's objective by trial number, points by state, and the best so far."""
    objective, maximize = objective_of(trials), maximize_of(trials)
    bad = "low" if maximize else "high"
    points = scored(trials, ("COMPLETE", "PRUNED"))
    failed = trials[trials["state"] == "FAIL"]
    ylim = robust_range(points["value"], bad)

    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    outside: list[float] = []
    for state in ("COMPLETE", "PRUNED"):
        part = points[points["state"] == state]
        marker, color, _ = STATES[state]
        out = draw_points(ax, part["number"], part["value"], ylim, marker, color)
        outside += list(part["value"][out])
    if len(failed):
        failed_at_edge(ax, failed["number"], bad)
    handles = state_handles(points, failed, bad)
    complete = scored(trials, ("COMPLETE",)).sort_values("number")
    if len(complete):
        so_far = complete["value"].cummax() if maximize else complete["value"].cummin()
        last = max(trials["number"].dropna())  # the line runs on to the latest trial
        ax.step(
            [*complete["number"], last],
            [*so_far, so_far.iloc[-1]],
            where="post",
            color="C2",
            linewidth=1.8,
            zorder=2,
        )
        handles.append(Line2D([], [], color="C2", linewidth=1.8, label="best so far"))
        best = best_first(complete, maximize).head(1)
        ax.scatter(best["number"], best["value"], s=220, linewidths=1.6, **BEST_RING)
        handles.append(best_handle(best.iloc[0]))
    if outside:
        handles.append(outside_handle(outside, bad))
    if ylim is not None:
        ax.set_ylim(ylim)
    ax.set_xlabel("trial number (the order trials started)")
    ax.set_ylabel(f"{objective} ({'higher' if maximize else 'lower'} is better)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    if handles:
        side_legend(ax, handles)
    if points.empty:
        edge_note(ax, "no trial has a value yet", "high")
    fig.suptitle(
        f"Search history: {objective} of each trial, and the best so far\n{summary(trials)}"
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


def leaves(y: pd.Series, ylim: tuple[float, float] | None) -> bool:
    return ylim is not None and bool(((y < ylim[0]) | (y > ylim[1])).any())


def best_handle(row: pd.Series) -> Line2D:
    ring = {"markerfacecolor": "none", "markeredgecolor": "C3", "markersize": 13}
    return mark("o", "C3", f"best: #{row['number']} ({row['value']:.4g})", **ring)


def failed_at_edge(ax: Axes, x: Any, bad_side: str) -> None:
    """Failed trials have no value: they go on the bad side's edge."""
    marker, color, _ = STATES["FAIL"]
    at_edge(ax, x, 0.03 if bad_side == "low" else 0.97, marker, color, s=50)


def state_handles(points: pd.DataFrame, failed: pd.DataFrame, bad_side: str) -> list[Any]:
    """Legend entries for the states drawn, and only those."""
    handles: list[Any] = []
    for state in ("COMPLETE", "PRUNED"):
        n = int((points["state"] == state).sum())
        if n:
            marker, color, word = STATES[state]
            what = f"{word} ({n})" + (": best value before it stopped" if state == "PRUNED" else "")
            handles.append(mark(marker, color, what))
    if len(failed):
        marker, color, word = STATES["FAIL"]
        edge = "bottom" if bad_side == "low" else "top"
        label = f"{word} ({len(failed)}), no value: on the {edge} edge"
        handles.append(mark(marker, color, label))
    return handles


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


def curve_labels(
    top: pd.DataFrame, params: list[SweptParam], objective: str
) -> tuple[list[str], str]:
    """`#7 0.9560  lr=0.0226 bs=256 hs=64`: the trial, its objective and the parameters that
    differ between the shown trials (all of them when one is shown); and the legend's title,
    which spells out the short names and says what the shown trials share."""
    present = [p for p in params if p.column in top]
    differ = [p for p in present if top[p.column].map(key_of).nunique() > 1]
    shown = differ if len(top) > 1 else present
    short = short_names([p.key for p in shown])
    labels = []
    for _, row in top.iterrows():
        values = " ".join(f"{short[p.key]}={value_text(row[p.column])}" for p in shown)
        labels.append(f"#{row['number']} {row['value']:.4f}  {values}".rstrip())
    title = [f"trial, {objective}" + (", params" if shown else "")]
    spelled = ", ".join(f"{s} = {k}" for k, s in short.items() if s != k)
    if spelled:
        title.append(f"({spelled})")
    same = [p for p in present if p not in shown]
    if same and len(top) > 1:
        shared = ", ".join(f"{p.key}={value_text(top[p.column].iloc[0])}" for p in same)
        title.append(f"all {len(top)}: {shared}")
    return labels, "\n".join(title)


def scored(trials: pd.DataFrame, states: tuple[str, ...]) -> pd.DataFrame:
    return trials[trials["state"].isin(states) & trials["value"].map(is_number)]


def best_first(trials: pd.DataFrame, maximize: bool) -> pd.DataFrame:
    return trials.sort_values(["value", "number"], ascending=[not maximize, True], kind="stable")


def summary(trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}
    parts = [f"{counts[s]} {w}" for s, w in words.items() if counts.get(s)]
    return f"{len(trials)} trial{'s' if len(trials) != 1 else ''}: " + ", ".join(parts)


def objective_of(trials: pd.DataFrame) -> str:
    names = trials["objective"].dropna().unique()
    return str(names[0]) if len(names) else "value"


def maximize_of(trials: pd.DataFrame) -> bool:
    return "minimize" not in set(trials["direction"].dropna())
