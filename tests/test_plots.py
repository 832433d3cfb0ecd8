"""The plots answer their question at a glance: titles, labelled axes, categorical axes for
choice() parameters, legends of what is drawn and what differs, y-ranges that one diverged
trial cannot flatten. Checked on the matplotlib Figures themselves, for a real sweep, a Hydra
grid multirun, made-up tables of the awkward cases, a trial's curves.png and the notebook."""

import json
import math
import shutil

import matplotlib
import numpy as np
import pandas as pd
import pytest

from hpsweep.cli import main as hpsweep
from hpsweep.plots import (
    SweptParam,
    plot_curves,
    plot_history,
    plot_importances,
    plot_params,
    plot_top_curves,
    short_names,
    sweep_figures,
)
from hpsweep.results import load_trials
from tests.conftest import FAST, REPO, run_cli

LR = SweptParam("optimizer.lr", "log")
BS = SweptParam("batch_size", "choice", (32, 64, 128, 256))
OPT = SweptParam("optimizer", "choice", ("adam", "sgd"))
SPACE = [LR, BS, OPT]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 6-trial sweep over 4 parameters (3 of them choices), 2 epochs, pruning on."""
    root = tmp_path_factory.mktemp("plots")
    args = ["-m", "sweep=mlp", "hydra.sweeper.n_trials=6", "epochs=2", "optimizer=adam,sgd"]
    proc = run_cli(*args, *FAST, cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root / "multirun" / "mlp"


def trial(number, state="COMPLETE", value=None, lr=0.01, bs=64, opt="adam", **extra):
    return {"number": number, "state": state, "value": value, "params_optimizer.lr": lr,
            "params_batch_size": bs, "params_optimizer": opt, **extra}  # fmt: skip


def table(rows, objective="val_acc", direction="maximize"):
    """A load_trials-like table (the columns the plots read), best first."""
    frame = pd.DataFrame(rows).assign(objective=objective, direction=direction, problem=None)
    return frame.sort_values("value", ascending=direction == "minimize", na_position="last")


def curves_of(per_trial):
    """load_curves' long form from {trial: [val_acc per epoch]}; val_loss is 1 - acc."""
    rows = [
        {"trial": n, "epoch": e, "metric": m, "split": "val", "value": a if m == "acc" else 1 - a}
        for n, accs in per_trial.items()
        for e, a in enumerate(accs, start=1)
        for m in ("acc", "loss")
    ]
    return pd.DataFrame(rows, columns=["trial", "epoch", "metric", "split", "value"])


