"""A sweep's figures (`hpsweep plot`), each answering one question at a glance:

    plot_top_curves   how did the best trials train, and where were the others stopped?
    plot_params       which values of each parameter give a good objective? (plots._params)
    plot_history      did the search improve as it went?
    plot_importances  which parameters decide the objective? (plots._params)

Shared rules: a title saying what is shown, out of how many trials; labelled axes; a legend of
only what is drawn; evenly spaced categories for choice() parameters, a log axis for log-scaled
ones; and a y-range around the bulk of the trials (never cutting off the best), with what falls
outside marked on the frame's edge and counted, so one diverged trial cannot flatten the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hpsweep.plots._common import (
    BEST_RING,
    METRIC_NAMES,
    STATES,
    best_first,
    best_handle,
    draw_points,
    edge_note,
    epoch_axis,
    failed_at_edge,
    finite_or_nan,
    key_of,
    maximize_of,
    objective_of,
    outside_handle,
    robust_range,
    save_png,
    scored,
    short_names,
    side_legend,
    state_handles,
    summary,
    value_text,
)
from hpsweep.plots._params import SweptParam, plot_importances, plot_params, swept_params
from hpsweep.record import METRIC_DIRECTIONS

OTHER_LINES: dict[str, tuple[str, Any]] = {
    "PRUNED": ("0.65", "-"),
    "FAIL": ("C3", ":"),
}  # beside the top trials' curves
Lines = dict[Any, pd.DataFrame]  # (trial number, metric) -> its validation curve


# -- the four figures ------------------------------------------------------------------------


def plot_sweep(
    sweep_dir: str | Path, top_k: int = 5, trials: pd.DataFrame | None = None
) -> list[Path]:
    """Writes plot_curves.png, plot_params.png, plot_history.png and plot_importances.png into
    the sweep dir (sweep_figures draws them).

    `trials`: the sweep's `load_trials` table, if the caller has it. Trials whose files are
    damaged or missing are left out (`hpsweep plot` names them).
    """
    figures = sweep_figures(sweep_dir, top_k, trials)
    return [save_png(fig, Path(sweep_dir) / name) for name, fig in figures.items()]


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
    metrics = panel_metrics(objective, set(val["metric"]))
    labels, legend_title = curve_labels(top, params or [], objective)
    epochs = sorted(set(val["epoch"].astype(int)))

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    handles: list[Any] = []
    for ax, metric in zip(fig.subplots(1, 2), metrics, strict=True):
        draw_metric(ax, metric, objective, top, labels, others, lines, epochs)
        if not handles:
            handles = ax.get_legend_handles_labels()[0]
    handles += other_handles(others, lines, metrics)
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


def panel_metrics(objective: str, logged: set[str]) -> tuple[str, str]:
    """The objective's metric first, then the loss; for regression, R2 (its MSE loss would
    repeat an MSE objective). The loss being the objective: the task's main score second."""
    wanted = objective.partition("_")[2] or "acc"
    if "r2" in logged and wanted != "r2":
        return wanted, "r2"
    if wanted != "loss":
        return wanted, "loss"
    return "loss", "acc" if "acc" in logged else "r2"


def draw_metric(
    ax: Axes,
    metric: str,
    objective: str,
    top: pd.DataFrame,
    labels: list[str],
    others: dict[str, pd.DataFrame],
    lines: Lines,
    epochs: list[int],
) -> None:
    """One panel of plot_top_curves: the other trials' curves under the top trials' ones, and
    a note on those leaving the frame."""
    name = METRIC_NAMES.get(metric, metric)
    bad = "low" if METRIC_DIRECTIONS.get(metric) == "maximize" else "high"
    ylim = curves_range(top, others, lines, metric, bad)
    left = draw_other_curves(ax, others, lines, metric, ylim)
    top_left = draw_top_curves(ax, top, labels, lines, metric, ylim)
    if ylim is not None:
        ax.set_ylim(ylim)
    if left or top_left:
        note = top_left + [f"{n} {STATES[s][2]}" for s, n in left.items()]
        edge_note(ax, f"leaving the frame: {', '.join(note)}", bad)
    if not lines:
        edge_note(ax, "no trial has finished an epoch yet", "high")
    epoch_axis(ax, epochs)
    ax.set_ylabel(f"validation {name}")
    objective_mark = " (the objective)" if objective == f"val_{metric}" else ""
    ax.set_title(f"validation {name}{objective_mark}", fontsize="medium")
    ax.grid(alpha=0.3)


def curves_range(
    top: pd.DataFrame, others: dict[str, pd.DataFrame], lines: Lines, metric: str, bad: str
) -> tuple[float, float] | None:
    top_values = [v for n in top["number"] for v in lines.get((n, metric), {"value": []})["value"]]
    other_values = [
        v
        for rows in others.values()
        for n in rows["number"]
        for v in lines.get((n, metric), {"value": []})["value"]
    ]
    # the top trials decide the range (but for a wild first epoch): other curves may leave it
    return robust_range(top_values, bad, k=3.0) if top_values else robust_range(other_values, bad)


def draw_other_curves(
    ax: Axes,
    others: dict[str, pd.DataFrame],
    lines: Lines,
    metric: str,
    ylim: tuple[float, float] | None,
) -> dict[str, int]:
    """Pruned and failed trials' curves, each ending with x; how many of each leave `ylim`."""
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
    return left


def draw_top_curves(
    ax: Axes,
    top: pd.DataFrame,
    labels: list[str],
    lines: Lines,
    metric: str,
    ylim: tuple[float, float] | None,
) -> list[str]:
    """The top trials' curves, labelled; `#n` of each that leaves `ylim`."""
    top_left = []
    for i, (number, label) in enumerate(zip(top["number"], labels, strict=True)):
        line = lines.get((number, metric))
        if line is not None:
            y = line["value"].map(finite_or_nan)
            ax.plot(line["epoch"], y, marker=".", color=f"C{i % 10}", linewidth=1.8, label=label)
            top_left += [f"#{number}"] if leaves(y, ylim) else []
    return top_left


def other_handles(
    others: dict[str, pd.DataFrame], lines: Lines, metrics: tuple[str, str]
) -> list[Line2D]:
    """A legend entry per state of other trials with a curve drawn."""
    handles = []
    for state, rows in others.items():
        drawn = [n for n in rows["number"] if any((n, m) in lines for m in metrics)]
        if drawn:
            color, style = OTHER_LINES[state]
            word = STATES[state][2]
            label = f"{word} ({len(drawn)}), x where stopped"
            handles.append(Line2D([], [], color=color, linestyle=style, marker="x", label=label))
    return handles


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


# -- helpers ---------------------------------------------------------------------------------


def leaves(y: pd.Series, ylim: tuple[float, float] | None) -> bool:
    return ylim is not None and bool(((y < ylim[0]) | (y > ylim[1])).any())


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
