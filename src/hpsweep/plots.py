"""Pictures: a trial's curves.png, and a whole sweep's PNGs in its sweep dir (`hpsweep plot`).

Figures without pyplot: no global state, no GUI backend, safe in worker processes.
"""

from __future__ import annotations  # pandas types in signatures, pandas not imported

import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure  # at import, not per plot: sweep workers inherit it
from matplotlib.ticker import MaxNLocator

from hpsweep.record import atomic_write_bytes

if TYPE_CHECKING:  # a trial job imports this module for curves.png and needs no pandas
    import pandas as pd


def plot_curves(history: list[dict[str, Any]], best_epoch: int | None, title: str = "") -> Figure:
    """A trial's loss and accuracy per epoch, train vs validation, side by side."""
    epochs = [row["epoch"] for row in history]
    # Fixed margins: a constrained layout would cost 0.1 s, a third of a small trial's overhead.
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88, wspace=0.22)
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "acc"), strict=True):
        for split, style in (("train", "--"), ("val", "-")):
            values = [row[f"{split}_{metric}"] for row in history]
            ax.plot(epochs, values, style, marker=".", label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if metric == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_sweep(
    sweep_dir: str | Path, top_k: int = 5, trials: pd.DataFrame | None = None
) -> list[Path]:
    """Training curves of the top trials, the objective against each parameter, the history of
    the search and, with the study at hand, Optuna's parameter importances.

    `trials`: the sweep's `load_trials` table, if the caller has it. Trials whose files are
    damaged or missing are left out (`hpsweep plot` names them).
    """
    from hpsweep.results import load_curves, load_trials, open_studies, swept_keys  # pandas

    sweep = Path(sweep_dir)
    if trials is None:
        trials = load_trials(sweep)
    trials = trials[trials["problem"].isna()]
    written = [
        save_png(plot_top_curves(trials, load_curves(sweep), top_k), sweep / "plot_curves.png"),
        save_png(plot_params(trials, swept_keys(sweep)), sweep / "plot_params.png"),
        save_png(plot_history(trials), sweep / "plot_history.png"),
    ]
    studies = open_studies(sweep)
    importances = plot_importances(studies[0]) if len(studies) == 1 else None
    if importances is not None:
        written.append(save_png(importances, sweep / "plot_importances.png"))
    return written


def save_png(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_top_curves(trials: pd.DataFrame, curves: pd.DataFrame, top_k: int) -> Figure:
    """Validation accuracy and loss per epoch of the top-k complete trials, with every pruned
    trial as a thin grey line: they end where the pruner stopped them."""
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    top = trials[trials["state"] == "COMPLETE"].head(top_k)
    pruned = trials[trials["state"] == "PRUNED"]
    val = curves[curves["split"] == "val"]
    for ax, metric in zip(fig.subplots(1, 2), ("acc", "loss"), strict=True):
        for i, number in enumerate(pruned["number"]):
            line = val[(val["trial"] == number) & (val["metric"] == metric)]
            ax.plot(
                line["epoch"],
                line["value"],
                color="0.6",
                lw=0.8,
                marker="x",
                label="pruned" if i == 0 else None,
            )
        for _, row in top.iterrows():
            line = val[(val["trial"] == row["number"]) & (val["metric"] == metric)]
            ax.plot(
                line["epoch"],
                line["value"],
                marker=".",
                label=f"trial {row['number']} ({row['value']:.4f})",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {'accuracy' if metric == 'acc' else 'loss'}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize="small")
    fig.suptitle(f"top {len(top)} trials by {_objective(trials)}")
    return fig


def plot_params(trials: pd.DataFrame, keys: dict[str, bool]) -> Figure:
    """The objective against each swept parameter; log axes for log-scaled parameters."""
    done = trials[trials["value"].notna()]
    names = list(keys) or ["number"]
    fig = Figure(figsize=(4 * len(names), 3.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        column = "number" if name == "number" else f"params_{name}"
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            part = done[done["state"] == state]
            x = part[column] if all(map(is_number, done[column])) else part[column].astype(str)
            ax.scatter(x, part["value"], marker=marker, label=state.lower(), alpha=0.8)
        if keys.get(name):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(_objective(trials))
    axes[0].legend(fontsize="small")
    return fig


def plot_history(trials: pd.DataFrame) -> Figure:
    """Each trial's objective in the order trials started, and the best so far."""
    done = trials[trials["value"].notna() & (trials["state"] == "COMPLETE")]
    done = done.sort_values("number")
    maximize = _maximize(trials)
    best = done["value"].cummax() if maximize else done["value"].cummin()
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(done["number"], done["value"], label="trial", alpha=0.8)
    ax.step(done["number"], best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(_objective(trials))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_importances(study: Any) -> Figure | None:
    """Optuna's fANOVA parameter importances; None with too few trials."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not complete[0].params:
        return None
    importances = optuna.importance.get_param_importances(study)
    fig = Figure(figsize=(7, 0.6 * len(importances) + 1.5), layout="constrained")
    ax = fig.subplots()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA) for the objective")
    ax.set_title("parameter importances")
    return fig


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _objective(trials: pd.DataFrame) -> str:
    names = trials["objective"].dropna().unique()
    return str(names[0]) if len(names) else "value"


def _maximize(trials: pd.DataFrame) -> bool:
    return "minimize" not in set(trials["direction"].dropna())