def legend_texts(fig):
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + fig.legends
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def ticks(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def all_texts(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts)


# -- a real sweep ------------------------------------------------------------------------------


def test_sweep_figures_answer_their_questions(sweep):
    trials = load_trials(sweep)
    figures = sweep_figures(sweep)
    complete = trials[trials["state"] == "COMPLETE"]
    top = complete.head(5)

    curves = figures["plot_curves.png"]
    assert (
        f"top {len(top)} of {len(complete)} complete trials, by val_acc"
        in curves._suptitle.get_text()
    )
    acc, loss = curves.axes
    assert acc.get_title() == "validation accuracy (the objective)" and acc.get_xlabel() == "epoch"
    assert loss.get_ylabel() == "validation loss"
    assert [float(t) for t in acc.get_xticks() if 0.5 <= t <= 2.5] == [1.0, 2.0]  # whole epochs
    labels = legend_texts(curves)
    shown = top[["number", "value", "params_optimizer.lr"]].itertuples(index=False)
    for (number, value, lr), label in zip(shown, labels[: len(top)], strict=True):
        assert label.startswith(f"#{number} {value:.4f}  ") and f"lr={lr:.3g}" in label
    pruned = (trials["state"] == "PRUNED").sum()
    assert any(t.startswith(f"pruned ({pruned})") for t in labels) == bool(pruned)

    params = figures["plot_params.png"]
    assert "val_acc against each swept parameter" in params._suptitle.get_text()
    axes = {ax.get_xlabel(): ax for ax in params.axes if ax.get_visible() and ax.axison}
    assert set(axes) == {
        "model.hidden_sizes (choice)", "optimizer.lr (log scale)",
        "batch_size (choice)", "optimizer (choice)",
    }  # fmt: skip
    assert ticks(axes["model.hidden_sizes (choice)"]) == ["16", "32", "64", "128", "256"]
    assert ticks(axes["batch_size (choice)"]) == ["32", "64", "128", "256"]
    assert ticks(axes["optimizer (choice)"]) == ["adam", "sgd"]
    assert axes["optimizer.lr (log scale)"].get_xscale() == "log"
    assert all(ax.get_ylabel() == "val_acc" for ax in axes.values())
    drawn = {s.lower() for s in trials["state"]} & {"complete", "pruned"}
    words = {t.split(" (")[0] for t in legend_texts(params)} & {"complete", "pruned", "failed"}
    assert words == drawn  # a legend of what is drawn only

    history = figures["plot_history.png"]
    assert history._suptitle.get_text().startswith("Search history: val_acc")
    assert history.axes[0].get_ylabel() == "val_acc (higher is better)"
    assert "best so far" in legend_texts(history)

    importances = figures["plot_importances.png"]
    bars = [t.get_text() for t in importances.axes[0].get_yticklabels()]
    if bars:  # or, with too few trials for Optuna, a figure saying so
        assert set(bars) == {"model.hidden_sizes", "optimizer.lr", "batch_size", "optimizer"}
        assert importances.axes[0].get_xlabel().startswith("importance")
    else:
        assert "complete trials" in all_texts(importances)


def test_hpsweep_plot_writes_the_four_pngs(sweep, tmp_path, capsys):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    assert hpsweep(["plot", str(copy)]) == 0
    assert capsys.readouterr().err == ""  # no Optuna log lines or warnings on the way
    names = {"plot_curves.png", "plot_params.png", "plot_history.png", "plot_importances.png"}
    assert {p.name for p in copy.glob("plot_*.png")} == names


@pytest.mark.slow
def test_a_hydra_grid_multirun_gets_categorical_axes_in_the_order_given(tmp_path):
    args = ["-m", "optimizer=sgd,adam", "model.hidden_sizes=64,16", "epochs=1"]
    proc = run_cli(*args, *FAST, "hydra.sweep.dir=grid", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    figures = sweep_figures(tmp_path / "grid")
    axes = {ax.get_xlabel(): ax for ax in figures["plot_params.png"].axes if ax.axison}
    assert ticks(axes["optimizer (choice)"]) == ["sgd", "adam"]
    assert ticks(axes["model.hidden_sizes (choice)"]) == ["64", "16"]
    assert "4 trials: 4 complete" in figures["plot_history.png"]._suptitle.get_text()
    assert (
        figures["plot_importances.png"]
        ._suptitle.get_text()
        .startswith("Parameter importances for val_acc")
    )


# -- made-up tables: the awkward cases ---------------------------------------------------------


def test_one_diverged_trial_does_not_flatten_history_or_params():
    rows = [trial(n, value=0.90 + 0.005 * n, lr=0.001 * (n + 1)) for n in range(12)]
    rows.append(trial(12, value=0.10, lr=5.0))  # diverged
    trials = table(rows)
    for fig in (plot_history(trials), plot_params(trials, SPACE)):
        low, high = fig.axes[0].get_ylim()
        assert 0.5 < low < 0.90 and high >= 0.955  # the best (0.955) stays in the frame
        assert "1 trial(s) below the frame (to 0.1), marked at its edge" in legend_texts(fig)
        assert "best: #11 (0.955)" in legend_texts(fig)


def test_a_minimized_objective_clips_high_outliers_and_keeps_the_lowest():
    rows = [trial(n, value=0.20 + 0.01 * n) for n in range(10)] + [trial(10, value=40.0)]
    trials = table(rows, objective="val_loss", direction="minimize")
    fig = plot_history(trials)
    low, high = fig.axes[0].get_ylim()
    assert low <= 0.20 and high < 1.0
    assert fig.axes[0].get_ylabel() == "val_loss (lower is better)"
    assert "1 trial(s) above the frame (to 40), marked at its edge" in legend_texts(fig)


def test_curves_focus_on_the_top_trials_and_label_what_differs():
    rows = [
        trial(0, value=0.95, lr=0.0226, bs=64),
        trial(1, value=0.94, lr=0.0031, bs=64),
        trial(2, value=0.93, lr=0.0010, bs=64),
        trial(3, state="PRUNED", value=0.30, lr=0.5, bs=256, opt="sgd"),
    ]
    curves = curves_of({0: [0.90, 0.95], 1: [0.91, 0.94], 2: [0.88, 0.93], 3: [0.30]})
    fig = plot_top_curves(table(rows), curves, top_k=5, params=SPACE)
    low, _ = fig.axes[0].get_ylim()
    assert 0.30 < low <= 0.88  # the pruned curve leaves the frame, the top curves are whole
    assert "leaving the frame: 1 pruned" in all_texts(fig)
    assert legend_texts(fig) == [
        "#0 0.9500  lr=0.0226",
        "#1 0.9400  lr=0.0031",
        "#2 0.9300  lr=0.001",
        "pruned (1), x where stopped",
    ]
    title = fig.axes[-1].get_legend().get_title().get_text()
    assert "lr = optimizer.lr" in title and "all 3: batch_size=64, optimizer=adam" in title


def test_fifty_trials_show_the_top_five_of_all():
    rows = [trial(n, value=0.5 + n / 100, lr=0.001 * (n + 1)) for n in range(40)]
    rows += [trial(n, state="PRUNED", value=0.3, lr=0.02) for n in range(40, 50)]
    curves = curves_of({n: [0.4, 0.5 + n / 100] for n in range(50)})
    fig = plot_top_curves(table(rows), curves, top_k=5, params=SPACE)
    assert "the top 5 of 40 complete trials" in fig._suptitle.get_text()
    assert "50 trials: 40 complete, 10 pruned" in fig._suptitle.get_text()
    labels = legend_texts(fig)
    assert [t.split()[0] for t in labels[:5]] == ["#39", "#38", "#37", "#36", "#35"]
    assert labels[5:] == ["pruned (10), x where stopped"]


def test_one_trial_and_all_pruned_but_one_stay_readable():
    one = table([trial(0, value=0.91)])
    curves = plot_top_curves(one, curves_of({0: [0.85, 0.91]}), top_k=5, params=SPACE)
    assert "the top 1 of 1 complete trials" in curves._suptitle.get_text()
    assert legend_texts(curves) == ["#0 0.9100  lr=0.01 bs=64 optimizer=adam"]
    assert "only 1 complete trial yet" in all_texts(plot_importances(one, SPACE))
    assert "1 trial: 1 complete" in plot_history(one)._suptitle.get_text()

    rows = [trial(0, value=0.91)] + [trial(n, state="PRUNED", value=0.5) for n in range(1, 6)]
    history = plot_history(table(rows))
    assert legend_texts(history) == [
        "complete (1)",
        "pruned (5): best value before it stopped",
        "best so far",
        "best: #0 (0.91)",
    ]


def test_failed_trials_are_shown_distinctly_at_the_edge():
    rows = [trial(n, value=0.9 + n / 100) for n in range(4)]
    rows.append(trial(4, state="FAIL", value=None, lr=9.0))
    trials = table(rows)
    for fig in (plot_history(trials), plot_params(trials, SPACE)):
        assert "failed (1), no value: on the bottom edge" in legend_texts(fig)
        assert "pruned" not in " ".join(legend_texts(fig))  # nothing was pruned
    curves = curves_of({n: [0.85, 0.9 + n / 100] for n in range(4)} | {4: [0.1, math.nan]})
    fig = plot_top_curves(trials, curves, top_k=5, params=SPACE)
    assert "failed (1), x where stopped" in legend_texts(fig)


def test_importances_rank_the_parameters_or_say_why_not():
    rng = np.random.default_rng(0)
    lrs, sizes = 10 ** rng.uniform(-4, -1, 30), rng.choice([32, 256], 30)
    rows = [  # the objective follows the learning rate alone
        trial(n, value=float(0.9 - abs(np.log10(lr) + 2.5) / 10), lr=float(lr), bs=int(bs))
        for n, (lr, bs) in enumerate(zip(lrs, sizes, strict=True))
    ]
    fig = plot_importances(table(rows), [LR, BS])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["batch_size", "optimizer.lr"]
    assert ax.get_ylabel() == "parameter" and ax.get_xlabel().startswith("importance")
    assert "from 30 complete trials" in fig._suptitle.get_text()
    only_lr = plot_importances(table(rows), [LR])
    assert "only one parameter was swept (optimizer.lr)" in all_texts(only_lr)


# -- a trial's curves.png, and the notebook ------------------------------------------------------


def test_a_trials_curves_name_it_and_mark_the_best_epoch():
    history = [
        {"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e + (e == 3), "train_acc": 0.8 + e / 50,
         "val_acc": [0.8, 0.9, 0.85][e - 1]}
        for e in (1, 2, 3)
    ]  # fmt: skip
    fig = plot_curves(history, best_epoch=2, title="trial_0007")
    assert fig._suptitle.get_text() == "trial_0007: training curves, best epoch 2 of 3"
    for ax, name, best in zip(fig.axes, ("loss", "accuracy"), ("0.6000", "0.9000"), strict=True):
        assert ax.get_ylabel() == name and ax.get_xlabel() == "epoch"
        shown = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert shown == [1, 2, 3]  # whole epochs only
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["train", "validation", f"best epoch 2: validation {best}"]


def test_notebook_figures_have_titles_integer_epochs_and_a_full_legend(sweep, tmp_path):
    """The notebook's plotting cells, run here on the module's sweep (the slow test in
    test_results runs the whole notebook)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    notebook = json.loads((REPO / "notebooks" / "compare_trials.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    cells = [c.replace("SWEEP_DIR = None", f"SWEEP_DIR = {str(sweep)!r}") for c in cells]
    namespace: dict = {}
    for source in cells:
        if "reproduce(" in source:
            break  # the re-run is the slow test's
        exec(compile(source, "notebook", "exec"), namespace)
    trials = namespace["trials"]
    try:
        curves = namespace["fig_curves"]
        assert curves._suptitle.get_text().startswith("Validation accuracy per epoch")
        ax = curves.axes[0]
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation accuracy"
        assert all(float(t).is_integer() for t in ax.get_xticks())
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        pruned = int((trials["state"] == "PRUNED").sum())
        assert (f"pruned ({pruned})" in labels) == bool(pruned)
        assert all(t.startswith("#") for t in labels if not t.startswith("pruned"))

        params = namespace["fig_params"]
        assert params._suptitle.get_text().startswith("val_acc against")
        lr, hidden = params.axes[:2]
        assert lr.get_xscale() == "log" and lr.get_ylabel() == "val_acc"
        assert ticks(hidden) == ["16", "32", "64", "128", "256"]
        legend = [t.get_text() for t in params.legends[0].get_texts()]
        used = sorted(set(trials["params_optimizer"]))
        assert [t for t in legend if t in ("adam", "sgd")] == used  # colour: optimizer
        assert "complete" in legend  # marker: state
    finally:
        plt.close("all")


def test_a_smoothed_training_loss_says_so_in_the_loss_legend_only():
    history = [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.4, "train_acc": 0.8, "val_acc": 0.9}]
    fig = plot_curves(history, best_epoch=1, label_smoothing=0.0369)
    loss, acc = ([t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes)
    assert loss[0] == "train (label smoothing 0.0369)" and acc[0] == "train"


def test_one_epoch_gets_one_whole_epoch_tick():
    history = [{"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "train_acc": 0.8, "val_acc": 0.9}]
    fig = plot_curves(history, best_epoch=1, title="run")
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1.0]


def test_short_names_keep_a_list_elements_index():
    keys = ["model.hidden_sizes.0", "model.hidden_sizes.1", "optimizer.lr", "batch_size"]
    assert short_names(keys) == dict(zip(keys, ["hs.0", "hs.1", "lr", "bs"], strict=True))
