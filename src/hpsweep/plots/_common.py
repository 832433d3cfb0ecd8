"""Pictures: a trial's curves.png, and a whole sweep's PNGs in its sweep dir (`hpsweep plot`).

Figures without pyplot: no global state, no GUI backend, safe in worker processes. Every plot_*
function returns its Figure, so a test or a notebook can look inside it or show it.
"""

from __future__ import annotations  # pandas types in signatures, pandas not imported

import io
import math
import numbers
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hpsweep.record import atomic_write_bytes

if TYPE_CHECKING:  # a trial job imports this module for curves.png and needs no pandas
    import pandas as pd
    from matplotlib.axes import Axes


METRIC_NAMES = {
    "loss": "loss",
    "acc": "accuracy",
    "f1": "macro-F1",
    "mse": "MSE",
    "mae": "MAE",
    "r2": "R\u00b2",
}


R2_FLOOR = -0.1


def plot_curves(
    history: list[dict[str, Any]],
    best_epoch: int | None,
    title: str = "",
    label_smoothing: float = 0.0,
    objective: str | None = None,
) -> Figure:
    """A trial's loss and one score per epoch, train vs validation, the best epoch starred.

    The score is the objective's (val_f1: macro-F1), else accuracy for classes and R2 for
    regression. `label_smoothing`: the training loss's, named in its legend. Smoothed targets
    keep the train loss above the (plain) validation loss, which would otherwise read as a bug.
    """
    epochs = [row["epoch"] for row in history]
    best = next((row for row in history if row["epoch"] == best_epoch), None)
    # Fixed margins: a constrained layout would cost 0.1 s, a third of a small trial's overhead.
    fig = Figure(figsize=(10, 4.2))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.82, wspace=0.22)
    for ax, metric in zip(
        fig.subplots(1, 2), ("loss", curve_score(history, objective)), strict=True
    ):
        name = METRIC_NAMES.get(metric, metric)
        train = "train"
        if metric == "loss" and label_smoothing:
            train = f"train (label smoothing {label_smoothing:.3g})"
        shown = []
        for split, style, label in (("train", "--", train), ("val", "-", "validation")):
            values = [finite_or_nan(row.get(f"{split}_{metric}")) for row in history]
            ax.plot(epochs, values, style, marker=".", label=label)
            shown += values
        log_scale_if_wide(ax, shown)
        if metric == "r2" and min(shown, default=0.0) < R2_FLOOR:
            # below 0 a model is worse than predicting the mean: how far below says little,
            # and a first epoch at -3 would flatten every later one
            ax.set_ylim(R2_FLOOR, 1.02)
            ax.text(0.98, 0.02, f"values below {R2_FLOOR} off the frame", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize="small", color="0.4")  # fmt: skip
        if best is not None and f"val_{metric}" in best:
            value = best[f"val_{metric}"]
            ax.axvline(best_epoch, color="0.5", linestyle=":", linewidth=1)
            ax.plot(best_epoch, value, "*", color="C3", markersize=13, linestyle="",
                    label=f"best epoch {best_epoch}: validation {value:.4f}")  # fmt: skip
        epoch_axis(ax, epochs)
        ax.set_ylabel(name)
        ax.set_title(f"{name} per epoch", fontsize="medium")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if best is not None:
        what = f"training curves, best epoch {best_epoch} of {len(history)}"
    else:
        what = f"training curves, {len(history)} epochs, no best epoch"
    fig.suptitle(f"{title}: {what}" if title else what)
    return fig


def curve_score(history: list[dict[str, Any]], objective: str | None = None) -> str:
    """The score a trial's curves show beside the loss: the objective's, unless the loss
    panel shows it already (val_loss, or val_mse with regression's MSE loss); then accuracy
    for classes, R2 for regression."""
    first = history[0] if history else {}
    logged = [k.removeprefix("val_") for k in first if k.startswith("val_")]
    wanted = (objective or "").partition("_")[2]
    if wanted in logged and wanted not in ("loss", "mse"):
        return wanted
    return "acc" if "acc" in logged or "r2" not in logged else "r2"


def log_scale_if_wide(ax: Axes, values: list[float]) -> None:
    """A log axis for positive values spanning more than 50x (a regression's first epoch, an
    MSE in the thousands): on a linear one every later epoch would sit flat on the floor."""
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and max(finite) > 50 * min(finite):
        ax.set_yscale("log")


