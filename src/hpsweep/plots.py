"""Pictures of a whole sweep, written as PNGs into the sweep dir (`hpsweep plot`)."""

import io
import logging
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from hpsweep.checkpoint import atomic_write_bytes
from hpsweep.results import is_number, load_curves, load_trials, open_studies, swept_keys

log = logging.getLogger(__name__)


def plot_sweep(sweep_dir: str | Path, top_k: int = 5) -> list[Path]:
    """Training curves of the top trials, the objective against each parameter, the history of
    the search and, with the study at hand, Optuna's parameter importances."""
    sweep = Path(sweep_dir)
    trials = load_trials(sweep)
    written = [
        _save(plot_top_curves(trials, load_curves(sweep), top_k), sweep / "plot_curves.png"),
        _save(plot_params(trials, swept_keys(sweep)), sweep / "plot_params.png"),
        _save(plot_history(trials), sweep / "plot_history.png"),
    ]
    importances = plot_importances(sweep)
    if importances is not None:
        written.append(_save(importances, sweep / "plot_importances.png"))
    return written


def _save(fig: Figure, path: Path) -> Path:
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


def plot_importances(sweep: Path) -> Figure | None:
    """Optuna's fANOVA parameter importances; None without a study or with too few trials."""
    studies = open_studies(sweep)
    if len(studies) != 1:
        return None
    import optuna

    study = studies[0]
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


def _objective(trials: pd.DataFrame) -> str:
    names = trials["objective"].dropna().unique()
    return str(names[0]) if len(names) else "value"


def _maximize(trials: pd.DataFrame) -> bool:
    return "minimize" not in set(trials["direction"].dropna())
