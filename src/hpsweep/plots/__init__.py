"""Figures: a trial's curves.png, and a sweep's four figures (`hpsweep plot`).

    from hpsweep.plots import plot_sweep
    plot_sweep("multirun/mlp")   # plot_curves.png, plot_params.png, plot_history.png, ...

A trial job draws only its own curves: the sweep's figures (pandas, Optuna) load on first use.
"""

from typing import Any

from hpsweep.plots._common import plot_curves, save_png, short_names
from hpsweep.plots._drawer import draw_stale_curves, draw_trial_curves

__all__ = [
    "SweptParam",
    "draw_stale_curves",
    "draw_trial_curves",
    "plot_curves",
    "plot_history",
    "plot_importances",
    "plot_params",
    "plot_sweep",
    "plot_top_curves",
    "save_png",
    "short_names",
    "sweep_figures",
    "swept_params",
]

_SWEEP_FIGURES = {
    "SweptParam": "hpsweep.plots._params",
    "plot_importances": "hpsweep.plots._params",
    "plot_params": "hpsweep.plots._params",
    "swept_params": "hpsweep.plots._params",
    "plot_history": "hpsweep.plots._sweep",
    "plot_sweep": "hpsweep.plots._sweep",
    "plot_top_curves": "hpsweep.plots._sweep",
    "sweep_figures": "hpsweep.plots._sweep",
}


def __getattr__(name: str) -> Any:
    # pandas and Optuna cost a trial job about a second at start-up: imported on first use
    if name in _SWEEP_FIGURES:
        import importlib

        return getattr(importlib.import_module(_SWEEP_FIGURES[name]), name)
    raise AttributeError(f"module 'hpsweep.plots' has no attribute {name!r}")