def epoch_axis(ax: Axes, epochs: list[int]) -> None:
    """Whole epochs only, and room beside the first and last (a best epoch at the end would
    otherwise sit on the frame)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # 1 epoch: one tick
    if epochs:
        pad = max(0.3, 0.03 * (max(epochs) - min(epochs)))
        ax.set_xlim(min(epochs) - pad, max(epochs) + pad)
    ax.set_xlabel("epoch")


def save_png(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def is_number(value: Any) -> bool:
    # numbers.Real: numpy's ints and floats from pandas tables count too
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def finite_or_nan(value: Any) -> float:
    # an inf loss would stretch the axis to nothing; NaN leaves a gap where it diverged
    return float(value) if is_number(value) else math.nan


# -- shared by the sweep's figures (plots._sweep) ----------------------------------------


def robust_range(values: Any, bad_side: str, k: float = 1.5) -> tuple[float, float] | None:
    """y-limits around the bulk of `values`: on the bad side (low for accuracy, high for a
    loss) beyond k interquartile ranges is left out, but only when that at least doubles the
    resolution; the good side, where the best trials are, is never cut."""
    v = np.array([float(x) for x in values if is_number(x)])
    if v.size == 0:
        return None
    low, high = float(v.min()), float(v.max())
    q1, q3 = np.percentile(v, [25, 75])
    if bad_side == "low":
        kept = v[v >= q1 - k * (q3 - q1)]
        if 0 < kept.max() - kept.min() < 0.5 * (high - low):
            low = float(kept.min())
    else:
        kept = v[v <= q3 + k * (q3 - q1)]
        if 0 < kept.max() - kept.min() < 0.5 * (high - low):
            high = float(kept.max())
    pad = 0.08 * (high - low) if high > low else max(0.05 * abs(high), 0.01)
    return low - pad, high + pad


def draw_points(
    ax: Axes, x: Any, y: Any, ylim: tuple[float, float] | None, marker: str, color: str
) -> Any:
    """Scatter the points; those beyond ylim as triangles on the frame's edge, pointing the way
    they went. Returns which points were outside."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    low, high = ylim if ylim is not None else (-np.inf, np.inf)
    below, above = y < low, y > high
    inside = ~(below | above)
    ax.scatter(x[inside], y[inside], marker=marker, color=color, alpha=0.85, zorder=2)
    for mask, at, triangle in ((below, 0.015, "v"), (above, 0.985, "^")):
        if mask.any():
            at_edge(ax, x[mask], at, triangle, color)
    return below | above


def at_edge(ax: Axes, x: Any, at: float, marker: str, color: str, **style: Any) -> None:
    """Points on the frame's edge: x in data, y a fraction of the axes' height. (Autoscaling
    ignores such points, so their x is added to the data limits by hand.)"""
    x = np.asarray(x, dtype=float)
    edge = ax.get_xaxis_transform()
    ax.scatter(x, np.full(len(x), at), marker=marker, color=color, transform=edge,
               clip_on=False, zorder=3, **style)  # fmt: skip
    finite = x[np.isfinite(x)]
    if finite.size:
        ax.update_datalim(np.column_stack([finite, np.zeros(finite.size)]), updatey=False)
        ax.autoscale_view(scaley=False)


def side_legend(ax: Axes, handles: list[Any], **style: Any) -> None:
    """A legend right of the axes, top-aligned with them: clear of the points and of the
    figure's title (a figure legend in the right margin would reach up into the title)."""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              fontsize="small", **style)  # fmt: skip


def outside_handle(values: list[float], bad_side: str) -> Line2D:
    where, triangle = ("below", "v") if bad_side == "low" else ("above", "^")
    extreme = min(values) if bad_side == "low" else max(values)
    label = f"{len(values)} trial(s) {where} the frame (to {extreme:.3g}), marked at its edge"
    return mark(triangle, "0.3", label)


def mark(marker: str, color: str, label: str, **style: Any) -> Line2D:
    """A legend entry for points drawn with this marker."""
    return Line2D([], [], marker=marker, color=color, linestyle="", label=label, **style)


def edge_note(ax: Axes, text: str, side: str) -> None:
    y, va = (0.03, "bottom") if side == "low" else (0.97, "top")
    box = {"facecolor": "white", "edgecolor": "0.8", "alpha": 0.9}
    ax.text(0.98, y, text, transform=ax.transAxes, ha="right", va=va, fontsize="small", bbox=box)


def short_names(keys: list[str]) -> dict[str, str]:
    """optimizer.lr -> lr, batch_size -> bs, model.hidden_sizes -> hs; the full keys when two
    would read the same."""

    def short(key: str) -> str:
        parent, _, last = key.rpartition(".")
        if last.isdigit() and parent:  # a list's element: model.hidden_sizes.0 -> hs.0
            return f"{short(parent)}.{last}"
        words = [w for w in last.split("_") if w]
        return "".join(w[0] for w in words) if len(words) > 1 else last

    names = {k: short(k) for k in keys}
    return names if len(set(names.values())) == len(names) else {k: k for k in keys}


def message_figure(title: str, text: str) -> Figure:
    """A figure that says why there is no plot, instead of a blank or missing image."""
    fig = Figure(figsize=(8, 2.6), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    ax.text(0.5, 0.5, textwrap.fill(text, 80), ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    return fig


def key_of(value: Any) -> str:
    """A value as a category: 64 and 64.0 (an int column holding a None) are one."""
    if is_number(value) and float(value).is_integer():
        return str(int(value))
    return str(plain(value))


def value_text(value: Any) -> str:
    """A value as a label: 3 significant digits (lr=0.0226), whole numbers in full up to 1e6."""
    if not is_number(value):
        return str(plain(value))
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{float(value):.3g}"


def plain(value: Any) -> Any:
    """numpy scalars as Python's (Optuna compares choices by type)."""
    return value.item() if isinstance(value, np.generic) else value


# -- trials as points, in every sweep figure: their states, the best, the table's objective --

STATES = {  # how each state looks wherever trials are points: marker, color, word
    "COMPLETE": ("o", "C0", "complete"),
    "PRUNED": ("x", "0.45", "pruned"),
    "FAIL": ("X", "C3", "failed"),
}
BEST_RING: dict[str, Any] = {"facecolors": "none", "edgecolors": "C3", "zorder": 3}


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
